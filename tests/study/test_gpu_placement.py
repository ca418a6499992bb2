"""Shared GPUs: ``resources.gpu: 0.25`` places four trials on each GPU.

On this CPU machine the GPUs are Ray's declared resources
(``ray.init(num_gpus=2)`` in ``tests/study/_gpu_placement.py``): eight
trials at 0.25 GPU run at the same time, four on each of the two GPUs, each
with the ``CUDA_VISIBLE_DEVICES`` Ray gave it; torch sees no device behind
it, so the loop trains on the CPU and the rows say ``device: cpu`` (the first
trial on each GPU trains; the others report one row without torch). Where
torch does see a device the loop takes it (:func:`trainables.loop.pick_device`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.study._cli_driver import REPO, driver_env
from tests.study._engine import DRIVER_TIMEOUT, lines, outputs, write_study

TRIALS = 8


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="xg-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.ray
@pytest.mark.slow
def test_quarter_gpus_run_four_per_gpu(base: Path, mnist1d_dir: Path) -> None:
    name = "gpus"
    records = base / "records" / name
    records.mkdir(parents=True)
    (records / "barrier").write_text(str(TRIALS))  # all eight must run at once
    study = write_study(
        base,
        name,
        mnist1d_dir,
        space={"seed": {"grid": list(range(TRIALS))}},
        # the MLP: eight 1-D CNN epochs at once on two cores only added seconds
        trial={"epochs": 1, "model": "mlp"},
        extra={"resources": {"cpu": 1, "gpu": 0.25}},
    )
    storage = base / "studies"
    args = ["run", str(study), "--storage", str(storage), "-q"]
    args += ["--trainable", "tests.study._gpu_placement:train_recording_gpu"]
    with driver_env(base, XSAM_FAULTS_DIR=str(base / "records")) as env:
        proc = subprocess.run(
            [sys.executable, "-m", "tests.study._gpu_placement", "2", str(TRIALS), *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=DRIVER_TIMEOUT,
        )
    assert proc.returncode == 0, outputs(proc)

    placed = lines(records / "gpus.txt")
    assert len(placed) == TRIALS and len({p[0] for p in placed}) == TRIALS, placed
    for trial_id, visible, ids, _ in placed:
        # one GPU per trial, and the worker's CUDA_VISIBLE_DEVICES is that GPU
        assert ids in ("0", "1") and visible == ids, (trial_id, visible, ids)
    assert Counter(p[2] for p in placed) == {"0": 4, "1": 4}
    # all eight were placed at the same time: four at once on each GPU
    assert sorted(b[1] for b in lines(records / "barrier.txt")) == ["1"] * TRIALS

    # the first trial on each GPU trained with the real trainable, on the CPU
    trained = dict(lines(records / "trained.txt"))
    assert sorted(trained.values()) == ["0", "1"], trained
    trial_dirs = sorted(p for p in (storage / name).iterdir() if (p / "result.json").exists())
    assert len(trial_dirs) == TRIALS
    devices = {}
    for d in trial_dirs:
        rows = [json.loads(line) for line in (d / "result.json").read_text().splitlines()]
        devices[rows[-1]["trial_id"]] = [r.get("device") for r in rows]
    for trial_id, device in devices.items():
        # torch sees no GPU here; the other trials reported one row without torch
        assert device == (["cpu"] if trial_id in trained else [None]), (trial_id, device)


def test_loop_takes_cuda_only_when_torch_sees_a_device(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from trainables.loop import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == torch.device("cpu")
    assert pick_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == torch.device("cuda", 0)
    assert pick_device("cpu") == torch.device("cpu")
