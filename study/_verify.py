"""Checks of a study directory before a resume starts Ray (issue 9).

A resume continues from what Ray and the project wrote into the study
directory. Ray reads its run state and ``tuner.pkl`` with pickle and, when the
run state is damaged, silently starts a new run built from the search space
alone. So before anything starts, :func:`verify_resumable` checks:

- ``study.json`` is a JSON object that agrees with ``study.yaml``;
- ``tuner.pkl`` and Ray's searcher wrappers are whole pickles (framing only:
  they are Ray's own files, never unpickled here; see README "Trust");
- the newest run state (``experiment_state-*.json``) is whole JSON and every
  trial in it has a config of this study;
- the project's searcher state is JSON of the expected format;
- every trial directory's ``params.json`` is a config of this study, and
  every trial state file (``trial_state.pt``) loads with
  ``torch.load(weights_only=True)`` (nothing in it runs).

What is damaged is refused with one line naming the file and how to recover.
Remote (URI) study directories get the ``study.json`` check only.

Once Ray runs, :class:`TrialGuard` checks every trial it starts. A full disk
leaves nothing cut in a local study directory, and a trial restarted from a
checkpoint has the rows after it cut (:mod:`study._durable`).
"""

from __future__ import annotations

import glob
import json
import math
import os
from collections.abc import Iterator, Mapping
from typing import Any

from study import _storage
from study._errors import StudyLaunchError, show_value
from study._record import RECORD, SPEC, read_record
from study._schema import StudyConfig

__all__ = [
    "RUN_STATE_PATTERN",
    "TrialGuard",
    "repair_torn_rows",
    "restore_tuner",
    "unreadable_ray_file",
    "verify_resumable",
]

#: Ray Tune's run state files in a study directory (the newest one is resumed).
RUN_STATE_PATTERN = "experiment_state-*.json"
#: Ray's pickles in a study directory: ``tuner.pkl`` and the search wrappers' state.
_RAY_PICKLES = ("tuner.pkl", "search_gen_state-*.json", "basic-variant-state-*.json")
#: The project's searcher state (JSON, whatever Ray's file name says).
_SEARCHER_STATE = "searcher-state-*.pkl"
#: The trial state file of ``trainables.tune`` inside a checkpoint directory.
_TRIAL_STATE = "trial_state.pt"
# Trial keys whose value depends on where the study was launched from (made absolute then).
_LOCATION_KEYS = frozenset({"data_dir"})


def verify_resumable(path: str, cfg: StudyConfig) -> None:
    """Refuse to resume a study directory whose state is damaged or not this study's.

    Args:
        path: The study directory (absolute local path or URI).
        cfg: Its validated ``study.yaml``.

    Raises:
        StudyLaunchError: One line naming what is damaged and how to recover.
    """
    _check_record(path, cfg)
    if _storage.is_uri(path):
        return
    for pattern in _RAY_PICKLES:
        for file in _newest(path, pattern):
            _check_pickle_framing(file)
    run_configs = _check_run_state(path, cfg)
    for file in _newest(path, _SEARCHER_STATE):
        _check_searcher_state(file, cfg)
    _check_trials(path, cfg, run_configs)


def _check_record(path: str, cfg: StudyConfig) -> None:
    record = read_record(path)  # raises on a damaged study.json
    spec = json.loads(json.dumps(cfg.to_dict(), default=str))
    for field in ("space", "trial", "search"):
        if field in record and record[field] != spec[field]:
            raise StudyLaunchError(
                f"{_storage.join(path, RECORD)}: its {field} differs from {SPEC}'s "
                f"(the study directory was edited); restore both from a copy"
            )


def _newest(path: str, pattern: str) -> Iterator[str]:
    """The newest file matching ``pattern`` (Ray reads that one), if any."""
    files = glob.glob(os.path.join(glob.escape(path), pattern))
    if files:
        yield max(files)


def _damaged(file: str, what: str, reason: str) -> StudyLaunchError:
    return StudyLaunchError(
        f"{what} {file} is damaged ({reason}); nothing was resumed: restore the study "
        "directory from a copy, or start the study again with `xsam-tune run` "
        "(the finished trials' results stay where they are)"
    )


def _check_pickle_framing(file: str) -> None:
    """A whole pickle starts with the PROTO opcode and ends with STOP (checked, not loaded)."""
    try:
        size = os.path.getsize(file)
        with open(file, "rb") as f:
            head = f.read(2)
            f.seek(max(0, size - 1))
            tail = f.read(1)
    except OSError as exc:
        raise _damaged(file, "Ray state", exc.strerror or type(exc).__name__) from None
    if size < 3 or head[:1] != b"\x80" or tail != b".":
        raise _damaged(
            file, "Ray state", "empty or cut short" if size < 3 else "not a whole pickle"
        )


def _check_run_state(path: str, cfg: StudyConfig) -> dict[str, dict[str, Any]]:
    """The newest run state's trial configs by trial id, each checked against the study."""
    configs: dict[str, dict[str, Any]] = {}
    for file in _newest(path, RUN_STATE_PATTERN):
        try:
            with open(file, "rb") as f:
                state = json.loads(f.read().decode("utf-8"))
            for entry in state["trial_data"]:
                trial = json.loads(entry[0])
                configs[str(trial["trial_id"])] = trial["config"]
        except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
            reason = "cut short or garbled" if isinstance(exc, ValueError) else "fields missing"
            raise _damaged(file, "run state", reason) from None
        for config in configs.values():
            problem = foreign_config(config, cfg)
            if problem:
                raise _damaged(file, "run state", f"a trial config {problem}")
    return configs


def _check_searcher_state(file: str, cfg: StudyConfig) -> None:
    """The project's JSON searcher state, whose swept values are all in the study's space."""
    try:
        with open(file, "rb") as f:
            state = json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError):
        state = None
    if not isinstance(state, dict) or not isinstance(state.get("format"), str):
        raise _damaged(file, "searcher state", "not the project's JSON state")
    # a list searcher's trials, or an Optuna trial's params: swept values only
    points = state.get("trials", [])
    try:
        swept = [p.get("params", p) if "params" in p else p for p in points]
        for values in swept:
            problem = _foreign_swept(values, cfg)
            if problem:
                raise _damaged(file, "searcher state", f"a trial {problem}")
    except (AttributeError, TypeError):
        raise _damaged(file, "searcher state", "fields out of shape") from None
    _restore_searcher(file, state["format"], cfg)


def _restore_searcher(file: str, fmt: str, cfg: StudyConfig) -> None:
    """Restore the state into a throwaway searcher: whatever Ray's restore would trip
    on is found now (Ray would log it and start the study anew from its space)."""
    from study._searchers import JournaledOptunaSearch, ListSearcher, known_formats

    if fmt not in known_formats():
        raise _damaged(file, "searcher state", f"unknown format {show_value(fmt)}")
    if fmt == known_formats()[0]:
        ListSearcher([]).restore(file)
        return
    JournaledOptunaSearch(metric=cfg.metric, mode=cfg.mode).restore(file)


def _check_trials(path: str, cfg: StudyConfig, run_configs: dict[str, dict[str, Any]]) -> None:
    states: list[str] = []
    for params in sorted(glob.glob(os.path.join(glob.escape(path), "*", "params.json"))):
        trial_dir = os.path.dirname(params)
        try:
            with open(params, "rb") as f:
                config = json.loads(f.read().decode("utf-8"))
        except (OSError, ValueError):
            config = None
        # trial folders are "<trial id>_<swept values>" (study._searchers.TrialDirname)
        name = os.path.basename(trial_dir)
        ids = [i for i in run_configs if name == i or name.startswith(f"{i}_")]
        if not isinstance(config, dict) and len(ids) == 1:
            # Ray writes params.json in place: a full disk leaves it empty. The run
            # state (checked above) holds the trial's config: rebuild it from there.
            from xsam_contract import atomic_write

            config = run_configs[ids[0]]
            atomic_write(params, json.dumps(config, indent=2, sort_keys=True) + "\n")
        if not isinstance(config, dict):
            raise StudyLaunchError(
                f"trial record {params} is damaged (not a JSON object); restore it from a copy, "
                f"or move {trial_dir} out of the study directory to leave that trial out"
            )
        problem = foreign_config(config, cfg)
        if problem:
            raise StudyLaunchError(
                f"trial record {params}: its config {problem}; move {trial_dir} out of the "
                "study directory, or restore it from a copy"
            )
        states += glob.glob(os.path.join(glob.escape(trial_dir), "checkpoint_*", _TRIAL_STATE))
    if states:
        _check_trial_states(states)


def _check_trial_states(files: list[str]) -> None:
    """Every trial state loads without running anything (torch, imported only here)."""
    from trainables.loop import CheckpointError, read_state

    for file in files:
        try:
            read_state(file)
        except CheckpointError as exc:
            raise StudyLaunchError(
                f"{exc}; restore it from a copy of the study directory (Ray resumes the trial "
                "from this checkpoint)"
            ) from None


class TrialGuard:
    """A run listener (``study._hooks.Forward`` hooks) that stops a resumed study
    before a trial whose config is not the study's runs an epoch.

    The last line of defence behind :func:`verify_resumable`: whatever Ray
    restores or creates (a run state it failed to read makes it start anew
    from the bare search space), every trial it starts is checked against
    ``study.yaml``.

    Args:
        cfg: The study being resumed.
    """

    def __init__(self, cfg: StudyConfig) -> None:
        self.cfg = cfg

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """Raise :class:`StudyLaunchError` for a trial this study does not define."""
        problem = foreign_config(trial.config, self.cfg)
        if problem:
            raise StudyLaunchError(
                f"trial {trial.trial_id}: its config {problem}; the resumed run state is not "
                f"this study's {SPEC}: stopped before it ran; restore the study directory "
                "from a copy"
            )

    def setup(self, **info: Any) -> None:
        """Nothing to set up."""

    def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
        """Nothing to do."""

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict, **info: Any
    ) -> None:
        """Nothing to do."""

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """Nothing to do."""

    def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """Nothing to do."""

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """Nothing to do."""

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        """Nothing to do."""


def unreadable_ray_file(study_dir: str, exc: BaseException) -> Exception:
    """The error for a file Ray could not read back after a run (Ray writes its
    files in place, so a full disk leaves them cut): ENOSPC when the storage is
    full (the CLI says so in one line), else a one-line launch error."""
    import errno
    import shutil

    reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:120]}"
    what = f"Ray could not read back a file it wrote in {study_dir} ({reason})"
    if not _storage.is_uri(study_dir):
        try:
            full = shutil.disk_usage(study_dir).free < 1 << 20
        except OSError:
            full = False
        if full:
            return OSError(errno.ENOSPC, f"{what}: the storage is full")
    return StudyLaunchError(
        f"{what}; if the storage is full, free space, then continue with "
        f"`xsam-tune resume {study_dir}`"
    )


def restore_tuner(path: str, trainable: Any) -> Any:
    """``Tuner.restore`` of a verified study directory; a ``tuner.pkl`` that still
    fails to load (framing intact, content not) is one line, not a traceback.

    Raises:
        StudyLaunchError: ``tuner.pkl`` cannot be loaded.
    """
    import pickle

    from ray import tune

    from study._durable import resume_filesystem

    try:
        return tune.Tuner.restore(
            path,
            trainable,
            resume_unfinished=True,
            resume_errored=True,
            restart_errored=False,
            # the resumed run writes through it too (study._durable)
            storage_filesystem=None if _storage.is_uri(path) else resume_filesystem(path),
        )
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError) as exc:
        reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:120]}"
        raise _damaged(_storage.join(path, "tuner.pkl"), "Ray state", reason) from None


def repair_torn_rows(path: str) -> list[str]:
    """Cut a torn last line (a crash mid-write) off each trial's ``result.json`` and
    ``progress.csv``, so the rows a resume appends are not glued onto it.

    Every complete row before it is kept; the file is rewritten atomically.

    Args:
        path: The study directory (a URI is left alone).

    Returns:
        The files repaired.
    """
    from xsam_contract import atomic_write

    if _storage.is_uri(path):
        return []
    repaired = []
    for name in ("result.json", "progress.csv"):
        for file in sorted(glob.glob(os.path.join(glob.escape(path), "*", name))):
            with open(file, "rb") as f:
                data = f.read()
            keep = _whole_lines(data, json_rows=name.endswith(".json"))
            if keep != len(data):
                atomic_write(file, data[:keep])
                repaired.append(file)
    return repaired


def _whole_lines(data: bytes, *, json_rows: bool) -> int:
    """How many leading bytes of ``data`` are whole lines (JSON rows when ``json_rows``)."""
    end = data.rfind(b"\n") + 1
    if json_rows and end:
        # a row cut exactly at a line end still parses; one cut inside does not
        start = data.rfind(b"\n", 0, end - 1) + 1
        try:
            json.loads(data[start:end])
        except ValueError:
            return start
    return end


def foreign_config(config: Mapping[str, Any], cfg: StudyConfig) -> str | None:
    """Why a trial config is not one of this study's trials (None when it is).

    Its fixed settings must be the study's, every swept key a value of its
    parameter, and no other key present.
    """
    space = {p.name: p for p in cfg.space}
    fixed = cfg.trial_settings()
    for key, value in fixed.items():
        if key in _LOCATION_KEYS or (key in space and space[key].when):
            continue
        if key not in config or not _same(config[key], value):
            return f"has {key}={show_value(config.get(key))}, the study fixes {show_value(value)}"
    for key, value in config.items():
        if key in space:
            if not space[key].contains(value):
                return f"has {key}={show_value(value)}, not in {space[key].describe()}"
        elif key not in fixed:
            return f"has {key}={show_value(value)}, a key the study does not set"
    return None


def _foreign_swept(values: Mapping[str, Any], cfg: StudyConfig) -> str | None:
    """Why swept values are not of this study's space (None when they are)."""
    space = {p.name: p for p in cfg.space}
    for key, value in values.items():
        if key not in space:
            return f"sweeps {key}, which the study does not"
        if not space[key].contains(value):
            return f"has {key}={show_value(value)}, not in {space[key].describe()}"
    return None


def _same(a: Any, b: Any) -> bool:
    """Equal after a JSON round trip (tuples are lists; 5 == 5.0; nan == nan)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b and isinstance(a, bool) == isinstance(b, bool)
