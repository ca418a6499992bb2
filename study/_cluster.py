"""The Ray connection of a study: an embedded loopback-only instance, or a cluster to join."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

from study._errors import StudyLaunchError
from study._sharedfs import on_shared_filesystem
from study._storage import is_uri

__all__ = ["LOOPBACK_ENV", "check_storage", "connect", "loopback_only", "ray_temp_dir"]

#: Ray's switch for "this platform runs clusters"; 0 makes a new node use 127.0.0.1.
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextlib.contextmanager
def connect(address: str | None) -> Iterator[None]:
    """Connect to Ray for the duration of a study and disconnect from what we started.

    A running connection (tests, notebooks) is reused and left running.

    Args:
        address: Cluster to join (``auto``, ``host:port``, ``ray://…``); None
            starts an embedded instance with every CPU of this machine,
            reachable from this machine only.

    Raises:
        StudyLaunchError: The cluster cannot be reached.
    """
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
        with loopback_only():
            ray.init(
                num_cpus=os.cpu_count(),
                include_dashboard=False,
                log_to_driver=False,
                # Quiet: e.g. the token-auth notice means nothing for a
                # loopback-only instance.
                logging_level=logging.ERROR,
                _temp_dir=ray_temp_dir(),
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
