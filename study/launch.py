"""Run a study, or resume one: the public entry points of the study layer's launcher.

``run_study`` starts an embedded single-node Ray instance that listens on the
loopback interface only (or joins the one ``xsam-tune ray start`` keeps,
:mod:`study._kept_ray`, or a cluster with ``address``), writes
``study.yaml`` and ``study.json`` into ``<storage>/<name>/`` and runs the
trials; ``resume_study`` picks an interrupted study up from its directory
without rerunning finished trials.

The pieces live by concern: :mod:`study._storage` (local paths and URIs),
:mod:`study._cluster` (the Ray connection), :mod:`study._sharedfs`,
:mod:`study._record` (``study.json``/``study.yaml``) and :mod:`study._tuner`.
"""

from __future__ import annotations

import os
import pickle
import sys
from collections.abc import Callable, Sequence
from typing import Any

from study import _storage
from study._cluster import check_storage, connect
from study._errors import StudyLaunchError
from study._preflight import check_launch, check_resources
from study._record import (
    choose_run_name,
    claim_run_name,
    mark_ended,
    mark_resumed,
    read_study_config,
    start_record,
)
from study._schema import StudyConfig
from study._state import record_last_study
from study._timing import TIMING_ENV, RowClock, mark
from study._tuner import (
    JOURNAL_NAME,
    absolute_paths,
    build_tuner,
    default_trainable,
    is_complete,
    set_callbacks,
    with_resources,
)
from study._verify import (
    TrialGuard,
    repair_torn_rows,
    restore_tuner,
    unreadable_ray_file,
    verify_resumable,
)
from study.space import build_tune_space, count_trials

__all__ = [
    "JOURNAL_NAME",
    "default_trainable",
    "is_complete",
    "read_study_config",
    "resume_study",
    "run_study",
]


def run_study(
    cfg: StudyConfig,
    *,
    address: str | None = None,
    storage: str | None = None,
    name: str | None = None,
    trainable: Callable[[dict], Any] | None = None,
    verbose: int = 1,
    allow_local_storage: bool = False,
    command: Sequence[str] | None = None,
    callbacks: Sequence[Any] = (),
) -> Any:
    """Run a study to the end.

    Args:
        cfg: The validated study.
        address: Ray cluster to join (``auto``, ``host:port``, ``ray://…``);
            None starts an embedded single-node instance with every CPU of
            this machine, reachable from this machine only.
        storage: Root of study directories, overriding ``cfg.storage``.
        name: Run name, i.e. the study-directory name (default ``cfg.name``,
            suffixed with the date when that directory exists already).
        trainable: Function trainable (default ``trainables.tune.train_trial``).
        verbose: Ray Tune verbosity (0 silent, 1 progress, 2 every result).
        allow_local_storage: Accept a local storage path on a multi-node
            cluster (every node must see it at the same path).
        command: Command line recorded in ``study.json`` (default ``sys.argv``).
        callbacks: Ray Tune callbacks (the CLI's console, :mod:`study._console`).

    Returns:
        The Ray Tune ``ResultGrid``; ``.experiment_path`` is the study directory
        (for remote storage, its path inside the bucket).

    Raises:
        StudyLaunchError: The cluster is unreachable, the storage is unusable,
            the named study directory exists already, or there is no trainable.
    """
    root = _storage.storage_root(storage or cfg.storage)
    fixed = absolute_paths(cfg.trial_settings())
    # Before anything imports Ray or torch: a study that cannot run fails in a second
    # (first, so that a bad storage URI is named by the storage probe's short request).
    check_launch(cfg, root=root, address=address, settings=fixed)
    choose_run_name(root, name, cfg.name)  # a taken --name is refused before Ray starts
    preload = _preload(cfg, own_trainable=trainable is not None)
    trainable = trainable or default_trainable()
    callbacks = _with_clock(callbacks)

    with connect(address, preload=preload):
        # Ray Tune's import (seconds) after Ray starts: the first workers start meanwhile.
        space = build_tune_space(cfg, fixed=fixed)
        check_storage(root, allow_local_storage)
        check_resources(cfg)
        # Claimed after every check, so that a refused study writes nothing, and
        # atomically, so that two studies started at once get two directories.
        run_name = claim_run_name(root, name, cfg.name)
        study_dir = _storage.join(root, run_name)
        start_record(
            cfg,
            run_name=run_name,
            root=root,
            study_dir=study_dir,
            num_trials=count_trials(cfg),
            command=command,
            address=address,
        )
        _tensorboard_without_torch()
        tuner = build_tuner(
            cfg,
            space,
            trainable,
            root=root,
            run_name=run_name,
            verbose=verbose,
            callbacks=callbacks,
        )
        results = _fit(tuner, study_dir, cfg)
    return results


def resume_study(
    path: str,
    *,
    address: str | None = None,
    trainable: Callable[[dict], Any] | None = None,
    verbose: int = 1,
    allow_local_storage: bool = False,
    command: Sequence[str] | None = None,
    callbacks: Sequence[Any] = (),
) -> Any:
    """Resume an interrupted study from its directory.

    Finished trials are kept; unfinished ones continue from their last
    checkpoint, errored ones too (``resume_errored``), and trials not yet
    started run.

    Args:
        path: The study directory (``<storage>/<name>``, a local path or URI).
        address: Ray cluster to join; None starts an embedded instance.
        trainable: Function trainable (default ``trainables.tune.train_trial``).
        verbose: Ray Tune verbosity.
        allow_local_storage: As for :func:`run_study`.
        command: Command line recorded in ``study.json``.
        callbacks: Ray Tune callbacks, as for :func:`run_study`.

    Returns:
        The Ray Tune ``ResultGrid`` of the whole study.

    Raises:
        StudyLaunchError: ``path`` is not a resumable study directory, or the
            cluster/storage is unusable.
    """
    from ray import tune

    from study._searchers import journal_at, resumed_in

    path = path if _storage.is_uri(path) else os.path.abspath(os.path.expanduser(path))
    cfg = read_study_config(path)
    # Before Ray starts: a damaged or foreign state is refused, never run (issue 9).
    verify_resumable(path, cfg)
    try:
        resumable = tune.Tuner.can_restore(path)
    except (OSError, ValueError) as exc:
        raise StudyLaunchError(f"cannot read {path}: {' '.join(str(exc).split())}") from None
    if not resumable:
        raise StudyLaunchError(
            f"nothing to resume in {path}: Ray Tune wrote no experiment state there "
            "(the study never started)"
        )
    settings = absolute_paths(cfg.trial_settings())
    check_launch(cfg, root=_storage.parent(path), address=address, settings=settings)
    preload = _preload(cfg, own_trainable=trainable is not None)
    trainable = trainable or default_trainable()
    callbacks = _with_clock(callbacks)
    with connect(address, preload=preload):
        check_storage(_storage.parent(path), allow_local_storage)
        check_resources(cfg)
        mark_resumed(path, command)
        repair_torn_rows(path)
        _tensorboard_without_torch()
        tuner = restore_tuner(path, with_resources(trainable, cfg))
        # TrialGuard: no trial this study does not define ever runs (issue 9).
        set_callbacks(tuner, [*callbacks, TrialGuard(cfg)])
        # The directory may have moved since the searcher was pickled: its
        # Optuna journal belongs here now (a remote study keeps its upload).
        local = not _storage.is_uri(path)
        # New trials go to this directory too, not to where Ray pickled the search.
        with journal_at(_storage.join(path, JOURNAL_NAME) if local else None), resumed_in(path):
            results = _fit(tuner, path, cfg)
    return results


def _fit(tuner: Any, study_dir: str, cfg: StudyConfig) -> Any:
    """``tuner.fit()``, then the end of the study in ``study.json`` and ``last-study``."""
    try:
        results = tuner.fit()
        mark("fit_end")
    except (pickle.UnpicklingError, EOFError) as exc:  # Ray's own files, cut by a full disk
        raise unreadable_ray_file(study_dir, exc) from None
    except KeyboardInterrupt:  # a second Ctrl-C stops at once: still say so in the record
        mark_ended(study_dir, complete=False, total=0, errors=0)
        record_last_study(study_dir)
        raise
    from study._durable import drop_held_back, full_disk_error  # pyarrow: once Ray runs

    drop_held_back(study_dir)
    full = full_disk_error(results, study_dir)  # ends in one line, resumable
    mark_ended(
        study_dir,
        complete=full is None and is_complete(results, cfg),
        total=len(results),
        errors=results.num_errors,
    )
    record_last_study(study_dir)
    if full is not None:
        raise full
    return results


def _with_clock(callbacks: Sequence[Any]) -> list[Any]:
    """The run's listeners, and the timing record's (:mod:`study._timing`) when asked for."""
    return [*callbacks, RowClock()] if os.environ.get(TIMING_ENV) else list(callbacks)


#: What a new Ray worker of a local instance imports before its first trial.
PRELOAD = "trainables.tune.preload_worker"


def _preload(cfg: StudyConfig, *, own_trainable: bool) -> str | None:
    """The workers' setup hook (:data:`PRELOAD`) for the default trainable.

    Ray starts one worker per CPU of a new local instance as the driver
    connects; with the hook each imports torch and the trial layer at once.
    None when most of those workers would never run a trial (fewer trials at
    once than half the CPUs): each would hold torch's memory for nothing.
    Another trainable's imports are not ours to guess.
    """
    if own_trainable:
        return None
    cpus = os.cpu_count() or 1
    at_once = count_trials(cfg)
    if cfg.resources.cpu:
        at_once = min(at_once, int(cpus // cfg.resources.cpu))
    if cfg.effective_concurrency():
        at_once = min(at_once, cfg.effective_concurrency() or at_once)
    return PRELOAD if 2 * at_once >= cpus else None


def _tensorboard_without_torch() -> None:
    """Import tensorboardX for Ray Tune's TensorBoard logger with torch hidden from it.

    tensorboardX imports torch, when it can, only to accept torch tensors; Tune
    logs Python numbers. Without this the driver would import torch (seconds)
    just before the first trial; the trials import it in their own workers.
    """
    if "torch" in sys.modules or "tensorboardX" in sys.modules:
        return
    sys.modules["torch"] = None  # type: ignore[assignment]  # `import torch` raises ImportError
    try:
        import tensorboardX  # noqa: F401
    except ImportError:  # Tune says so itself, when it makes its logger
        pass
    finally:
        if "torch" in sys.modules and sys.modules["torch"] is None:
            del sys.modules["torch"]
