"""Running ``xsam-tune`` in a subprocess: the one way the study tests start a driver.

:func:`run` runs one to its end, :func:`background` starts one whose output
goes to a log file (and kills it on the way out), :func:`interrupt_after_first_report`
sends it Ctrl-C once a trial has reported. With :func:`driver_env` (the
console, interruption, fail-fast and object-storage tests) each driver starts
its own embedded Ray (the pytest process holds the session's,
``tests/conftest.py``) in a private short temp dir, with the repository on
``PYTHONPATH`` so its workers import ``tests.study._console_trainables``; the
engine tests (``tests/study/_engine.py``) join clusters of their own.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
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


def run(
    args: Sequence[str], env: dict[str, str], *, timeout: float, cwd: Path = REPO
) -> subprocess.CompletedProcess:
    """Run ``xsam-tune ARGS`` to its end, its output captured (killed after ``timeout`` s)."""
    return subprocess.run(
        command(*args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@contextmanager
def background(
    args: Sequence[str], env: dict[str, str], log: Path, *, cwd: Path = REPO
) -> Iterator[subprocess.Popen]:
    """``xsam-tune ARGS`` running in the background, its output going to ``log`` (a
    pipe nobody reads could fill up and stall it); killed on the way out if alive."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command(*args), cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


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


def interrupt_after_first_report(
    proc: subprocess.Popen, reports: Path, log: Path, timeout: float
) -> int:
    """Ctrl-C (SIGINT) to the driver once the light trainable has reported a row;
    returns the driver's exit code (waiting at most ``timeout`` seconds)."""
    wait_for_first_report(proc, reports, log, timeout)
    proc.send_signal(signal.SIGINT)
    return proc.wait(timeout=timeout)


def closing_rows(text: str) -> list[list[str]]:
    """The rows of a driver's closing table (after its ``trial status epochs`` header),
    each split into words."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.split()[:3] == ["trial", "status", "epochs"])
    rows = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        rows.append(line.split())
    return rows
