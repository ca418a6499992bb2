"""The scheduler classes (study/_schedulers.py): every registered one, and a toy one
registered the way CONTRIBUTING.md says, which validation, the dry run, ``study.json``
and a real run pick up; an unknown name is refused naming every registered one."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from study import StudyConfigError, parse_study, run_study
from study._checks import MAX_EPOCHS, check_int
from study._report import describe_study
from study._schedulers import SCHEDULERS, Scheduler
from study.cli import main

CLI = Path(sys.executable).parent / "xsam-tune"
TWO_METRICS = [{"name": "test_acc", "mode": "max"}, {"name": "test_loss", "mode": "min"}]


class StopAfter(FIFOScheduler):
    """Ray's FIFO scheduler that stops every trial after ``epochs`` epochs."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = epochs

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if result.get("training_iteration", 0) >= self.epochs:
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE


@dataclass(frozen=True)
class EpochCap(Scheduler):
    """Toy ``cap``: every trial stops after ``epochs`` epochs."""

    epochs: int = 1
    name: ClassVar[str] = "cap"
    title: ClassVar[str] = "cap"
    keys: ClassVar[tuple[str, ...]] = ("epochs",)

    @classmethod
    def parse(cls, raw: Mapping[str, Any], *, max_epochs: int) -> Scheduler:
        epochs = check_int(raw.get("epochs", 1), "scheduler.epochs", minimum=1, maximum=MAX_EPOCHS)
        return cls(epochs)

    def build(self) -> Any:
        return StopAfter(self.epochs)


@pytest.fixture
def cap(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[Scheduler]]:
    """The toy scheduler, registered for the test's duration."""
    monkeypatch.setitem(SCHEDULERS, EpochCap.name, EpochCap)
    yield EpochCap


def _with(base: dict[str, Any], scheduler: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {**copy.deepcopy(base), "scheduler": scheduler, **more}


def test_every_scheduler_is_registered_under_its_name() -> None:
    assert list(SCHEDULERS) == ["none", "asha"]
    assert all(cls.name == name and issubclass(cls, Scheduler) for name, cls in SCHEDULERS.items())


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_each_scheduler_round_trips_describes_itself_and_builds(
    base: dict[str, Any], name: str
) -> None:
    cfg = parse_study(_with(base, {"name": name}))
    assert type(cfg.scheduler) is SCHEDULERS[name]
    written = cfg.to_dict()["scheduler"]
    assert written == {"name": name, **cfg.scheduler.settings()}
    assert parse_study(_with(base, written)) == cfg
    assert f"  scheduler: {cfg.scheduler.describe()}\n" in describe_study(cfg)
    assert cfg.scheduler.describe().startswith(name)
    built = cfg.scheduler.build()
    assert built is None if name == "none" else isinstance(built, TrialScheduler)


def test_asha_settings_and_what_it_builds(base: dict[str, Any]) -> None:
    from ray.tune.schedulers import ASHAScheduler

    cfg = parse_study(_with(base, {"name": "asha", "grace_period": 2, "reduction_factor": 2}))
    assert cfg.scheduler.to_dict() == {
        "name": "asha",
        "grace_period": 2,
        "reduction_factor": 2,
        "max_t": 3,  # the study's epochs
    }
    assert cfg.scheduler.describe() == "asha (grace 2, reduction 2, max_t 3)"
    assert isinstance(cfg.scheduler.build(), ASHAScheduler)


@pytest.mark.parametrize("name", [n for n, c in SCHEDULERS.items() if not c.multi_objective])
def test_a_single_objective_scheduler_refuses_two_metrics(base: dict[str, Any], name: str) -> None:
    base["search"] = {"algorithm": "optuna"}
    base["space"] = {"seed": {"choice": [0, 1]}}
    with pytest.raises(StudyConfigError) as err:
        parse_study(_with(base, {"name": name}, metric=TWO_METRICS))
    able = [n for n, c in SCHEDULERS.items() if c.multi_objective]
    assert str(err.value).startswith(f"scheduler.name: got '{name}', allowed: ")
    assert all(n in str(err.value) for n in able)


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_each_scheduler_refuses_keys_it_does_not_take(base: dict[str, Any], name: str) -> None:
    with pytest.raises(StudyConfigError) as err:
        parse_study(_with(base, {"name": name, "nosuch": 1}))
    assert str(err.value).startswith(f"scheduler.nosuch: unknown key for scheduler {name}")
    assert str(err.value).endswith("allowed: one of " + ", ".join(["name", *SCHEDULERS[name].keys]))


def test_a_registered_scheduler_is_validated_described_and_written_back(
    cap: type[Scheduler], base: dict[str, Any]
) -> None:
    cfg = parse_study(_with(base, {"name": "cap", "epochs": 2}))
    assert cfg.scheduler == EpochCap(2)
    assert cfg.to_dict()["scheduler"] == {"name": "cap", "epochs": 2}
    assert parse_study(_with(base, cfg.to_dict()["scheduler"])) == cfg
    assert "  scheduler: cap (epochs 2)\n" in describe_study(cfg)
    # its own checks, and its keys only
    with pytest.raises(StudyConfigError, match=r"^scheduler\.epochs: got 0, allowed: an integer"):
        parse_study(_with(base, {"name": "cap", "epochs": 0}))
    with pytest.raises(StudyConfigError, match=r"^scheduler\.max_t: unknown key for scheduler cap"):
        parse_study(_with(base, {"name": "cap", "max_t": 2}))
    # it handles several objectives (the base class says so), unlike asha
    base["search"] = {"algorithm": "optuna"}
    base["space"] = {"seed": {"choice": [0, 1]}}
    assert parse_study(_with(base, {"name": "cap"}, metric=TWO_METRICS)).scheduler == EpochCap(1)
    with pytest.raises(StudyConfigError, match=r"allowed: none or cap \(ASHA needs a single"):
        parse_study(_with(base, {"name": "asha"}, metric=TWO_METRICS))


@pytest.mark.ray
def test_a_registered_scheduler_runs_a_study(
    cap: type[Scheduler], trainable: Any, base: dict[str, Any], tmp_path: Path
) -> None:
    base["space"] = {"seed": {"grid": [0, 1]}}
    cfg = parse_study(_with(base, {"name": "cap", "epochs": 2}))
    results = run_study(cfg, storage=str(tmp_path), trainable=trainable, verbose=0)
    assert len(results) == 2 and results.num_errors == 0
    # the study is configured for 3 epochs: the toy's Ray scheduler stopped each after 2
    assert [r.metrics["training_iteration"] for r in results] == [2, 2]
    info = json.loads((Path(results.experiment_path) / "study.json").read_text())
    assert info["scheduler"] == {"name": "cap", "epochs": 2}


def test_an_unknown_scheduler_is_refused_naming_every_registered_one(
    cap: type[Scheduler], base: dict[str, Any], tmp_path: Path, capsys
) -> None:
    expected = "scheduler.name: got 'pbt', allowed: one of none, asha, cap"
    with pytest.raises(StudyConfigError) as err:
        parse_study(_with(base, {"name": "pbt"}))
    assert str(err.value) == expected
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(_with(base, {"name": "pbt"})))
    assert main(["run", str(path), "--dry-run"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err == f"xsam-tune: error: {expected}\n"


def test_the_installed_cli_refuses_an_unknown_scheduler_in_one_line(
    base: dict[str, Any], tmp_path: Path
) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(_with(base, {"name": "pbt"})))
    out = subprocess.run(
        [str(CLI), "run", str(path), "--dry-run"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr == "xsam-tune: error: scheduler.name: got 'pbt', allowed: one of none, asha\n"
