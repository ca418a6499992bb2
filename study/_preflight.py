"""Checks before a study launches: each refuses a study that cannot run, in one line.

Before Ray starts (:func:`check_launch`): a Ray cluster answers at
``--address`` (a TCP probe with a short timeout: ``ray.init`` retries an
unreachable address for minutes), the CPUs and GPUs of this machine when
Ray is to start here (:func:`check_local_resources`), the datasets are on disk or downloadable
(an offline machine is detected by a short probe, not waited for), and the
storage is writable. After connecting, before the Tuner
(:func:`check_resources`): the cluster has the CPUs and GPUs one trial asks
for (otherwise Ray would wait for them forever). Nothing is written by any
check: a refused study leaves no directory behind.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from study import _storage
from study._errors import StudyLaunchError
from study._schema import StudyConfig

__all__ = [
    "ADDRESS_TIMEOUT_S",
    "STORAGE_TIMEOUT_S",
    "check_address",
    "check_datasets",
    "check_launch",
    "check_local_resources",
    "check_resources",
    "check_storage_writable",
]

#: Seconds the TCP probe of ``--address`` waits for the cluster.
ADDRESS_TIMEOUT_S = 5.0
#: Seconds the probe of a storage URI waits for its bucket or root.
STORAGE_TIMEOUT_S = 5.0
# Ray's default GCS port, for an address given without one.
_GCS_PORT = 6379
# Ray Client's default port (ray://host).
_CLIENT_PORT = 10001


def check_launch(
    cfg: StudyConfig, *, root: str, address: str | None, settings: Mapping[str, Any]
) -> None:
    """Every check that needs no Ray: the address, the datasets, the storage.

    Args:
        cfg: The validated study.
        root: The storage root (:func:`study._storage.storage_root`).
        address: ``--address`` (None: an embedded instance).
        settings: The fixed trial settings with absolute paths.

    Raises:
        StudyLaunchError: One of them fails.
    """
    check_address(address)
    if address is None and not os.environ.get("RAY_ADDRESS"):
        check_local_resources(cfg)
    check_datasets(cfg, settings)
    check_storage_writable(root)


def check_address(address: str | None, timeout: float = ADDRESS_TIMEOUT_S) -> None:
    """Refuse ``--address`` when nothing answers there within ``timeout`` seconds.

    ``auto`` (and no address) are left to Ray, which answers at once when it
    finds no cluster.

    Raises:
        StudyLaunchError: No TCP connection to the address's host and port.
    """
    from trainables._ondisk import host_reachable

    if not address or address == "auto":
        return
    scheme = "ray" if address.startswith("ray://") else "gcs"
    try:
        parts = urlsplit(address if "://" in address else f"gcs://{address}")
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise StudyLaunchError(f"--address {address}: {exc}") from None
    if not host:
        raise StudyLaunchError(f"--address {address}: allowed: auto, HOST:PORT, ray://HOST:PORT")
    port = port or (_CLIENT_PORT if scheme == "ray" else _GCS_PORT)
    why = host_reachable(host, port, timeout)
    if why is not None:
        raise StudyLaunchError(f"no Ray cluster answers at {address} ({host}:{port}: {why})")


def check_datasets(cfg: StudyConfig, settings: Mapping[str, Any]) -> None:
    """Refuse a study whose datasets are neither on disk nor downloadable.

    Every dataset the study can use is checked: the fixed one, or each value
    of a swept ``dataset``; likewise for ``data_dir``.

    Raises:
        StudyLaunchError: The first dataset that cannot be loaded, and why.
    """
    from trainables._ondisk import dataset_missing

    datasets = _values(cfg, "dataset", settings)
    data_dirs = _values(cfg, "data_dir", settings)
    for dataset in datasets:
        for data_dir in data_dirs:
            why = dataset_missing({"dataset": dataset, "data_dir": data_dir})
            if why is not None:
                raise StudyLaunchError(why)


def check_storage_writable(root: str) -> None:
    """Refuse a local storage root that this user cannot create or write.

    Checked without writing: the deepest existing directory on the way to
    ``root`` must be writable. A URI is probed with one short request
    (:func:`study._storage.check_reachable`: unknown bucket, no credentials,
    unreachable endpoint), within :data:`STORAGE_TIMEOUT_S` seconds.

    Raises:
        StudyLaunchError: ``root`` (or the directory it would be created in)
            is not writable, or a file is in its way.
    """
    if _storage.is_uri(root):
        _storage.check_reachable(root, STORAGE_TIMEOUT_S)
        return
    path = os.path.abspath(root)
    while not os.path.exists(path):
        up = os.path.dirname(path)
        if up == path:
            break
        path = up
    if not os.path.isdir(path):
        raise StudyLaunchError(f"storage {root}: {path} is a file, not a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise StudyLaunchError(f"storage {root} is not writable: no write permission on {path}")


def check_resources(cfg: StudyConfig) -> None:
    """Refuse a study whose trial needs more CPUs or GPUs than the connected
    cluster has (Ray would keep the trials pending forever).

    Raises:
        StudyLaunchError: The cluster lacks them; says what it has.
    """
    import ray

    have = ray.cluster_resources()
    for key, need in (("GPU", cfg.resources.gpu), ("CPU", cfg.resources.cpu)):
        if need and float(have.get(key, 0)) < float(need):
            raise StudyLaunchError(
                f"resources.{key.lower()}: each trial asks for {need:g} {key}, the Ray "
                f"cluster has {float(have.get(key, 0)):g}"
            )


def check_local_resources(cfg: StudyConfig) -> None:
    """Refuse, before Ray starts, a study whose trial needs more CPUs or GPUs than
    this machine has (the embedded instance gets exactly these).

    GPUs are counted as Ray counts NVIDIA ones, without importing anything:
    ``CUDA_VISIBLE_DEVICES`` when set, else the ``/dev/nvidiaN`` devices.

    Raises:
        StudyLaunchError: This machine lacks them.
    """
    have = {"CPU": float(os.cpu_count() or 1), "GPU": float(local_gpus())}
    for key, need in (("GPU", cfg.resources.gpu), ("CPU", cfg.resources.cpu)):
        if need and have[key] < float(need):
            raise StudyLaunchError(
                f"resources.{key.lower()}: each trial asks for {need:g} {key}, this "
                f"machine has {have[key]:g} (use --address to run on a cluster)"
            )


def local_gpus() -> int:
    """NVIDIA GPUs visible to a Ray instance started here."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    try:
        names = os.listdir("/dev")
    except OSError:
        return 0
    return sum(1 for n in names if n.startswith("nvidia") and n[len("nvidia") :].isdigit())


def _values(cfg: StudyConfig, key: str, settings: Mapping[str, Any]) -> list[Any]:
    for param in cfg.space:
        if param.name == key and hasattr(param.dist, "values"):
            return list(param.dist.values)
    return [settings.get(key)]
