"""Running ``xsam-tune`` in a subprocess for the console, interruption and fail-fast tests.

Each driver starts its own embedded Ray (the pytest process holds the
session's, ``tests/conftest.py``) in a private short temp dir, with the
repository on ``PYTHONPATH`` so its workers import
``tests.study._console_trainables``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
#: ``--trainable`` of the light test trainable.
SLOW_ROWS = "tests.study._console_trainables:slow_rows"


def command(*args: str) -> list[str]:
    """``xsam-tune ARGS`` as this interpreter runs it."""
    return [sys.executable, "-m", "study.cli", *args]


@contextmanager
def driver_env(tmp_path: Path, **extra: str) -> Iterator[dict[str, str]]:
    """Environment of a driver: private Ray temp dir and cache, the repo importable."""
    ray_tmp = tempfile.mkdtemp(prefix="xc-", dir="/tmp")  # short: Ray's socket paths
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AIR_NEW_OUTPUT")}
    env.update(
        XSAM_TUNE_RAY_TMP=ray_tmp,
        XDG_CACHE_HOME=str(tmp_path / "cache"),
        RAY_USAGE_STATS_ENABLED="0",
        PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
        PYTHONUNBUFFERED="1",
        **extra,
    )
    try:
        yield env
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def tiny_study(
    folder: Path,
    name: str,
    data_dir: Path,
    *,
    epochs: int = 2,
    seeds: tuple[int, ...] = (0,),
    **top: Any,
) -> Path:
    """A grid study over optimizer × seed on the light trainable; returns its file."""
    study = {
        "name": name,
        "trial": {"dataset": "fake", "model": "mlp", "epochs": epochs, "data_dir": str(data_dir)},
        "space": {"optimizer": {"grid": ["sgd", "sam", "xsam"]}, "seed": {"grid": list(seeds)}},
        "search": {"algorithm": "grid"},
        "metric": {"name": "test_acc", "mode": "max"},
        **top,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def wait_for_first_report(proc: subprocess.Popen, reports: Path, log: Path, timeout: float) -> None:
    """Block until the light trainable has reported a row (``reports`` is not empty),
    failing with the driver's log if it exits or ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    while not (reports.exists() and reports.read_text().strip()):
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
