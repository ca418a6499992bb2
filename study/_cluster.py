"""The Ray connection of a study: an embedded loopback-only instance, or a cluster to join."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

from study._errors import StudyLaunchError
from study._kept_ray import KeptRay, find_kept, forwarded_env, use_auth_mode
from study._sharedfs import on_shared_filesystem
from study._storage import is_uri
from study._timing import mark

__all__ = ["LOOPBACK_ENV", "check_storage", "connect", "loopback_only", "ray_temp_dir"]

#: Ray's switch for "this platform runs clusters"; 0 makes a new node use 127.0.0.1.
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextlib.contextmanager
def connect(address: str | None, *, preload: str | None = None) -> Iterator[None]:
    """Connect to Ray for the duration of a study and disconnect from what we started.

    A running connection (tests, notebooks) is reused and left running. Without
    an address, the instance of ``xsam-tune ray start`` (:mod:`study._kept_ray`)
    is joined and left running when one runs; else an instance is started and
    stopped at the end.

    Args:
        address: Cluster to join (``auto``, ``host:port``, ``ray://…``); None
            starts an embedded instance with every CPU of this machine,
            reachable from this machine only (or joins the kept one).
        preload: ``module.function`` that Ray runs in each new worker of a
            local instance (its ``worker_process_setup_hook``): the trials'
            imports, done while the driver sets the study up. Not used when
            joining a cluster given by ``address``.

    Raises:
        StudyLaunchError: The cluster cannot be reached.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Trials checkpoint every epoch and num_to_keep forces an experiment
    # snapshot each time; on local storage that is cheap, so no warning.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    import ray

    if ray.is_initialized():
        mark("ray_up", how="in-process")
        yield
        return
    if address is None and os.environ.get("RAY_ADDRESS"):
        # Inside `ray job submit` (or with RAY_ADDRESS exported) ray.init joins
        # that cluster whatever we pass, and refuses the local-instance settings
        # below: join it on purpose.
        address = "auto"
    kept = _kept_instance() if address is None else None
    runtime_env = {"worker_process_setup_hook": preload} if preload else {}
    if kept is not None:
        how = "kept"
        # Its workers inherit the environment of `xsam-tune ray start`: pass ours on.
        env_vars = forwarded_env()
        use_auth_mode(kept)
        with loopback_only():
            try:
                ray.init(
                    address=kept.address,
                    log_to_driver=False,
                    logging_level=logging.ERROR,
                    runtime_env={**runtime_env, **({"env_vars": env_vars} if env_vars else {})}
                    or None,
                )
            except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
                raise StudyLaunchError(
                    f"cannot join the Ray instance of `xsam-tune ray start` at {kept.address}: "
                    f"{_first_line(exc)}; stop it with `xsam-tune ray stop`"
                ) from None
    elif address is None:
        how = "started"
        with loopback_only():
            ray.init(
                num_cpus=os.cpu_count(),
                include_dashboard=False,
                log_to_driver=False,
                # Quiet: e.g. the token-auth notice means nothing for a
                # loopback-only instance.
                logging_level=logging.ERROR,
                _temp_dir=ray_temp_dir(),
                runtime_env=runtime_env or None,
            )
    else:
        how = "joined"
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
            raise StudyLaunchError(
                f"cannot reach the Ray cluster at {address}: {_first_line(exc)}"
            ) from None
    mark("ray_up", how=how)
    try:
        yield
    finally:
        ray.shutdown()  # a kept instance or a cluster: disconnects, and leaves it running
        mark("ray_down", torch="torch" in sys.modules)  # the driver should never need it


def _kept_instance() -> KeptRay | None:
    """The instance of ``xsam-tune ray start``, if one runs; a stale record is said and dropped."""
    kept, why = find_kept()
    if why is not None:
        print(
            f"xsam-tune: not using the Ray instance of `xsam-tune ray start` ({why}); "
            "starting one for this run",
            file=sys.stderr,
        )
    elif kept is not None:
        print(
            f"xsam-tune: using the Ray instance of `xsam-tune ray start` at {kept.address} "
            "(left running; `xsam-tune ray stop` stops it)",
            file=sys.stderr,
        )
    return kept


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextlib.contextmanager
def loopback_only() -> Iterator[None]:
    """Make a new local Ray instance use 127.0.0.1 as its node address, so its
    GCS, raylet and workers listen on the loopback interface only.

    Ray has no public option for this. It picks the loopback address where it
    does not support clusters (macOS, Windows), decided by the environment
    variable :data:`LOOPBACK_ENV`: the processes ``ray.init`` starts read the
    variable, but this process read it once, when ``ray._private.ray_constants``
    was imported, into ``ENABLE_RAY_CLUSTER`` (which ``get_node_ip_address``
    consults). So both are set here, and restored after. The private constant
    is touched in this one place; ``tests/study/test_study_launch.py`` fails
    if Ray renames it or stops honouring it.
    """
    from ray._private import ray_constants

    old_env, old_flag = os.environ.get(LOOPBACK_ENV), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[LOOPBACK_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = old_flag
        if old_env is None:
            os.environ.pop(LOOPBACK_ENV, None)
        else:
            os.environ[LOOPBACK_ENV] = old_env


def ray_temp_dir() -> str:
    """Ray's temporary directory for an embedded instance (``$XSAM_TUNE_RAY_TMP`` wins):
    private to the user, checked, old sessions removed (:mod:`study._ray_tmp`)."""
    from study._ray_tmp import private_temp_dir

    return private_temp_dir()


def check_storage(root: str, allow_local: bool) -> None:
    """Refuse a local storage path that other nodes of the connected cluster cannot see.

    Raises:
        StudyLaunchError: ``root`` is local, not on a shared file system, the
            cluster has several live nodes and ``allow_local`` is False.
    """
    import ray

    if allow_local or is_uri(root):
        return
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) <= 1 or on_shared_filesystem(root):
        return
    raise StudyLaunchError(
        f"storage {root} is local to this machine, but the cluster has {len(nodes)} nodes: "
        "trials elsewhere could not write their results there; use a URI "
        "(s3://…, gs://…) or a shared file system, or pass --allow-local-storage if "
        "every node mounts it at the same path"
    )
