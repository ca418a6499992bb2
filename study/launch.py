"""Build and run the Ray Tune ``Tuner`` of a study; resume a study.

``run_study`` starts an embedded single-node Ray instance that listens on the
loopback interface only (or joins a cluster with ``address``), writes
``study.yaml`` and ``study.json`` into ``<storage>/<name>/`` and runs the
trials; ``resume_study`` picks an interrupted study up from its directory
without rerunning finished trials.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import re
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from study._errors import StudyConfigError, StudyLaunchError
from study._state import cache_dir, record_last_study
from study._trial import trial_defaults
from study._yaml import dump_yaml, load_yaml
from study.config import StudyConfig, parse_study
from study.space import TuneSpace, build_tune_space, count_trials

__all__ = [
    "JOURNAL_NAME",
    "default_trainable",
    "is_complete",
    "read_study_config",
    "resume_study",
    "run_study",
]

# File systems on which every node of a cluster sees the same files.
_SHARED_FS = (
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "lustre",
    "gpfs",
    "beegfs",
    "ceph",
    "glusterfs",
    "9p",
    "afs",
    "fuse.glusterfs",
    "fuse.sshfs",
    "fuse.s3fs",
    "fuse.gcsfuse",
    "fuse.juicefs",
    "fuse.ceph",
    "fuse.beegfs",
)
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
#: The Optuna journal (for optuna-dashboard) inside an Optuna study's directory.
JOURNAL_NAME = "optuna.journal"


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

    Returns:
        The Ray Tune ``ResultGrid``; ``.experiment_path`` is the study directory
        (for remote storage, its path inside the bucket).

    Raises:
        StudyLaunchError: The cluster is unreachable, the storage is unusable,
            the named study directory exists already, or there is no trainable.
    """
    root = _storage_root(storage or cfg.storage)
    run_name = _run_name(root, name, cfg.name)
    study_dir = _join(root, run_name)
    trainable = trainable or default_trainable()
    space = build_tune_space(cfg, fixed=_absolute_paths(cfg.trial_settings()))

    with _ray(address):
        _check_storage(root, allow_local_storage)
        info = _study_info(cfg, run_name, root, study_dir, command, address)
        _write_text(study_dir, "study.yaml", dump_yaml(cfg.to_dict()))
        _write_json(study_dir, info)
        tuner = _build_tuner(cfg, space, trainable, root, run_name, study_dir, verbose)
        record_last_study(study_dir)
        results = tuner.fit()
        _finish(study_dir, results, cfg)
    return results


def resume_study(
    path: str,
    *,
    address: str | None = None,
    trainable: Callable[[dict], Any] | None = None,
    verbose: int = 1,
    allow_local_storage: bool = False,
    command: Sequence[str] | None = None,
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

    Returns:
        The Ray Tune ``ResultGrid`` of the whole study.

    Raises:
        StudyLaunchError: ``path`` is not a resumable study directory, or the
            cluster/storage is unusable.
    """
    from ray import tune

    path = path if _is_uri(path) else os.path.abspath(os.path.expanduser(path))
    cfg = read_study_config(path)
    try:
        resumable = tune.Tuner.can_restore(path)
    except (OSError, ValueError) as exc:
        raise StudyLaunchError(f"cannot read {path}: {' '.join(str(exc).split())}") from None
    if not resumable:
        raise StudyLaunchError(
            f"nothing to resume in {path}: Ray Tune wrote no experiment state there "
            "(the study never started)"
        )
    trainable = trainable or default_trainable()
    with _ray(address):
        _check_storage(_parent(path), allow_local_storage)
        _update_info(path, lambda info: _mark_resumed(info, command))
        wrapped = tune.with_resources(
            trainable, {"cpu": cfg.resources.cpu, "gpu": cfg.resources.gpu}
        )
        with _journal_override(None if _is_uri(path) else _join(path, JOURNAL_NAME)):
            tuner = tune.Tuner.restore(
                path,
                wrapped,
                resume_unfinished=True,
                resume_errored=True,
                restart_errored=False,
            )
            record_last_study(path)
            results = tuner.fit()
        _finish(path, results, cfg)
    return results


def read_study_config(path: str) -> StudyConfig:
    """The validated study of a study directory (its ``study.yaml``).

    Raises:
        StudyLaunchError: The directory is missing or holds no ``study.yaml``.
        StudyConfigError: ``study.yaml`` is invalid.
    """
    if not _is_uri(path) and not os.path.isdir(path):
        raise StudyLaunchError(f"study directory not found: {path}")
    text = _read_text(path, "study.yaml")
    if text is None:
        raise StudyLaunchError(f"not an xsam-tune study directory (no study.yaml): {path}")
    source = _join(path, "study.yaml")
    return parse_study(load_yaml(text, source=source), source=source)


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


# --------------------------------------------------------------------------
# the Tuner
# --------------------------------------------------------------------------


def _build_tuner(
    cfg: StudyConfig,
    space: TuneSpace,
    trainable: Callable[[dict], Any],
    root: str,
    run_name: str,
    study_dir: str,
    verbose: int,
) -> Any:
    from ray import tune

    from study._searchers import TrialDirname

    single = not cfg.multi_objective
    return tune.Tuner(
        tune.with_resources(trainable, {"cpu": cfg.resources.cpu, "gpu": cfg.resources.gpu}),
        param_space=space.param_space,
        tune_config=tune.TuneConfig(
            # Several objectives go to the Optuna searcher only: Ray's
            # TuneConfig takes one metric.
            metric=cfg.metric if single else None,
            mode=cfg.mode if single else None,
            search_alg=_searcher(cfg, space, run_name, study_dir),
            scheduler=_scheduler(cfg),
            num_samples=space.num_samples,
            reuse_actors=True,
            trial_dirname_creator=TrialDirname([p.name for p in cfg.space]),
        ),
        run_config=tune.RunConfig(
            name=run_name,
            storage_path=root,
            failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=cfg.keep_checkpoints),
            verbose=verbose,
        ),
    )


def _searcher(cfg: StudyConfig, space: TuneSpace, run_name: str, study_dir: str) -> Any:
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter

    from study._searchers import JournaledOptunaSearch, ListSearcher

    cap = cfg.effective_concurrency()
    if space.kind == "native":
        return BasicVariantGenerator(
            points_to_evaluate=space.points_to_evaluate,
            max_concurrent=cap or 0,
            random_state=cfg.search.seed,
        )
    if space.kind == "list":
        searcher = ListSearcher(space.trials or [])
    else:
        if _is_uri(study_dir):
            journal = str(cache_dir() / "journals" / run_name / JOURNAL_NAME)
            upload = _join(study_dir, JOURNAL_NAME)
        else:
            journal, upload = _join(study_dir, JOURNAL_NAME), None
        searcher = JournaledOptunaSearch(
            space=space.optuna_space,
            metric=cfg.metric,
            mode=cfg.mode,
            points_to_evaluate=space.points_to_evaluate,
            sampler=_sampler(cfg),
            study_name=run_name,
            journal_path=journal,
            journal_study=run_name,
            journal_upload=upload,
        )
    return ConcurrencyLimiter(searcher, max_concurrent=cap) if cap else searcher


def _sampler(cfg: StudyConfig) -> Any:
    import optuna

    # Optuna logs every study it creates or loads; Ray Tune shows the progress.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seed = cfg.search.seed
    samplers = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "qmc": lambda: optuna.samplers.QMCSampler(seed=seed),
        "gp": lambda: optuna.samplers.GPSampler(seed=seed),
        "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed),
        "nsgaii": lambda: optuna.samplers.NSGAIISampler(seed=seed),
        "nsgaiii": lambda: optuna.samplers.NSGAIIISampler(seed=seed),
    }
    return samplers[cfg.search.sampler or "tpe"]()


def _scheduler(cfg: StudyConfig) -> Any:
    if cfg.scheduler.name != "asha":
        return None
    from ray.tune.schedulers import ASHAScheduler

    # One report per epoch: training_iteration counts epochs.
    return ASHAScheduler(
        time_attr="training_iteration",
        max_t=cfg.scheduler.max_t,
        grace_period=cfg.scheduler.grace_period,
        reduction_factor=cfg.scheduler.reduction_factor,
    )


# --------------------------------------------------------------------------
# Ray
# --------------------------------------------------------------------------


@contextlib.contextmanager
def _ray(address: str | None) -> Iterator[None]:
    """Connect to Ray for the duration of a study (reusing a running
    connection, e.g. in tests or notebooks) and disconnect from what we started."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Trials checkpoint every epoch and num_to_keep forces an experiment
    # snapshot each time; on local storage that is cheap, so no warning.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    import ray

    if ray.is_initialized():
        yield
        return
    if address is None and os.environ.get("RAY_ADDRESS"):
        # Inside `ray job submit` (or with RAY_ADDRESS exported) ray.init joins
        # that cluster whatever we pass, and refuses the local-instance settings
        # below: join it on purpose.
        address = "auto"
    if address is None:
        with _loopback_only():
            ray.init(
                num_cpus=os.cpu_count(),
                include_dashboard=False,
                log_to_driver=False,
                # Quiet: e.g. the token-auth notice means nothing for a
                # loopback-only instance.
                logging_level=logging.ERROR,
                _temp_dir=_ray_temp_dir(),
            )
    else:
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StudyLaunchError(f"cannot reach the Ray cluster at {address}: {reason}") from None
    try:
        yield
    finally:
        ray.shutdown()


@contextlib.contextmanager
def _loopback_only() -> Iterator[None]:
    """Make a new local Ray instance use 127.0.0.1 as its node address, so its
    GCS, raylet and workers listen on the loopback interface only.

    Ray picks the loopback address where it does not support clusters
    (macOS, Windows); ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` selects that
    behaviour here for the processes ``ray.init`` starts.
    """
    from ray._private import ray_constants

    key = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
    old_env, old_flag = os.environ.get(key), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[key] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = old_flag
        if old_env is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old_env


def _ray_temp_dir() -> str:
    if os.environ.get("XSAM_TUNE_RAY_TMP"):
        return os.environ["XSAM_TUNE_RAY_TMP"]
    uid = os.getuid() if hasattr(os, "getuid") else 0
    # Short on purpose: Ray puts Unix sockets under it (108-byte path limit).
    return os.path.join(tempfile.gettempdir(), f"xsam-ray-{uid}")


def _check_storage(root: str, allow_local: bool) -> None:
    """Refuse a local storage path that other nodes of a cluster cannot see."""
    import ray

    if allow_local or _is_uri(root):
        return
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) <= 1 or _on_shared_filesystem(root):
        return
    raise StudyLaunchError(
        f"storage {root} is local to this machine, but the cluster has {len(nodes)} nodes: "
        "trials elsewhere could not write their results there; use a URI "
        "(s3://…, gs://…) or a shared file system, or pass --allow-local-storage if "
        "every node mounts it at the same path"
    )


def _on_shared_filesystem(path: str, mounts_file: str = "/proc/mounts") -> bool:
    """Whether ``path`` lies on a network file system (Linux ``/proc/mounts``)."""
    try:
        with open(mounts_file, encoding="utf-8") as f:
            mounts = [line.split()[1:3] for line in f if len(line.split()) >= 3]
    except OSError:
        return False
    real = os.path.realpath(path)
    best, fstype = "", ""
    for point, kind in mounts:
        point = point.replace("\\040", " ")
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) > len(best):
            best, fstype = point, kind
    return fstype in _SHARED_FS or fstype.startswith("nfs")


# --------------------------------------------------------------------------
# study directory
# --------------------------------------------------------------------------


def _storage_root(storage: str) -> str:
    if _is_uri(storage):
        return storage.rstrip("/")
    return os.path.abspath(os.path.expanduser(storage))


def _run_name(root: str, name: str | None, default: str) -> str:
    if name is not None:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", name):
            raise StudyConfigError(
                "--name", name, "letters, digits, '.', '_' or '-', starting with a letter or digit"
            )
        if _exists(_join(root, name)):
            raise StudyLaunchError(
                f"study directory {_join(root, name)} exists already: resume it with "
                "`xsam-tune resume DIR` or choose another --name"
            )
        return name
    if not _exists(_join(root, default)):
        return default
    stamped = f"{default}-{time.strftime('%Y%m%d-%H%M%S')}"
    candidate, n = stamped, 2
    while _exists(_join(root, candidate)):
        candidate, n = f"{stamped}-{n}", n + 1
    return candidate


def _study_info(
    cfg: StudyConfig,
    run_name: str,
    root: str,
    study_dir: str,
    command: Sequence[str] | None,
    address: str | None,
) -> dict[str, Any]:
    spec = cfg.to_dict()
    return {
        "name": run_name,
        "study": cfg.name,
        "description": cfg.description,
        "metric": cfg.metric,
        "mode": cfg.mode,
        "metrics": [{"name": m.name, "mode": m.mode} for m in cfg.metrics],
        "search": spec["search"],
        "scheduler": spec["scheduler"],
        "space": spec["space"],
        "trial": spec["trial"],
        # analysis cannot import the trial layer: it reads unset keys' defaults here
        "trial_defaults": trial_defaults(),
        "resources": spec["resources"],
        "num_trials": count_trials(cfg),
        "source": cfg.source,
        "storage": root,
        "path": study_dir,
        "command": list(sys.argv if command is None else command),
        "address": address,
        "host": socket.gethostname(),
        "versions": _versions(),
        "started_at": _now(),
    }


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("xsam-tune", "ray", "optuna", "torch", "numpy"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def is_complete(results: Any, cfg: StudyConfig) -> bool:
    """Whether every trial of the study ran to its end (terminated or errored).

    False after an interruption (Ctrl-C makes ``Tuner.fit`` return early):
    the study is then resumable with :func:`resume_study`.
    """
    done = results.num_terminated + results.num_errors
    return done == len(results) and len(results) >= count_trials(cfg)


def _finish(study_dir: str, results: Any, cfg: StudyConfig) -> None:
    """Record in ``study.json`` how the study ended: finished, or interrupted (resumable)."""
    complete = is_complete(results, cfg)

    def finish(info: dict[str, Any]) -> None:
        if not complete:  # Ctrl-C: analysis shows the open trials as interrupted, not running
            info["interrupted_at"] = _now()
            return
        info.pop("interrupted_at", None)
        info["finished_at"] = _now()
        info["trials"] = {"total": len(results), "errors": results.num_errors}

    _update_info(study_dir, finish)


def _mark_resumed(info: dict[str, Any], command: Sequence[str] | None) -> None:
    info.pop("finished_at", None)
    info.pop("interrupted_at", None)
    info.setdefault("resumed", []).append(
        {"at": _now(), "command": list(sys.argv if command is None else command)}
    )


def _update_info(study_dir: str, change: Callable[[dict[str, Any]], None]) -> None:
    text = _read_text(study_dir, "study.json")
    info = json.loads(text) if text else {}
    change(info)
    _write_json(study_dir, info)


def _write_json(study_dir: str, info: dict[str, Any]) -> None:
    _write_text(study_dir, "study.json", json.dumps(info, indent=2, default=str) + "\n")


def _write_text(directory: str, filename: str, text: str) -> None:
    if _is_uri(directory):
        with _remote(directory) as (fs, path):
            fs.create_dir(path, recursive=True)
            with fs.open_output_stream(f"{path}/{filename}") as f:
                f.write(text.encode("utf-8"))
        return
    os.makedirs(directory, exist_ok=True)
    target = os.path.join(directory, filename)
    tmp = f"{target}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, target)  # readers (analysis of a live study) never see half a file


def _read_text(directory: str, filename: str) -> str | None:
    if _is_uri(directory):
        with _remote(directory) as (fs, path):
            try:
                with fs.open_input_stream(f"{path}/{filename}") as f:
                    return f.read().decode("utf-8")
            except FileNotFoundError:
                return None
    try:
        with open(os.path.join(directory, filename), encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _exists(path: str) -> bool:
    if _is_uri(path):
        import pyarrow.fs

        with _remote(path) as (fs, inner):
            return fs.get_file_info(inner).type != pyarrow.fs.FileType.NotFound
    return os.path.exists(path)


@contextlib.contextmanager
def _remote(uri: str) -> Iterator[tuple[Any, str]]:
    """A pyarrow file system and path for a URI; its failures (credentials,
    network, unknown bucket) become one-line launch errors."""
    import pyarrow.fs

    try:
        fs, path = pyarrow.fs.FileSystem.from_uri(uri)
        yield fs, path.rstrip("/")
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise StudyLaunchError(f"storage {uri}: {reason}") from None


def _absolute_paths(settings: dict[str, Any]) -> dict[str, Any]:
    """Resolve a relative ``data_dir`` against the launch directory: trials run
    in their own working directories (docs/contract.md)."""
    out = dict(settings)
    data_dir = out.get("data_dir")
    relative = isinstance(data_dir, str) and not os.path.isabs(data_dir)
    if relative and not _is_uri(data_dir) and not data_dir.startswith("~"):
        out["data_dir"] = os.path.abspath(data_dir)
    return out


@contextlib.contextmanager
def _journal_override(path: str | None) -> Iterator[None]:
    from study import _searchers

    old = _searchers.journal_override
    _searchers.journal_override = path
    try:
        yield
    finally:
        _searchers.journal_override = old


def _is_uri(path: str) -> bool:
    return bool(_URI.match(path))


def _join(root: str, name: str) -> str:
    return f"{root.rstrip('/')}/{name}" if _is_uri(root) else os.path.join(root, name)


def _parent(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[0] if _is_uri(path) else os.path.dirname(path)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
