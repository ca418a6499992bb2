"""Fixtures of the study-layer tests: study files, an isolated cache, Ray, and a
small function trainable for real Ray Tune runs.

``report_rows`` reports rows shaped like the metrics row of docs/contract.md
(the columns the tests read) with a checkpoint, and resumes from one. It
raises in epoch 2 of trials with ``steps == 2`` while ``<data_dir>/fail``
exists (the one channel from a test into a trial: trial configs are validated).
Ray workers cannot import this folder, so this module travels by value.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

#: A small valid grid study (fake data) that the tests mutate.
BASE: dict[str, Any] = {
    "name": "tiny",
    "trial": {
        "dataset": "fake",
        "model": "mlp",
        "fake_shape": [1, 8, 8],
        "epochs": 3,
        "batch_size": 32,
    },
    "space": {
        "optimizer": {"grid": ["sgd", "sam", "xsam"]},
        "steps": {"grid": [1, 2], "when": {"optimizer": ["sam", "xsam"]}},
        "seed": {"grid": [0, 1]},
    },
    "search": {"algorithm": "grid"},
    "metric": {"name": "test_acc", "mode": "max"},
}


@pytest.fixture
def base() -> dict[str, Any]:
    """A fresh copy of :data:`BASE`."""
    return copy.deepcopy(BASE)


@pytest.fixture
def write_study(tmp_path: Path) -> Callable[[dict[str, Any]], Path]:
    """Write a study mapping as YAML; returns the file."""
    counter = iter(range(1000))

    def write(data: dict[str, Any], name: str | None = None) -> Path:
        path = tmp_path / (name or f"study{next(counter)}.yaml")
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep ``last-study`` (and journals of remote studies) out of the real ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture
def ray_studies(ray_session: None) -> Iterator[None]:
    """The session's Ray instance (tests/conftest.py), able to run the test
    trainables: workers cannot import modules of the test folder, so theirs
    travels by value."""
    import ray

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield


@pytest.fixture
def trainable(ray_studies: None) -> Callable[[dict[str, Any]], None]:
    """:func:`report_rows`, with Ray ready to run it."""
    return report_rows


@pytest.fixture
def trainable_spec(ray_studies: None) -> str:
    """``--trainable`` value naming :func:`report_rows` (this module's import
    name depends on pytest's import mode)."""
    return f"{__name__}:report_rows"


def report_rows(config: dict[str, Any]) -> None:
    """Report ``epochs`` rows; accuracy depends on the swept settings."""
    from ray import tune

    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d, open(os.path.join(d, "state.json")) as f:
            start = json.load(f)["epoch"]
    for epoch in range(start + 1, config.get("epochs", 3) + 1):
        fail = os.path.join(str(config.get("data_dir") or "/nonexistent"), "fail")
        if config.get("steps") == 2 and epoch == 2 and os.path.exists(fail):
            raise RuntimeError("planned failure")
        steps = config.get("steps", 1)
        acc = 0.5 + 0.01 * epoch + 0.02 * steps + 0.1 * config.get("rho", 0.15)
        acc += {"sgd": 0.0, "sam": 0.03, "xsam": 0.05}.get(config.get("optimizer", "xsam"), 0)
        row = {
            "epoch": epoch,
            "test_acc": acc,
            "best_test_acc": acc,
            "test_loss": 1.0 - acc,
            "time_epoch": 0.1 * (steps + 1),
        }
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "state.json"), "w") as f:
                json.dump({"epoch": epoch}, f)
            tune.report(row, checkpoint=tune.Checkpoint.from_directory(d))
