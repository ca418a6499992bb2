"""The xsam-tune command without Ray: dry runs, errors, help, last-study."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from study._state import record_last_study
from study.cli import main

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_config_validates_with_dry_run(path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["run", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"study {path.stem}:" in out and "dry run: nothing started" in out


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_config_switches_to_cifar(path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["--set", "trial.dataset=cifar10", "--set", "trial.model=resnet18"]
    assert main(["run", str(path), "--dry-run", *args]) == 0
    assert "dataset=cifar10, model=resnet18" in capsys.readouterr().out


def test_dry_run_lists_the_grid(capsys: pytest.CaptureFixture) -> None:
    quickstart = str(Path(__file__).parents[2] / "configs" / "quickstart.yaml")
    assert main(["run", quickstart, "--dry-run", "--set", "trial.epochs=2"]) == 0
    out = capsys.readouterr().out
    assert "study quickstart: 10 trials (grid)" in out and "epochs=2" in out
    rows = [line.split() for line in out.splitlines() if line[:1].isdigit()]
    assert len(rows) == 10
    assert ["0", "sgd", "-", "0"] in rows and ["9", "xsam", "3", "1"] in rows


def test_dry_run_shows_the_search_space(capsys: pytest.CaptureFixture) -> None:
    sensitivity = str(Path(__file__).parents[2] / "configs" / "sensitivity.yaml")
    assert main(["run", sensitivity, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "rho_max" in out and "loguniform(0.05, 2.0)" in out
    assert "points_to_evaluate: rho=0.15, rho_max=0.3, alpha_max=2, refresh_every=1" in out


def _error_line(capsys: pytest.CaptureFixture) -> str:
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err + captured.out
    assert lines[0].startswith("xsam-tune: error: ")
    return lines[0]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (["trial.epochs=0"], "trial.epochs"),
        (["trial.optimizer=adamw"], "trial.optimizer"),
        (["space.steps.grid=[1, 2, 0]"], "space.steps.grid[2]"),
        (["resources.gpu=-1"], "resources.gpu"),
        (["metric.name=accuracy"], "metric.name"),
        (["search.algorithm=optuna"], "space.optimizer.grid"),
        (["bogus=1"], "bogus"),
        (["trial.epochs"], "--set trial.epochs"),
    ],
)
def test_bad_study_exits_2_with_one_line(
    write_study, base: dict[str, Any], overrides: list[str], field: str, capsys
) -> None:
    path = write_study(base)
    args = [a for o in overrides for a in ("--set", o)]
    assert main(["run", str(path), "--dry-run", *args]) == 2
    assert _error_line(capsys).startswith(f"xsam-tune: error: {field}")


@pytest.mark.parametrize(
    ("section", "key", "registry"),
    [
        ("trial", "optimizer", "OPTIMIZERS"),
        ("trial", "dataset", "DATASETS"),
        ("trial", "model", "MODELS"),
        ("space", "optimizer", "OPTIMIZERS"),
        ("space", "model", "MODELS"),
    ],
)
def test_unknown_registry_name_in_a_study_file(
    write_study, base: dict[str, Any], section: str, key: str, registry: str, capsys
) -> None:
    import xsam_contract

    if section == "trial":
        base["trial"][key] = "nosuch"
        base["space"].pop(key, None)
        if key == "optimizer":  # nothing may depend on a swept optimizer any more
            base["space"].pop("steps")
        field = f"trial.{key}"
    else:
        base["trial"].pop(key, None)
        base["space"][key] = {"grid": [{"optimizer": "sam", "model": "mlp"}[key], "nosuch"]}
        field = f"space.{key}.grid[1]"
    assert main(["run", str(write_study(base)), "--dry-run"]) == 2
    line = _error_line(capsys)
    assert line.startswith(f"xsam-tune: error: {field}: ") and "'nosuch'" in line
    assert all(name in line for name in getattr(xsam_contract, registry))


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["run", str(tmp_path / "nope.yaml")]) == 2
    assert _error_line(capsys) == f"xsam-tune: error: file not found: {tmp_path / 'nope.yaml'}"


def test_broken_yaml(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\ntrial: {epochs: 3\n")
    assert main(["run", str(path), "--dry-run"]) == 2
    assert "invalid YAML" in _error_line(capsys)


def test_not_a_mapping(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "list.yaml"
    path.write_text(yaml.safe_dump([1, 2]))
    assert main(["run", str(path), "--dry-run"]) == 2
    assert "a mapping of study settings" in _error_line(capsys)


def test_unreachable_cluster(write_study, base, monkeypatch, capsys) -> None:
    import ray

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("Could not find any running Ray instance.\nmore text")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    # Something answers at the address (study._preflight's TCP probe passes), but not Ray.
    monkeypatch.setattr("trainables._ondisk.host_reachable", lambda *args: None)
    path = write_study(base)
    storage = str(path.parent / "studies")
    assert main(["run", str(path), "--address", "10.0.0.1:6379", "--storage", storage]) == 2
    assert _error_line(capsys) == (
        "xsam-tune: error: cannot reach the Ray cluster at 10.0.0.1:6379: "
        "Could not find any running Ray instance."
    )


def test_resume_of_a_missing_directory(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["resume", str(tmp_path / "none")]) == 2
    assert "study directory not found" in _error_line(capsys)


def test_resume_of_a_directory_without_a_study(tmp_path: Path, capsys) -> None:
    assert main(["resume", str(tmp_path)]) == 2
    assert "no study.yaml" in _error_line(capsys)


def test_bad_trainable_option(write_study, base, capsys) -> None:
    path = write_study(base)
    assert main(["run", str(path), "--trainable", "no_such_module:f"]) == 2
    assert "--trainable: cannot import no_such_module" in _error_line(capsys)


def test_help(capsys: pytest.CaptureFixture) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("run", "resume", "last-study"):
        assert command in out
    assert main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--set", "--dry-run", "--address", "--storage", "--name", "--trainable"):
        assert option in out


def test_no_command(capsys: pytest.CaptureFixture) -> None:
    assert main([]) == 2
    assert "usage: xsam-tune" in capsys.readouterr().err


def test_last_study(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["last-study"]) == 2
    assert "no study has been run" in _error_line(capsys)
    record_last_study(str(tmp_path / "studies" / "quickstart"))
    assert main(["last-study"]) == 0
    assert capsys.readouterr().out == f"{tmp_path / 'studies' / 'quickstart'}\n"
