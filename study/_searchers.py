"""Ray Tune searchers of the study layer.

Module-level classes on purpose: Ray pickles the searcher into ``tuner.pkl``
and unpickles it on resume, so it must be importable by name. Their own state
(Ray's ``searcher-state-*.pkl``, whatever the name says) is JSON: a resume
reads nothing executable from it (README "Trust").
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

from ray.tune.search import BasicVariantGenerator, Searcher, SearchGenerator
from ray.tune.search.optuna import OptunaSearch

from study._errors import StudyLaunchError
from study._storage import upload_file
from xsam_contract import atomic_write

__all__ = [
    "JournaledOptunaSearch",
    "ListSearcher",
    "StudySearchGenerator",
    "StudyVariantGenerator",
    "TrialDirname",
    "journal_at",
    "known_formats",
    "optuna_state",
    "resumed_in",
]

logger = logging.getLogger(__name__)

# The journal file of the study being resumed (its directory may have moved
# since the searcher was pickled): Ray unpickles the searcher inside
# Tuner.fit, so the resume tells it through this context, see journal_at.
_JOURNAL_AT: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "xsam_tune_journal_at", default=None
)


@contextlib.contextmanager
def journal_at(path: str | None) -> Iterator[None]:
    """Within this block, a :class:`JournaledOptunaSearch` writes its journal to ``path``
    (and uploads nothing), whatever it was built with. None changes nothing.

    ``resume_study`` wraps ``Tuner.fit`` in it: a resumed study keeps its
    journal in its own, possibly moved, directory.
    """
    token = _JOURNAL_AT.set(path)
    try:
        yield
    finally:
        _JOURNAL_AT.reset(token)


# The study directory a resume runs in (it may have moved since Ray pickled
# the search algorithm with the old one), see resumed_in.
_RESUMED_IN: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "xsam_tune_resumed_in", default=None
)


@contextlib.contextmanager
def resumed_in(study_dir: str | None) -> Iterator[None]:
    """Within this block, a restored :class:`StudySearchGenerator` or
    :class:`StudyVariantGenerator` creates its new trials in ``study_dir``.

    Ray re-points the trials it restores to where the study directory now is,
    but the search algorithm's pickled experiment keeps the old location, so
    trials created after a resume of a moved study would write there.
    ``resume_study`` wraps ``Tuner.fit`` in it. None (or a URI) changes nothing.
    """
    token = _RESUMED_IN.set(study_dir)
    try:
        yield
    finally:
        _RESUMED_IN.reset(token)


def _relocate(spec: dict[str, Any]) -> None:
    """Point the storage of a restored experiment spec at the resumed study directory.

    ``spec["storage"]`` is Ray's ``StorageContext`` (Ray 2.60); the two
    attributes set here are the ones Ray itself updates for restored trials
    (``TuneController._restore_trials``). tests/study/test_durability.py fails
    if a moved study's new trials write elsewhere.
    """
    target = _RESUMED_IN.get()
    storage = spec.get("storage")
    if not target or storage is None or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", target):
        return
    storage.storage_fs_path = os.path.dirname(target)
    storage.experiment_dir_name = os.path.basename(target)


class StudySearchGenerator(SearchGenerator):
    """Ray's ``SearchGenerator`` around a searcher, whose restored experiment creates
    its trials in the resumed study directory (see :func:`resumed_in`)."""

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore as Ray does, then re-point the experiment's storage."""
        super().set_state(state)
        if self._experiment is not None:
            _relocate(self._experiment.spec)


class StudyVariantGenerator(BasicVariantGenerator):
    """Ray's ``BasicVariantGenerator`` (native grids and random search), whose restored
    trial iterators create their trials in the resumed study directory."""

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore as Ray does, then re-point every iterator's storage."""
        super().set_state(state)
        for iterator in self._iterators:
            _relocate(iterator.unresolved_spec)
            # the grid's variants already generated (Ray 2.60 _VariantIterator: a list of
            # (resolved values, spec) pairs, each spec with its own copy of the storage)
            for _, spec in getattr(iterator.variants, "iterable", None) or []:
                _relocate(spec)


def optuna_state(searcher: OptunaSearch) -> tuple[Any, dict[str, Any]]:
    """The ``optuna.Study`` an ``OptunaSearch`` asks and tells (None before the Tuner
    set it up), and its Optuna trials by Ray trial id.

    Ray 2.60 has no public accessor for either: ``OptunaSearch`` keeps them in
    ``_ot_study`` and ``_ot_trials`` (and pickles them with the searcher,
    which is what resuming needs). Its ``storage=`` argument would write the
    journal itself, but the storage is pickled with its path, so a study
    directory that moved could not be resumed, and the journal would lose the
    Ray trial ids. This is the one place that reads the private state;
    ``tests/study/test_study_searchers.py`` fails if Ray renames it.
    """
    return searcher._ot_study, dict(searcher._ot_trials)


class ListSearcher(Searcher):
    """Hands out a fixed list of configurations in order, then finishes.

    Used for spaces Ray Tune cannot express (conditional grids, conditional
    random draws): the trials are listed beforehand, see :mod:`study.space`.

    Args:
        trials: The swept values of each trial.
        metric: Metric name (informational; a list searcher does not learn).
        mode: ``min``/``max``.
    """

    def __init__(
        self,
        trials: Sequence[dict[str, Any]],
        metric: str | None = None,
        mode: str | None = None,
    ) -> None:
        super().__init__(metric=metric, mode=mode)
        self._trials = [dict(t) for t in trials]
        self._next = 0
        self._given: dict[str, int] = {}

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict, **spec: Any
    ) -> bool:
        """Accept the Tuner's metric/mode; the fixed settings come from ``param_space``."""
        self._metric = self._metric or metric
        self._mode = self._mode or mode
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        """The next listed configuration, or ``FINISHED`` after the last one."""
        if trial_id in self._given:
            return dict(self._trials[self._given[trial_id]])
        if self._next >= len(self._trials):
            return Searcher.FINISHED
        self._given[trial_id] = self._next
        self._next += 1
        return dict(self._trials[self._given[trial_id]])

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        """Nothing to learn from a result."""

    def save(self, checkpoint_path: str) -> None:
        """Write the list and how far it was handed out, as JSON (nothing executable)."""
        state = {"format": _LIST_FORMAT, "trials": self._trials, "next": self._next}
        atomic_write(checkpoint_path, json.dumps({**state, "given": self._given}))

    def restore(self, checkpoint_path: str) -> None:
        """Read what :meth:`save` wrote.

        Raises:
            StudyLaunchError: The file is not such a state (damaged, or another
                format such as a pickle, which is never unpickled).
        """
        state = read_json_state(checkpoint_path, _LIST_FORMAT)
        trials, position, given = state.get("trials"), state.get("next"), state.get("given")
        valid = (
            isinstance(trials, list)
            and all(isinstance(t, dict) for t in trials)
            and isinstance(position, int)
            and 0 <= position <= len(trials)
            and isinstance(given, dict)
            and all(isinstance(i, int) and 0 <= i < position for i in given.values())
        )
        if not valid:
            raise StudyLaunchError(
                f"searcher state {checkpoint_path}: damaged (fields out of shape)"
            )
        self._trials, self._next, self._given = trials, position, given


#: The ``format`` field of a :class:`ListSearcher` state file.
_LIST_FORMAT = "xsam-tune list searcher 1"


def read_json_state(path: str, expected: str) -> dict[str, Any]:
    """A searcher state file written as JSON by this module, checked for its format.

    Raises:
        StudyLaunchError: The file cannot be read, is not JSON (a pickle is
            refused unread), or holds another format; the message names the
            file and how to recover.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
        state = json.loads(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = "not JSON (refused unread)" if not isinstance(exc, OSError) else exc.strerror
        raise StudyLaunchError(f"searcher state {path}: {reason}; {_RECOVER}") from None
    if not isinstance(state, dict) or state.get("format") != expected:
        raise StudyLaunchError(f"searcher state {path}: not a {expected} state; {_RECOVER}")
    return state


# How to get out of a damaged searcher state, in its error message.
_RECOVER = "start the study again (xsam-tune run) or restore the study directory from a copy"


class JournaledOptunaSearch(OptunaSearch):
    """``OptunaSearch`` that mirrors its Optuna study into a journal file.

    Ray keeps the Optuna study in memory; its state file is JSON (every
    trial, the Ray trial ids, the sampler's random state), rebuilt into an
    in-memory study on resume, wherever the study directory now is. For
    ``optuna-dashboard <study dir>/optuna.journal`` the finished trials are
    also appended to an Optuna ``JournalStorage`` file after each trial
    completes. A failure to write the mirror is logged, never fatal.

    Args:
        *args: Passed to ``OptunaSearch``.
        journal_path: Local journal file (None: no mirror).
        journal_study: Name of the study in the journal.
        journal_upload: URI of a copy of the journal, for remote storage.
        **kwargs: Passed to ``OptunaSearch``.
    """

    def __init__(
        self,
        *args: Any,
        journal_path: str | None = None,
        journal_study: str = "xsam-tune",
        journal_upload: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._journal_path = journal_path
        self._journal_study = journal_study
        self._journal_upload = journal_upload

    @property
    def journal_path(self) -> str | None:
        """Where the mirror is written (a :func:`journal_at` block wins)."""
        return _JOURNAL_AT.get() or self._journal_path

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        """Tell Optuna (as ``OptunaSearch`` does), then update the mirror."""
        super().on_trial_complete(trial_id, result=result, error=error)
        self.write_journal()

    def save(self, checkpoint_path: str) -> None:
        """Write the Optuna study as JSON (``OptunaSearch`` pickles it): every
        trial, which Ray trial is which, and the sampler's random state."""
        study, trials = optuna_state(self)
        state = {
            "format": _OPTUNA_FORMAT,
            "trials": [_trial_to_json(t) for t in study.get_trials(deepcopy=False)]
            if study is not None
            else [],
            "ray_trials": {ray_id: t.number for ray_id, t in trials.items()},
            "completed": sorted(self._completed_trials),
            "rng": sampler_rng_state(self._sampler),
        }
        atomic_write(checkpoint_path, json.dumps(state))

    def restore(self, checkpoint_path: str) -> None:
        """Rebuild the Optuna study from what :meth:`save` wrote, then write the
        mirror: a resumed study has its journal where it lives now, even if no
        trial completes again.

        Raises:
            StudyLaunchError: The file is not such a state (a pickle is refused unread).
        """
        state = read_json_state(checkpoint_path, _OPTUNA_FORMAT)
        try:
            self._restore_state(state)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StudyLaunchError(
                f"searcher state {checkpoint_path}: damaged ({type(exc).__name__}: "
                f"{' '.join(str(exc).split())[:120]}); {_RECOVER}"
            ) from None
        self.write_journal()

    def _restore_state(self, state: dict[str, Any]) -> None:
        import optuna
        from optuna.distributions import json_to_distribution
        from optuna.trial import TrialState

        modes = self._mode if isinstance(self._mode, list) else [self._mode]
        sampler = self._sampler or optuna.samplers.TPESampler(seed=self._seed)
        study = optuna.create_study(
            sampler=sampler,
            pruner=optuna.pruners.NopPruner(),
            study_name=self._study_name,
            directions=["minimize" if m == "min" else "maximize" for m in modes],
        )
        live: dict[int, Any] = {}
        for t in sorted(state["trials"], key=lambda t: t["number"]):
            kind = TrialState[t["state"]]
            dists = {k: json_to_distribution(v) for k, v in t["distributions"].items()}
            steps = {int(k): v for k, v in t["intermediate_values"].items()}
            if kind.is_finished():
                frozen = optuna.trial.create_trial(
                    state=kind,
                    values=t["values"] if kind == TrialState.COMPLETE else None,
                    params=t["params"],
                    distributions=dists,
                    user_attrs=t["user_attrs"],
                    system_attrs=t["system_attrs"],
                    intermediate_values=steps,
                )
                study.add_trial(frozen)
            elif kind == TrialState.WAITING:  # a point to evaluate, not asked for yet
                study.enqueue_trial(t["system_attrs"].get("fixed_params", {}))
            else:  # running when the study stopped: Ray continues it and tells its end
                study.enqueue_trial(t["params"])
                live[t["number"]] = handle = study.ask(fixed_distributions=dists)
                for step, value in steps.items():
                    handle.report(value, step)
        numbered = {t.number: t for t in study.get_trials(deepcopy=False)}
        self._ot_study = study
        self._ot_trials = {
            ray_id: live.get(n, numbered[n]) for ray_id, n in state["ray_trials"].items()
        }
        self._completed_trials = set(state["completed"])
        set_sampler_rng_state(sampler, state["rng"])

    def write_journal(self) -> None:
        """Append the finished trials not yet in the journal file."""
        path = self.journal_path
        study, trials = optuna_state(self)
        if not path or study is None:
            return
        ray_ids = {t.number: trial_id for trial_id, t in trials.items()}
        try:
            _mirror_study(study, path, self._journal_study, ray_ids, self.metric)
            if self._journal_upload and _JOURNAL_AT.get() is None:
                upload_file(path, self._journal_upload)
        except Exception as exc:  # the dashboard file must never stop a study
            logger.warning("could not write the Optuna journal %s: %s", path, exc)


#: The ``format`` field of a :class:`JournaledOptunaSearch` state file.
_OPTUNA_FORMAT = "xsam-tune optuna searcher 1"


def known_formats() -> tuple[str, str]:
    """The ``format`` of a :class:`ListSearcher` state, then of a :class:`JournaledOptunaSearch`."""
    return (_LIST_FORMAT, _OPTUNA_FORMAT)


def _trial_to_json(t: Any) -> dict[str, Any]:
    """An Optuna ``FrozenTrial`` as plain JSON values."""
    from optuna.distributions import distribution_to_json

    return {
        "number": t.number,
        "state": t.state.name,
        "params": t.params,
        "distributions": {k: distribution_to_json(d) for k, d in t.distributions.items()},
        "values": t.values,
        "intermediate_values": {str(k): v for k, v in t.intermediate_values.items()},
        "user_attrs": t.user_attrs,
        "system_attrs": t.system_attrs,
    }


# The attributes under which Optuna's samplers keep their NumPy random state
# (optuna 4-5: ``_rng`` is a LazyRandomState or a RandomState; TPE and NSGA-II
# draw their start-up trials with a ``_random_sampler``, GP and QMC with an
# ``_independent_sampler``). Optuna has no public accessor; a resumed study
# must go on drawing where it stopped, not repeat its first draws.
# tests/study/test_study_searchers.py fails if Optuna renames them.
_RNG_PATHS = ("_rng", "_random_sampler._rng", "_independent_sampler._rng")


def _random_states(sampler: Any) -> Iterator[tuple[str, Any]]:
    """``(path, numpy RandomState)`` of each random state a sampler holds."""
    import numpy as np

    for path in _RNG_PATHS:
        obj = sampler
        for name in path.split("."):
            obj = getattr(obj, name, None)
        rng = getattr(obj, "rng", obj)  # LazyRandomState.rng creates it on first use
        if isinstance(rng, np.random.RandomState):
            yield path, rng


def sampler_rng_state(sampler: Any) -> dict[str, list[Any]]:
    """The random state of an Optuna sampler as JSON values (see :data:`_RNG_PATHS`)."""
    out = {}
    for path, rng in _random_states(sampler):
        kind, keys, pos, has_gauss, cached = rng.get_state()
        out[path] = [kind, [int(k) for k in keys], pos, has_gauss, cached]
    return out


def set_sampler_rng_state(sampler: Any, state: dict[str, list[Any]]) -> None:
    """Put back what :func:`sampler_rng_state` returned."""
    import numpy as np

    for path, rng in _random_states(sampler):
        if path in state:
            kind, keys, pos, has_gauss, cached = state[path]
            rng.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def _mirror_study(source: Any, path: str, name: str, ray_ids: dict[int, str], metric: Any) -> None:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    storage = JournalStorage(JournalFileBackend(path))
    target = optuna.create_study(
        storage=storage, study_name=name, directions=source.directions, load_if_exists=True
    )
    if not target.metric_names and metric:
        with warnings.catch_warnings():  # "experimental" since Optuna 3.2, still is
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            target.set_metric_names(list(metric) if isinstance(metric, list) else [metric])
    copied = {t.user_attrs.get("ray_number") for t in target.get_trials(deepcopy=False)}
    finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    for t in source.get_trials(deepcopy=False, states=finished):
        if t.number in copied:
            continue
        attrs = {**t.user_attrs, "ray_number": t.number}
        if t.number in ray_ids:
            attrs["ray_trial_id"] = ray_ids[t.number]
        target.add_trial(
            optuna.trial.create_trial(
                state=t.state,
                values=t.values if t.state == TrialState.COMPLETE else None,
                params=t.params,
                distributions=t.distributions,
                user_attrs=attrs,
                intermediate_values=t.intermediate_values,
            )
        )


class TrialDirname:
    """Names a trial folder ``<trial id>_<swept values>`` (Ray's default lists
    every setting, fixed ones too, and cuts the names off).

    Args:
        swept: The swept parameter names, in study-file order.
    """

    def __init__(self, swept: Sequence[str]) -> None:
        self.swept = tuple(swept)

    def __call__(self, trial: Any) -> str:
        """The folder name of a Ray Tune ``Trial``."""
        parts = [f"{key}={_short(trial.config[key])}" for key in self.swept if key in trial.config]
        name = "_".join([trial.trial_id, ",".join(parts)]) if parts else trial.trial_id
        return re.sub(r"[^A-Za-z0-9._=,+-]", "_", name)[:150]


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
