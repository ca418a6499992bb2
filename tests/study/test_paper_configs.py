"""configs/paper/: one study file per table of the paper, with the authors' settings.

Every file validates through the command line (``xsam-tune run FILE --dry-run``),
holds the trials its table needs, and every trial gets the hyperparameters of
../shared/docs/xsam-algorithm.md (read back from the parsed, expanded config).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from study.cli import main
from study.config import load_study
from study.space import count_trials, expand_grid
from trainables.loop import validate_trial_config

PAPER = Path(__file__).resolve().parents[2] / "configs" / "paper"
FILES = sorted(PAPER.glob("*.yaml"))

MAIN_OPTIMIZERS = ("sgd", "sam", "gsam", "wsam", "xsam")
SEEDS = (0, 1, 2)
MAIN = {  # file: (dataset, model)
    "main_cifar10_resnet18.yaml": ("cifar10", "resnet18"),
    "main_cifar100_resnet18.yaml": ("cifar100", "resnet18"),
    "main_cifar100_densenet121.yaml": ("cifar100", "densenet121"),
    "main_tinyimagenet_resnet18.yaml": ("tinyimagenet", "resnet18"),
}
MULTISTEP = "multistep_cifar100_resnet18.yaml"
TIMING = "timing.yaml"
TIMING_PAIRS = (("vgg11_bn", "cifar10"), ("resnet18", "cifar100"), ("densenet121", "cifar100"))

#: The authors' settings (CIFAR, 200 epochs; the paper's tables use batch 125).
AUTHORS = {
    "base_optimizer": "sgd",
    "lr": 0.05,
    "momentum": 0.9,
    "weight_decay": 1e-3,
    "nesterov": False,
    "warmup_epochs": 0,  # cosine annealing from the first step
    "rho": 0.15,
    "rho_max": 0.3,
    "alpha_max": 2.0,
    "alpha_delta": 0.1,
    "alpha": 1.0,
    "refresh_every": 1,
    "refresh_unit": "epoch",  # on the first minibatch of every epoch
    "augment": True,  # crop + flip + Cutout
    "adaptive": False,
    "precision": "fp32",
    "batch_size": 125,
}


def _trials(name: str) -> list[dict]:
    """Every trial config of a file, swept values merged and defaults filled in."""
    cfg = load_study(PAPER / name)
    return [validate_trial_config(t) for t in expand_grid(cfg)]


def test_one_file_per_table() -> None:
    assert [f.name for f in FILES] == sorted([*MAIN, MULTISTEP, TIMING])


@pytest.mark.parametrize("path", FILES, ids=[f.name for f in FILES])
def test_validates_through_the_cli(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry run: nothing started" in out
    # As the README runs it: data directory and storage on the command line.
    argv = ["run", str(path), "--set", "trial.data_dir=/data", "--storage", "s3://bucket/xsam"]
    assert main([*argv, "--dry-run"]) == 0
    assert "s3://bucket/xsam/" in capsys.readouterr().out


@pytest.mark.parametrize("path", FILES, ids=[f.name for f in FILES])
def test_header_names_the_table_and_the_command(path: Path) -> None:
    lines = path.read_text().splitlines()
    header = []
    for line in lines:
        if not line.startswith("#"):
            break
        header.append(line)
    text = "\n".join(header)
    assert header and header[0].startswith("# Paper, ")
    assert f"xsam-tune run configs/paper/{path.name}" in text
    assert "--set trial.data_dir=" in text and "--storage " in text
    assert "xsam-tune " in text.split(f"configs/paper/{path.name}", 1)[1]  # how to read back


@pytest.mark.parametrize(("name", "expected"), [(n, v) for n, v in MAIN.items()])
def test_main_tables(name: str, expected: tuple[str, str]) -> None:
    cfg = load_study(PAPER / name)
    trials = _trials(name)
    assert count_trials(cfg) == len(trials) == len(MAIN_OPTIMIZERS) * len(SEEDS)
    got = sorted((t["optimizer"], t["seed"]) for t in trials)
    assert got == sorted(itertools.product(MAIN_OPTIMIZERS, SEEDS))
    for t in trials:
        assert (t["dataset"], t["model"]) == expected
        assert t["epochs"] == 200 and t["steps"] == 1
        assert {k: t[k] for k in AUTHORS} == AUTHORS
    # Final accuracies: no early stopping; a GPU (or half of one) per trial.
    assert cfg.scheduler.name == "none" and cfg.metric == "test_acc" and cfg.mode == "max"
    assert 0 < cfg.resources.gpu <= 1
    # The paper's numbers are in the header.
    assert "Expect SGD " in (PAPER / name).read_text()


def test_multistep_table() -> None:
    cfg = load_study(PAPER / MULTISTEP)
    trials = _trials(MULTISTEP)
    assert count_trials(cfg) == len(trials) == 2 * 4 * 3
    got = sorted((t["optimizer"], t["steps"], t["seed"]) for t in trials)
    assert got == sorted(itertools.product(("sam", "xsam"), (1, 2, 5, 10), SEEDS))
    for t in trials:
        assert (t["dataset"], t["model"], t["epochs"]) == ("cifar100", "resnet18", 200)
        assert {k: t[k] for k in AUTHORS} == AUTHORS  # rho 0.15 in total over the k steps
    assert cfg.scheduler.name == "none" and cfg.metric == "test_acc"
    assert 0 < cfg.resources.gpu <= 1


def test_timing_table() -> None:
    cfg = load_study(PAPER / TIMING)
    trials = _trials(TIMING)
    assert count_trials(cfg) == len(trials) == 6
    got = sorted((t["model"], t["dataset"], t["optimizer"]) for t in trials)
    assert got == sorted((m, d, o) for (m, d) in TIMING_PAIRS for o in ("sam", "xsam"))
    for t in trials:
        assert {k: t[k] for k in AUTHORS} == AUTHORS
        assert 1 < t["epochs"] <= 10 and t["timing"] and t["steps"] == 1
    # One trial at a time on a whole GPU: clean times.
    assert cfg.resources.gpu == 1 and cfg.effective_concurrency() == 1
    assert cfg.metric == "time_epoch" and cfg.mode == "min"
    assert "x 200 / 3600" in (PAPER / TIMING).read_text()
