"""Real Ray Tune studies (small injected trainables), resume, and launch checks."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from study import StudyLaunchError, parse_study, read_study_config, resume_study, run_study
from study._state import last_study
from study.cli import main
from tests.study._engine import result_epochs, trial_dirs


def _failing_data_dir(tmp_path: Path) -> Path:
    """A data folder whose ``fail`` marker makes the toy trainable's steps == 2 trials
    raise in epoch 2 (remove the marker to let them through)."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "fail").touch()
    return data_dir


@pytest.mark.ray
def test_cli_run_of_a_conditional_grid(
    trainable_spec: str, write_study, base: dict[str, Any], tmp_path: Path, capsys
) -> None:
    base["max_concurrent_trials"] = 2
    path = write_study(base)
    storage = tmp_path / "studies"
    args = ["run", str(path), "--storage", str(storage), "--trainable", trainable_spec, "-q"]
    assert main(args) == 0
    out = capsys.readouterr().out
    study_dir = storage / "tiny"
    assert f"study directory: {study_dir}" in out
    assert "best 10 of 10 trials by test_acc (max)" in out
    table = out[out.index("best 10") :].splitlines()
    assert table[1].split() == [
        "trial",
        "status",
        "epochs",
        "test_acc",
        "optimizer",
        "steps",
        "seed",
    ]
    assert table[2].split()[4:] == ["xsam", "2", "0"] or table[2].split()[4:] == ["xsam", "2", "1"]

    assert read_study_config(str(study_dir)) == parse_study(base)
    info = json.loads((study_dir / "study.json").read_text())
    assert info["name"] == "tiny" and info["metric"] == "test_acc" and info["mode"] == "max"
    assert set(info["space"]) == {"optimizer", "steps", "seed"}
    assert info["num_trials"] == 10 and info["command"][:2] == ["xsam-tune", "run"]
    assert info["started_at"] <= info["finished_at"]
    assert info["versions"]["ray"] and info["trials"] == {"total": 10, "errors": 0}

    trials = trial_dirs(study_dir)
    assert len(trials) == 10
    configs = [json.loads((t / "params.json").read_text()) for t in trials]
    assert sorted((c["optimizer"], c.get("steps")) for c in configs).count(("sgd", None)) == 2
    assert all(c["epochs"] == 3 and c["checkpoint_every"] == 1 for c in configs)
    assert all(result_epochs(t) == [1, 2, 3] for t in trials)
    assert last_study() == str(study_dir)

    # the analysis layer's subcommands read the same directory
    assert main(["results", str(study_dir)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1 + 10


@pytest.mark.ray
def test_optuna_multi_objective_with_conditions(
    trainable: Any, base: dict[str, Any], tmp_path: Path
) -> None:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    base["search"] = {
        "algorithm": "optuna",
        "num_samples": 6,
        "seed": 0,
        "max_concurrent": 2,
        "points_to_evaluate": [{"optimizer": "xsam", "rho": 0.15, "rho_max": 0.3}],
    }
    base["space"] = {
        "optimizer": {"choice": ["sam", "xsam"]},
        "rho": {"loguniform": [0.01, 1.0]},
        "rho_max": {"uniform": [0.1, 1.0], "when": {"optimizer": "xsam"}},
        "steps": {"randint": [1, 3]},
    }
    base["metric"] = [{"name": "test_acc", "mode": "max"}, {"name": "time_epoch", "mode": "min"}]
    cfg = parse_study(base)
    # a URI: study.json, study.yaml and the journal go through pyarrow's file systems
    results = run_study(cfg, storage=f"file://{tmp_path}", trainable=trainable, verbose=0)
    assert len(results) == 6 and results.num_errors == 0
    configs = [r.config for r in results]
    assert any(c["rho"] == 0.15 and c.get("rho_max") == 0.3 for c in configs)
    for c in configs:
        assert ("rho_max" in c) == (c["optimizer"] == "xsam")
        assert 1 <= c["steps"] <= 3 and 0.01 <= c["rho"] <= 1.0

    study_dir = tmp_path / "tiny"
    assert last_study() == f"file://{study_dir}"
    info = json.loads((study_dir / "study.json").read_text())
    assert info["metric"] == "test_acc" and info["mode"] == "max"  # STUDY_FIELDS: strings
    assert info["metrics"] == [
        {"name": "test_acc", "mode": "max"},
        {"name": "time_epoch", "mode": "min"},
    ]
    assert info["path"] == f"file://{study_dir}" and "finished_at" in info
    storage = JournalStorage(JournalFileBackend(str(study_dir / "optuna.journal")))
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert len(study.trials) == 6 and study.metric_names == ["test_acc", "time_epoch"]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert {t.user_attrs["ray_trial_id"] for t in study.trials} == {
        r.metrics["trial_id"] for r in results
    }


@pytest.mark.ray
def test_random_search_with_asha(trainable: Any, base: dict[str, Any], tmp_path: Path) -> None:
    base["trial"]["epochs"] = 4
    base["search"] = {"algorithm": "random", "num_samples": 4, "seed": 0}
    base["space"] = {"rho": {"uniform": [0.0, 1.0]}, "steps": {"choice": [1, 3]}}
    base["scheduler"] = {"name": "asha", "grace_period": 1, "reduction_factor": 2}
    results = run_study(parse_study(base), storage=str(tmp_path), trainable=trainable, verbose=0)
    assert len(results) == 4 and results.num_errors == 0
    epochs = sorted(r.metrics["training_iteration"] for r in results)
    assert epochs[-1] == 4 and epochs[0] < 4  # ASHA stopped the worse trials early


@pytest.mark.ray
def test_resume_continues_errored_trials_from_their_checkpoint(
    trainable: Any, base: dict[str, Any], tmp_path: Path
) -> None:
    data_dir = _failing_data_dir(tmp_path)
    base["trial"]["data_dir"] = str(data_dir)
    base["space"]["optimizer"]["grid"] = ["sgd", "xsam"]
    base["space"]["seed"]["grid"] = [0]
    base["max_failures"] = 0
    results = run_study(parse_study(base), storage=str(tmp_path), trainable=trainable, verbose=0)
    assert results.num_errors == 1  # xsam with k = 2
    study_dir = tmp_path / "tiny"
    before = {t.name: result_epochs(t) for t in trial_dirs(study_dir)}
    assert sorted(len(e) for e in before.values()) == [1, 3, 3]

    (data_dir / "fail").unlink()
    results = resume_study(str(study_dir), trainable=trainable, verbose=0)
    assert len(results) == 3 and results.num_errors == 0
    after = {t.name: result_epochs(t) for t in trial_dirs(study_dir)}
    # errored trials went on from epoch 2; finished ones were not run again
    assert all(epochs == [1, 2, 3] for epochs in after.values())
    info = json.loads((study_dir / "study.json").read_text())
    assert len(info["resumed"]) == 1 and info["trials"]["errors"] == 0
    assert info["resumed"][0]["at"] <= info["finished_at"]


@pytest.mark.ray
def test_resumed_optuna_study_keeps_its_journal_in_its_moved_directory(
    trainable: Any, base: dict[str, Any], tmp_path: Path
) -> None:
    import shutil

    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    data_dir = _failing_data_dir(tmp_path)
    base["trial"].update(optimizer="xsam", data_dir=str(data_dir))
    base["space"] = {"steps": {"choice": [1, 2]}}
    base["search"] = {
        "algorithm": "optuna",
        "num_samples": 2,
        "seed": 0,
        "points_to_evaluate": [{"steps": 2}, {"steps": 1}],
    }
    base["max_failures"] = 0
    first = tmp_path / "first"
    results = run_study(parse_study(base), storage=str(first), trainable=trainable, verbose=0)
    assert results.num_errors == 1

    moved = tmp_path / "moved" / "tiny"
    moved.parent.mkdir()
    shutil.move(str(first / "tiny"), str(moved))
    (moved / "optuna.journal").unlink()  # the resume must write it again, here
    (data_dir / "fail").unlink()
    results = resume_study(str(moved), trainable=trainable, verbose=0)
    assert results.num_errors == 0
    storage = JournalStorage(JournalFileBackend(str(moved / "optuna.journal")))
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert sorted(t.params["steps"] for t in study.trials) == [1, 2]
    assert not (first / "tiny").exists()  # nothing written where the study was


@pytest.mark.ray
@pytest.mark.slow
def test_the_real_trainable(ray_session: None, tmp_path: Path, capsys) -> None:
    """`xsam-tune run` with trainables.tune.train_trial on a tiny fake dataset."""
    study = {
        "name": "real",
        "trial": {
            "dataset": "fake",
            "model": "mlp",
            "fake_shape": [1, 8, 8],
            "fake_train_size": 64,
            "fake_test_size": 32,
            "epochs": 2,
            "batch_size": 32,
            "threads": 1,
            "data_dir": str(tmp_path / "data"),
        },
        "space": {"optimizer": {"grid": ["sgd", "xsam"]}},
        "metric": {"name": "test_acc", "mode": "max"},
    }
    path = tmp_path / "real.yaml"
    path.write_text(json.dumps(study))  # JSON is YAML
    assert main(["run", str(path), "--storage", str(tmp_path / "studies"), "-q"]) == 0
    out = capsys.readouterr().out
    assert "best 2 of 2 trials" in out
    for trial in trial_dirs(tmp_path / "studies" / "real"):
        rows = [json.loads(line) for line in (trial / "result.json").read_text().splitlines()]
        assert [r["epoch"] for r in rows] == [1, 2] and "time_epoch" in rows[-1]


# -- checks before anything starts (no Ray) ---------------------------------


def test_an_existing_named_study_is_refused(base: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    with pytest.raises(StudyLaunchError, match="exists already: resume it"):
        run_study(parse_study(base), storage=str(tmp_path), name="taken", trainable=print)


def test_resume_of_a_study_that_never_started(base: dict[str, Any], tmp_path: Path) -> None:
    from study._yaml import dump_yaml

    study_dir = tmp_path / "tiny"
    study_dir.mkdir()
    (study_dir / "study.yaml").write_text(dump_yaml(copy.deepcopy(base)))
    with pytest.raises(StudyLaunchError, match="nothing to resume"):
        resume_study(str(study_dir), trainable=print)
