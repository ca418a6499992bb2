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

__all__ = [
    "IDLE_WORKER_MS",
    "LOOPBACK_ENV",
    "TUNE_ACTOR_ENV",
    "check_storage",
    "connect",
    "inherited_setup_hook",
    "loopback_only",
    "ray_temp_dir",
    "trials_on_first_workers",
]

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
            local instance (a ``worker_process_setup_hook``): the trials'
            imports, done while the driver sets the study up. An instance
            started here passes it through the environment its workers inherit
            (:func:`inherited_setup_hook`), and its trials run in the workers
            Ray starts as the driver connects (:func:`trials_on_first_workers`).
            Not used when joining a cluster given by ``address``.

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
    if kept is not None:
        how = "kept"
        # Its workers inherit the environment of `xsam-tune ray start`: pass ours on.
        # (Its workers start when Tune asks for them, so the job's runtime
        # environment costs no prestarted worker here.)
        env_vars = forwarded_env()
        runtime_env = {"worker_process_setup_hook": preload} if preload else {}
        use_auth_mode(kept)
        # Ray Tune's import (1-2 s) while joining: the trials' workers start only
        # when the Tuner asks, so here the driver is what the first trial waits for.
        with loopback_only(), _importing("ray.tune"):
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
        with loopback_only(), inherited_setup_hook(preload), _env(TUNE_ACTOR_ENV):
            inherited = dict(os.environ)  # what the instance's workers inherit
            ray.init(
                num_cpus=os.cpu_count(),
                include_dashboard=False,
                log_to_driver=False,
                # Quiet: e.g. the token-auth notice means nothing for a
                # loopback-only instance.
                logging_level=logging.ERROR,
                _temp_dir=ray_temp_dir(),
                # Ray stops an idle worker after 1 s once the free CPUs do not
                # need it, and the trials' placement groups take every CPU just
                # before their actors ask for workers: the first workers would
                # be stopped unused (seen in the raylet's log) and new ones started.
                _system_config={"idle_worker_killing_time_threshold_ms": IDLE_WORKER_MS},
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
        if how == "started":
            with trials_on_first_workers(inherited):
                yield
        else:
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


#: How long an idle worker of an instance we start lives past Ray's need for it
#: (Ray's default: 1 s), so that the trials find the first workers still there.
IDLE_WORKER_MS = 120_000
#: What Ray Tune gives each trial actor in its runtime environment (its
#: ``class_cache.DEFAULT_ENV_VARS``): an instance we start has it in its
#: workers' environment instead (:func:`trials_on_first_workers`).
TUNE_ACTOR_ENV = {"PL_DISABLE_FORK": "1"}


@contextlib.contextmanager
def trials_on_first_workers(inherited: dict[str, str]) -> Iterator[None]:
    """Let Tune's trial actors run in the workers Ray starts as the driver connects.

    Ray starts one worker per CPU of a new instance with an empty runtime
    environment, and gives a task or actor only a worker started with the
    same runtime environment. Ray Tune creates its trial actors with
    ``runtime_env={"env_vars": ...}`` (``ray.tune.execution.class_cache``:
    ``PL_DISABLE_FORK=1``, and the driver's values of a few variables it
    propagates), so without this the first workers idle, are stopped as
    surplus, and every trial waits for a new worker and its imports
    (measured: 4 s after the Tuner's start at load 1.2). The workers of an
    instance we started inherited this process's environment (``inherited``,
    :data:`TUNE_ACTOR_ENV` set before ``ray.init``), so Tune is left to pass
    only the variables whose value differs from the inherited one: none in the
    usual case, and an empty ``env_vars`` is the same runtime environment as
    none. Ray Tune's two module constants are replaced for the duration of
    the connection and restored after; ``tests/study/test_study_start.py``
    fails if Ray renames them or a trial stops landing on those workers.
    """
    from ray.tune.execution import class_cache

    defaults, propagated = class_cache.DEFAULT_ENV_VARS, class_cache.ENV_VARS_TO_PROPAGATE
    class_cache.DEFAULT_ENV_VARS = {k: v for k, v in defaults.items() if inherited.get(k) != v}
    class_cache.ENV_VARS_TO_PROPAGATE = {
        k for k in propagated if os.environ.get(k) != inherited.get(k)
    }
    try:
        yield
    finally:
        class_cache.DEFAULT_ENV_VARS = defaults
        class_cache.ENV_VARS_TO_PROPAGATE = propagated


@contextlib.contextmanager
def _importing(module: str) -> Iterator[None]:
    """Import ``module`` in a background thread for the duration of the block, and
    wait for it at the end (a failed import is left for its first real use).

    Only around ``ray.init`` joining an instance, which waits on that instance
    and imports a few modules of its own (8, none of Ray Tune's, measured).
    """
    import importlib
    import threading

    def run() -> None:
        with contextlib.suppress(Exception):
            importlib.import_module(module)

    thread = threading.Thread(target=run, name=f"import {module}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join()


@contextlib.contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    """Set the variables of ``values`` that are not set, and unset them after."""
    added = [k for k in values if k not in os.environ]
    os.environ.update({k: values[k] for k in added})
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


@contextlib.contextmanager
def inherited_setup_hook(preload: str | None) -> Iterator[None]:
    """Give the workers of the instance ``ray.init`` starts the setup hook ``preload``
    through the environment they inherit, not through the job's runtime environment.

    Ray starts one worker per CPU as the first driver connects, with an empty
    runtime environment; a job whose runtime environment is not empty (a
    ``worker_process_setup_hook`` there adds a variable to it) cannot use
    them, so Ray stops them as surplus and starts new ones only when Tune asks
    for its first trial actors (measured: the trials ran in workers started
    4 s after the Tuner, the prestarted ones were stopped unused). Ray's
    workers run the hook named by the variable behind
    ``ray_constants.WORKER_PROCESS_SETUP_HOOK_ENV_VAR`` (how the runtime
    environment passes it on); set in this process while ``ray.init`` starts
    the raylet, every worker of the instance inherits it, the prestarted ones
    included, and the job keeps an empty runtime environment. The private
    constant is read in this one place; ``tests/study/test_study_start.py``
    fails if Ray stops honouring it.
    """
    if not preload:
        yield
        return
    from ray._private import ray_constants

    name = ray_constants.WORKER_PROCESS_SETUP_HOOK_ENV_VAR
    old = os.environ.get(name)
    os.environ[name] = preload
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


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
