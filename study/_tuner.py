"""The Ray Tune ``Tuner`` of a study: trainable, searcher, scheduler, run settings."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from study import _storage
from study._errors import StudyLaunchError
from study._schema import StudyConfig
from study.space import TuneSpace, count_trials
from xsam_contract import STUDY_FILES

__all__ = [
    "JOURNAL_NAME",
    "absolute_paths",
    "build_tuner",
    "default_trainable",
    "is_complete",
    "set_callbacks",
    "with_resources",
]

#: The Optuna journal (for optuna-dashboard) inside an Optuna study's directory.
JOURNAL_NAME = STUDY_FILES["optuna_journal"]


def default_trainable() -> Callable[[dict], Any]:
    """``trainables.tune.train_trial``, the trial side's function trainable.

    Raises:
        StudyLaunchError: The trial side is not installed.
    """
    if importlib.util.find_spec("trainables.tune") is None:
        raise StudyLaunchError(
            "no trial trainable: trainables/tune.py (train_trial) is not available"
        )
    from trainables.tune import train_trial

    return train_trial


def with_resources(trainable: Callable[[dict], Any], cfg: StudyConfig) -> Any:
    """The trainable with the study's per-trial resources attached."""
    from ray import tune

    return tune.with_resources(trainable, {"cpu": cfg.resources.cpu, "gpu": cfg.resources.gpu})


def build_tuner(
    cfg: StudyConfig,
    space: TuneSpace,
    trainable: Callable[[dict], Any],
    *,
    root: str,
    run_name: str,
    verbose: int,
    callbacks: Sequence[Any] = (),
) -> Any:
    """The ``Tuner`` that runs the study into ``<root>/<run_name>``.

    Args:
        cfg: The validated study.
        space: Its search space (:func:`study.space.build_tune_space`).
        trainable: The function trainable.
        root: Storage root (local path or URI).
        run_name: Study-directory name under ``root``.
        verbose: Ray Tune verbosity (0 silent, 1 progress, 2 every result).
        callbacks: Listeners of the run (the console, :mod:`study._console`), given
            to Ray Tune with the study layer's callbacks (:func:`study._hooks.run_callbacks`).
    """
    from ray import tune

    from study._durable import DurableRows, storage_filesystem
    from study._hooks import run_callbacks
    from study._searchers import TrialDirname

    single = not cfg.multi_objective
    return tune.Tuner(
        with_resources(trainable, cfg),
        param_space=space.param_space,
        tune_config=tune.TuneConfig(
            # Several objectives go to the Optuna searcher only: Ray's
            # TuneConfig takes one metric.
            metric=cfg.metric if single else None,
            mode=cfg.mode if single else None,
            search_alg=cfg.search.searcher(cfg, space, run_name, _storage.join(root, run_name)),
            scheduler=cfg.scheduler.build(),
            num_samples=space.num_samples,
            reuse_actors=True,
            trial_dirname_creator=TrialDirname([p.name for p in cfg.space]),
        ),
        run_config=tune.RunConfig(
            name=run_name,
            storage_path=root,
            # whole files and a consistent run state on a full disk (study._durable)
            storage_filesystem=storage_filesystem(space.kind, _storage.join(root, run_name)),
            failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=cfg.keep_checkpoints),
            verbose=verbose,
            callbacks=[*run_callbacks(callbacks), DurableRows()],
        ),
    )


def is_complete(results: Any, cfg: StudyConfig) -> bool:
    """Whether every trial of the study ran to its end (returned, was stopped by
    the scheduler, or errored with its retries spent).

    False after an interruption (Ctrl-C makes ``Tuner.fit`` return early):
    the study is then resumable with ``resume_study``. Ray's status cannot
    tell: it calls the trials it stopped at the interruption ``TERMINATED``
    too; only a trial that ended has ``done`` in its last result.
    """
    from study._report import has_ended, trial_epochs

    default = trial_epochs(cfg)
    ended = all(
        r.error is not None
        or has_ended(r.metrics or {}, int((r.config or {}).get("epochs") or default))
        for r in results
    )
    return ended and len(results) >= count_trials(cfg)


def set_callbacks(tuner: Any, callbacks: Sequence[Any] = ()) -> None:
    """Give a restored ``Tuner`` this run's callbacks (as :func:`build_tuner` does).

    ``Tuner.restore`` takes no callbacks: it reuses those pickled with the
    run config in ``tuner.pkl`` (an inert console, :mod:`study._console`).
    Ray 2.60 keeps the run config on the private ``Tuner._local_tuner``; this
    is the one place that reaches it, and ``tests/study/test_interrupt.py``
    fails if a resumed run stops printing its events.
    """
    from study._durable import DurableRows
    from study._hooks import run_callbacks

    tuner._local_tuner.get_run_config().callbacks = [
        *run_callbacks(callbacks),
        DurableRows(),
    ]


def absolute_paths(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Resolve a relative ``data_dir`` against the launch directory: trials run
    in their own working directories (docs/contract.md)."""
    out = dict(settings)
    data_dir = out.get("data_dir")
    relative = isinstance(data_dir, str) and not os.path.isabs(data_dir)
    if relative and not _storage.is_uri(data_dir) and not data_dir.startswith("~"):
        out["data_dir"] = os.path.abspath(data_dir)
    return out
