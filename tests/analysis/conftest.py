"""Session fixtures: one real (tiny) study directory, and a partial copy of it.

``build_study`` is the only place that makes the study. It writes a tiny study
file and runs it through the real command line (``xsam-tune run``, i.e.
``study.cli.main``) with the real trainable (``trainables.tune.train_trial``)
on the suite's Ray instance: MNIST-1D, the 1-D CNN, 3 epochs. The tests read
only the directory it leaves, exactly as a user's ``xsam-tune results DIR``.

The study is a random search (``search.seed`` fixed) whose grids give every
combination and whose distributions are drawn once per combination:

* optimizer sgd/sam/xsam × k = 1, 2 (k for sam and xsam only) × seeds 0, 1;
  ρ, ρm and the α-refresh period drawn per trial (importances, sensitivity);
* ``diagnostics: true`` for sgd and sam at seed 0, so those trials save α
  probe curves too (fidelity data beyond XSAM);
* one more sgd trial at seed 1 with a huge learning rate: its loss is NaN in
  the first epoch, so it ends ``diverged`` after one row;
* one more sam k=2 seed-1 trial on ``tinyimagenet``, whose folder in the data
  directory is empty (so the launcher's pre-flight check, which looks for the
  folder, lets the study start): the worker raises ``DatasetError`` before the
  first epoch, so the trial is ``errored`` (``max_failures: 0``: no retry) and
  the run exits 1.

12 trials in all: 10 finished, 1 diverged, 1 errored.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import yaml

# Tests restate these numbers (12 trials, 3 epochs, …): keep them in step.
STUDY_NAME = "tiny"
OPTIMIZERS = ("sgd", "sam", "xsam")
STEPS = (1, 2)
SEEDS = (0, 1)
EPOCHS = 3
LR = 0.05
DIVERGE_LR = 1.0e6  # sgd, seed 1: NaN loss within the first epoch
DIVERGES = {"optimizer": "sgd", "seed": 1, "lr": DIVERGE_LR}
RAISES = {"optimizer": "sam", "steps": 2, "seed": 1, "dataset": "tinyimagenet"}
DIAGNOSED = {"optimizer": ("sgd", "sam"), "seed": 0}  # α probes without stepping along them
N_TRIALS = 12  # 10 finished, 1 diverged, 1 errored


def study_spec(data_dir: Path) -> dict[str, Any]:
    """The tiny study file as a mapping."""
    return {
        "name": STUDY_NAME,
        "description": "analysis test study: sgd/sam/xsam x k x seeds on MNIST-1D",
        "trial": {
            "dataset": "mnist1d",
            "model": "cnn1d",
            "data_dir": str(data_dir),
            "epochs": EPOCHS,
            "batch_size": 500,
            "lr": LR,
            "alpha_max": 2.0,
            "alpha_delta": 0.1,
            "refresh_unit": "epoch",
            "timing": True,
            "device": "cpu",
            "threads": 1,
        },
        "space": {
            "optimizer": {"grid": list(OPTIMIZERS)},
            "steps": {"grid": list(STEPS), "when": {"optimizer": ["sam", "xsam"]}},
            "seed": {"grid": list(SEEDS)},
            "rho": {"loguniform": [0.05, 0.5]},
            "rho_max": {"uniform": [0.1, 0.5]},
            "refresh_every": {"choice": [1, 2]},
            "diagnostics": {
                "grid": [True],
                "when": {"optimizer": list(DIAGNOSED["optimizer"]), "seed": DIAGNOSED["seed"]},
            },
            "lr": {
                "grid": [LR, DIVERGE_LR],
                "when": {"optimizer": DIVERGES["optimizer"], "seed": DIVERGES["seed"]},
            },
            "dataset": {
                "grid": ["mnist1d", RAISES["dataset"]],
                "when": {k: RAISES[k] for k in ("optimizer", "steps", "seed")},
            },
        },
        # random: the grids are walked in full, the distributions drawn per trial
        "search": {"algorithm": "random", "num_samples": 1, "seed": 0},
        "metric": {"name": "test_acc", "mode": "max"},
        "scheduler": {"name": "none"},
        "resources": {"cpu": 1, "gpu": 0},
        "max_failures": 0,
        # No checkpoints: the tests read rows only, and one per epoch (each forcing
        # Ray to save its experiment state) made the build take 1.4 times as long.
        "checkpoint_every": 0,
        "storage": "./studies",
    }


@contextmanager
def _env(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def build_study(storage: Path, mnist1d_dir: Path) -> Path:
    """Run the tiny study under ``storage`` with ``xsam-tune run`` and return
    its directory (the suite's Ray instance is used when one is running);
    ``mnist1d_dir`` holds mnist1d's cache file (the session's, tests/conftest.py)."""
    from study.cli import main

    work = storage.parent / f"{storage.name}-work"
    data_dir = work / "data"
    (data_dir / "mnist1d").mkdir(parents=True)
    shutil.copy(mnist1d_dir / "mnist1d" / "mnist1d.npz", data_dir / "mnist1d" / "mnist1d.npz")
    # present for the pre-flight check, empty for the worker: one errored trial
    (data_dir / "tiny-imagenet-200").mkdir()
    spec = work / f"{STUDY_NAME}.yaml"
    spec.write_text(yaml.safe_dump(study_spec(data_dir), sort_keys=False))
    argv = ["run", str(spec), "--storage", str(storage), "--name", STUDY_NAME, "-q"]
    out = StringIO()
    # Keep `xsam-tune last-study` of the user's cache out of it.
    with _env(XDG_CACHE_HOME=str(work / "cache")), redirect_stdout(out):
        code = main(argv)
    # 1: the study ran to the end and one trial failed (the tinyimagenet one).
    assert code == 1, f"xsam-tune run exited {code}:\n{out.getvalue()}"
    study_dir = storage / STUDY_NAME
    assert (study_dir / "study.json").exists() and (study_dir / "study.yaml").exists()
    return study_dir


def make_partial(src: Path, dst: Path) -> Path:
    """A copy of ``src`` as it looks mid-run: the driver has not finished,
    one trial has one epoch, one has no result.json yet, one ends in a
    half-written line; Ray's experiment state marks those three RUNNING."""
    shutil.copytree(src, dst)
    info = json.loads((dst / "study.json").read_text())
    info.pop("finished_at", None)
    (dst / "study.json").write_text(json.dumps(info, indent=2))
    finished = []
    for d in sorted(p for p in dst.iterdir() if p.is_dir()):
        lines = (d / "result.json").read_text().splitlines() if (d / "result.json").exists() else []
        if len(lines) == EPOCHS:
            finished.append((d, lines))
    (one, one_lines), (fresh, _), (torn, torn_lines) = finished[0], finished[1], finished[2]
    (one / "result.json").write_text(one_lines[0] + "\n")
    for name in ("result.json", "progress.csv"):
        (fresh / name).unlink()
    for ckpt in fresh.glob("checkpoint_*"):
        shutil.rmtree(ckpt)
    (torn / "result.json").write_text("\n".join(torn_lines[:2]) + "\n" + torn_lines[2][:40])
    running = {one.name, fresh.name, torn.name}
    marked = 0
    for f in dst.glob("experiment_state-*.json"):
        state = json.loads(f.read_text())
        for entry in state["trial_data"]:
            head = json.loads(entry[0])
            if head.get("relative_logdir") in running:
                head["status"] = "RUNNING"
                entry[0] = json.dumps(head)
                marked += 1
        f.write_text(json.dumps(state))
    assert marked >= len(running), "Ray's experiment state no longer names trial folders"
    return dst


@pytest.fixture(scope="session")
def study_dir(
    ray_session: None, mnist1d_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A finished tiny study (built once per session, on the suite's Ray instance)."""
    return build_study(tmp_path_factory.mktemp("studies"), mnist1d_dir)


@pytest.fixture(scope="session")
def partial_dir(study_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny study as it looks while running (or after a driver crash)."""
    return make_partial(study_dir, tmp_path_factory.mktemp("partial") / STUDY_NAME)


@pytest.fixture
def copy(study_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny study without its analysis cache, to damage or extend."""
    root = tmp_path / "tiny"
    shutil.copytree(study_dir, root, ignore=shutil.ignore_patterns(".cache"))
    return root
