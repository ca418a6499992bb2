"""Whether a dataset can be loaded, checked without loading or downloading it.

Torch-free on purpose: the study driver calls :func:`dataset_missing` before
it starts Ray, so that a study on data that is neither on disk nor
downloadable fails in a second instead of in every trial. The layout it
checks is the one the loaders of :mod:`trainables.data` read.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "CIFAR_FILES",
    "DOWNLOAD_HOSTS",
    "TINY_DIR",
    "dataset_missing",
    "default_data_dir",
    "host_reachable",
    "resolve_data_dir",
]

#: CIFAR: dataset → (the archive torchvision downloads, the folder it extracts to).
CIFAR_FILES = {
    "cifar10": ("cifar-10-python.tar.gz", "cifar-10-batches-py"),
    "cifar100": ("cifar-100-python.tar.gz", "cifar-100-python"),
}
#: Tiny-ImageNet's folder under the data directory (never downloaded).
TINY_DIR = "tiny-imagenet-200"
#: Where a dataset that is not on disk is downloaded from (host, port).
DOWNLOAD_HOSTS = {"cifar10": ("www.cs.toronto.edu", 443), "cifar100": ("www.cs.toronto.edu", 443)}
#: Seconds to wait for a download host before calling the machine offline.
PROBE_TIMEOUT_S = 3.0


def dataset_missing(config: Mapping[str, Any], *, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why the dataset a trial config names cannot be loaded, or None if it can.

    Nothing is loaded or downloaded: the check looks for the files the loader
    reads and, when they are absent and the dataset can be downloaded, whether
    its download host answers within ``timeout`` seconds.

    Args:
        config: Trial settings: ``dataset`` and ``data_dir`` (null: the
            default data directory, as :func:`resolve_data_dir`).
        timeout: Seconds to wait for the download host.

    Returns:
        A one-line reason naming the dataset and the data directory, or None.
    """
    name = config.get("dataset") or "mnist1d"
    data_dir = resolve_data_dir(config)
    if name in CIFAR_FILES:
        archive, folder = CIFAR_FILES[name]
        if (data_dir / folder).is_dir() or (data_dir / archive).is_file():
            return None
        host, port = DOWNLOAD_HOSTS[name]
        why = host_reachable(host, port, timeout)
        if why is None:
            return None
        return (
            f"{name} is not in data directory {data_dir} and cannot be downloaded "
            f"({host}: {why}); put {archive} extracted under {data_dir} (so that "
            f"{data_dir / folder} exists) or set trial.data_dir"
        )
    if name == "tinyimagenet" and not (data_dir / TINY_DIR).is_dir():
        return (
            f"tinyimagenet is not in data directory {data_dir}: {data_dir / TINY_DIR} does "
            "not exist; unzip tiny-imagenet-200.zip there or set trial.data_dir"
        )
    # mnist1d is generated, digits ships with scikit-learn, fake is drawn.
    return None


def host_reachable(host: str, port: int, timeout: float) -> str | None:
    """None if a TCP connection to ``host:port`` opens within ``timeout`` seconds,
    else why not. Name resolution counts against the timeout too (it can hang
    for long on a machine without network)."""
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome.append(None)
        except OSError as exc:
            outcome.append(exc.strerror or type(exc).__name__)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        return f"no answer within {timeout:g} s"
    return outcome[0]


def default_data_dir() -> Path:
    """``$XSAM_DATA_DIR`` if set, else ``~/.cache/xsam-tune/data`` (``~`` expanded)."""
    env = os.environ.get("XSAM_DATA_DIR")
    return Path(env or "~/.cache/xsam-tune/data").expanduser()


def resolve_data_dir(config: Mapping[str, Any]) -> Path:
    """The config's ``data_dir`` (``~`` expanded, made absolute), or the default.

    Args:
        config: Trial config.

    Returns:
        Absolute path of the data directory (not created).
    """
    raw = config.get("data_dir")
    path = Path(str(raw)).expanduser() if raw else default_data_dir()
    return path.absolute()
