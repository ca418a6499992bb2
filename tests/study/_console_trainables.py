"""Light trainables (no torch) for the console, interruption and fault tests.

Ray workers of a driver run in a subprocess import this module by name
(``--trainable tests.study._console_trainables:FUNC`` with the repository on
``PYTHONPATH``), so it imports nothing of the test folder. Every report is
recorded as a line ``<trial_id> <epoch>`` in ``<data_dir>/reports.txt``
and every start as ``start <trial_id> <checkpoint epoch>`` in
``<data_dir>/starts.txt`` (``data_dir`` is the test's channel into the trial).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from typing import Any

from ray import tune

from xsam_contract import ConfigError


def slow_rows(config: dict[str, Any]) -> None:
    """Report ``epochs`` rows, one every ``$XSAM_TEST_EPOCH_S`` seconds (0.2),
    each with a checkpoint; resumes from the last one.

    ``optimizer: sgd`` with ``seed: 1`` diverges in epoch 1 (reports
    ``diverged: true`` and returns, as the loop does). ``optimizer: sam`` with
    ``seed: 1`` raises a ``ConfigError`` (bad input: not worth a retry) and
    ``optimizer: xsam`` with ``seed: 1`` a ``RuntimeError`` (worth one), when
    ``<data_dir>/fail`` exists.
    """
    trial_id = tune.get_context().get_trial_id()
    data_dir = str(config.get("data_dir") or tempfile.gettempdir())
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d, open(os.path.join(d, "state.json")) as f:
            start = json.load(f)["epoch"]
    _append(data_dir, "starts.txt", f"start {trial_id} {start}")
    delay = float(os.environ.get("XSAM_TEST_EPOCH_S", "0.2"))
    optimizer, seed = config.get("optimizer"), config.get("seed")
    failing = os.path.exists(os.path.join(data_dir, "fail")) and seed == 1
    if failing and optimizer == "sam":
        raise ConfigError("rho", config.get("rho"), "a value this trainable accepts")
    if failing and optimizer == "xsam":
        raise RuntimeError("a worker hiccup")
    for epoch in range(start + 1, int(config.get("epochs", 3)) + 1):
        time.sleep(delay)
        diverged = optimizer == "sgd" and seed == 1
        acc = 0.5 + 0.05 * epoch + (0.02 if optimizer == "xsam" else 0.0) + 0.001 * (seed or 0)
        row = {
            "epoch": epoch,
            "test_acc": float("nan") if diverged else acc,
            "test_loss": float("nan") if diverged else 1.0 - acc,
            "diverged": diverged,
        }
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "state.json"), "w") as f:
                json.dump({"epoch": epoch}, f)
            tune.report(row, checkpoint=tune.Checkpoint.from_directory(d))
        _append(data_dir, "reports.txt", f"{trial_id} {epoch}")
        if diverged:
            return


def _append(data_dir: str, name: str, line: str) -> None:
    os.makedirs(data_dir, exist_ok=True)
    with open(os.path.join(data_dir, name), "a", encoding="utf-8") as f:
        f.write(line + "\n")
