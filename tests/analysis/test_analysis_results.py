"""Study directory → dataframes: columns, dtypes, statuses, odd directories."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import analysis
import xsam_contract
from analysis._schema import PROBE_COLUMNS, TRIAL_COLUMNS, epoch_columns

pytestmark = pytest.mark.ray

# The tiny study of conftest.py: sgd/sam/xsam × k 1, 2 (sam, xsam) × seeds 0, 1, one
# more sgd trial with a huge lr (diverges) and one more sam one on an empty
# tinyimagenet directory (errors); diagnostics for sgd and sam at seed 0.
EPOCHS = 3
N_TRIALS = 12
SWEPT = [
    "optimizer",
    "steps",
    "seed",
    "rho",
    "rho_max",
    "refresh_every",
    "diagnostics",
    "lr",
    "dataset",
]
RAISES_MESSAGE = "tinyimagenet is not in data directory"


def _dtype_ok(series: pd.Series, dtype: str) -> bool:
    if dtype == "category":
        return isinstance(series.dtype, pd.CategoricalDtype)
    if dtype.startswith("datetime64"):
        return isinstance(series.dtype, pd.DatetimeTZDtype) and str(series.dtype.tz) == "UTC"
    return str(series.dtype) == dtype


def _trial_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if (p / "params.json").exists())


def test_trials_hold_every_documented_column(study_dir: Path) -> None:
    s = analysis.load(study_dir)
    t = s.trials
    assert len(t) == N_TRIALS
    for name, (dtype, _) in TRIAL_COLUMNS.items():
        assert name in t.columns, name
        assert _dtype_ok(t[name], dtype), (name, t[name].dtype)
    for name in ("optimizer", "rho", "steps", "rho_max", "alpha_max", "refresh_every", "seed"):
        assert _dtype_ok(t[name], xsam_contract.TRIAL_KEYS[name].dtype), (name, t[name].dtype)
    assert not any(c.startswith("config/") for c in t.columns)
    # swept settings lead the config columns
    assert list(t.columns[3 : 3 + len(s.swept)]) == s.swept
    assert set(t["refresh"]) <= {"1 epoch", "2 epoch"}
    # Unset keys come from study.json's trial defaults; lists as JSON text.
    defaults = s.info["trial_defaults"]
    assert t["fake_shape"].iloc[0] == json.dumps(defaults["fake_shape"]) == "[3, 32, 32]"
    assert t["momentum"].eq(defaults["momentum"]).all()


def test_swept_settings_and_metric_come_from_study_json(study_dir: Path) -> None:
    s = analysis.load(study_dir)
    assert s.swept == SWEPT
    assert s.settings["epochs"] == EPOCHS and s.settings["model"] == "cnn1d"
    assert s.settings["batch_size"] == 500
    assert "dataset" not in s.settings and "lr" not in s.settings  # swept for one trial each
    assert (s.metric, s.mode) == ("test_acc", "max")
    assert s.key_columns == s.swept


def test_status_final_and_best_metrics(study_dir: Path) -> None:
    t = analysis.load(study_dir).trials
    diverged = t.loc[t["lr"] > 1].squeeze()  # the one trial with lr 1e6
    errored = t.loc[t["dataset"] == "tinyimagenet"].squeeze()
    assert (diverged["optimizer"], diverged["seed"]) == ("sgd", 1) and pd.isna(diverged["steps"])
    assert (errored["optimizer"], errored["steps"], errored["seed"]) == ("sam", 2, 1)
    assert diverged["status"] == "diverged"
    assert errored["status"] == "errored"
    assert "DatasetError" in errored["error"] and RAISES_MESSAGE in errored["error"]
    assert errored["failures"] == 1  # max_failures 0: no retry
    # It raised before its first epoch: no rows, no metrics.
    assert errored["epochs_done"] == 0 and pd.isna(errored["final_test_acc"])
    others = t.drop(index=[diverged.name, errored.name])
    assert len(others) == N_TRIALS - 2
    assert (others["status"] == "finished").all()
    assert (others["epochs_done"] == EPOCHS).all()
    assert (others["final_test_acc"] == others["objective"]).all()
    ran = t.drop(index=errored.name)
    assert (ran["best_test_acc"] >= ran["final_test_acc"]).all()
    # NaN loss in the first epoch: that row is reported, then the trial ends.
    assert diverged["epochs_done"] == 1 and diverged["best_epoch"] == 1
    assert np.isnan(diverged["final_train_loss"])
    # XSAM and the diagnosed trials probe at the start of every refresh_every-th
    # epoch (epochs 1, 2, 3 or 1, 3); the rest never do.
    probing = t["optimizer"].eq("xsam") | t["diagnostics"].fillna(False).astype(bool)
    assert set(t.loc[probing, "optimizer"]) == {"sgd", "sam", "xsam"}
    expected = np.ceil(EPOCHS / t.loc[probing, "refresh_every"]).astype(int)
    assert t.loc[probing, "n_refreshes"].tolist() == expected.tolist()
    assert (t.loc[~probing, "n_refreshes"] == 0).all()
    assert (ran["time_total_s"] > 0).all() and pd.isna(errored["time_total_s"])


def test_epochs_hold_every_metric_of_the_contract(study_dir: Path) -> None:
    s = analysis.load(study_dir)
    e = s.epochs
    for name, (dtype, _) in epoch_columns().items():
        assert name in e.columns, name
        assert _dtype_ok(e[name], dtype), (name, e[name].dtype)
    # Every scalar field of the contract's metrics row, with the contract's dtype.
    for name, f in xsam_contract.METRICS.items():
        if f.dtype != "object":
            assert _dtype_ok(e[name], f.dtype), (name, e[name].dtype)
    # A swept key named like a metric (lr) is config_lr beside the metric lr.
    keys = ["config_lr" if c == "lr" else c for c in s.key_columns]
    assert list(e.columns[1 : 1 + len(keys)]) == keys
    huge = e[e["config_lr"] > 1]
    assert len(huge) == 1 and huge["diverged"].item()
    assert (e["lr"] <= e["config_lr"]).all()  # the cosine schedule of the setting
    assert len(e) == s.trials["epochs_done"].sum()
    assert not e.duplicated(["trial_id", "epoch"]).any()
    assert "probes" not in e.columns and "config" not in e.columns
    # Values are the reported ones, read back exactly.
    d = next(d for d in _trial_dirs(study_dir) if "xsam" in d.name)
    rows = [json.loads(line) for line in (d / "result.json").read_text().splitlines()]
    mine = e[e["trial_id"] == rows[0]["trial_id"]].reset_index(drop=True)
    for i, row in enumerate(rows):
        for key in ("test_acc", "time_probe", "psi", "alpha", "n_forward", "step"):
            assert mine.loc[i, key] == row[key]
        assert mine.loc[i, "n_probe_forward"] == sum(len(p["alphas"]) for p in row["probes"])
    diverged = e[e["diverged"].fillna(False)]
    assert len(diverged) == 1 and np.isnan(diverged["train_loss"].iloc[0])
    assert diverged["optimizer"].item() == "sgd" and diverged["epoch"].item() == 1


def test_probes_one_row_per_refresh_and_grid_point(study_dir: Path) -> None:
    s = analysis.load(study_dir)
    p = s.probes
    for name, (dtype, _) in PROBE_COLUMNS.items():
        assert _dtype_ok(p[name], dtype), (name, p[name].dtype)
    per_refresh = p.groupby(["trial_id", "refresh_index"])
    assert (per_refresh.size() == 21).all()
    assert (per_refresh["is_star"].sum() == 1).all()
    counts = p.groupby("trial_id")["refresh_index"].nunique()
    expected = s.trials.set_index("trial_id")["n_refreshes"]
    assert counts.to_dict() == expected[expected > 0].to_dict()
    # XSAM's own searches, and the diagnostic ones of sgd and sam at seed 0.
    assert set(p["optimizer"]) == {"sgd", "sam", "xsam"}
    others = p[p["optimizer"] != "xsam"]
    assert others["diagnostics"].astype(bool).all() and (others["seed"] == 0).all()
    np.testing.assert_allclose(sorted(p["alpha"].unique()), np.round(np.arange(21) * 0.1, 10))


def test_partial_study_reads_as_running(partial_dir: Path) -> None:
    s = analysis.load(partial_dir)
    t = s.trials
    running = t[t["status"] == "running"]
    assert len(running) == 3
    assert sorted(running["epochs_done"].tolist()) == [0, 1, 2]  # no result.json / 1 row / torn
    fresh = running[running["epochs_done"] == 0].iloc[0]
    assert pd.isna(fresh["final_test_acc"]) and pd.isna(fresh["last_update"])
    assert set(t["status"]) == {"running", "finished", "diverged", "errored"}
    assert len(s.epochs) == t["epochs_done"].sum()
    assert s.live


def test_stale_or_ended_study_reads_as_interrupted(partial_dir: Path, tmp_path: Path) -> None:
    stale = analysis.load(partial_dir, stale_after=-1)
    assert (stale.trials["status"] == "interrupted").sum() == 3
    ended = tmp_path / "ended"
    shutil.copytree(partial_dir, ended)
    info = json.loads((ended / "study.json").read_text())
    (ended / "study.json").write_text(json.dumps({**info, "finished_at": "2026-01-01T00:00:00"}))
    assert (analysis.load(ended).trials["status"] == "interrupted").sum() == 3


def _edit_state(root: Path, edit) -> None:
    for f in root.glob("experiment_state-*.json"):
        state = json.loads(f.read_text())
        state["trial_data"] = edit(state["trial_data"])
        f.write_text(json.dumps(state))


def test_retry_restore_and_pending(study_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "study"
    shutil.copytree(study_dir, root)
    info = json.loads((root / "study.json").read_text())
    info.pop("finished_at")  # the driver still runs
    (root / "study.json").write_text(json.dumps(info))
    t = analysis.load(root).trials
    errored = t.loc[t["status"] == "errored"].iloc[0]
    finished = t.loc[t["status"] == "finished"].iloc[0]

    # Restored from its epoch-2 checkpoint, a trial reports epoch 3 again: the new row wins.
    result = root / finished["trial_dir"] / "result.json"
    lines = result.read_text().splitlines()
    again = json.loads(lines[2]) | {"test_acc": 0.123}
    result.write_text("\n".join([*lines, json.dumps(again)]) + "\n")
    # Restored from epoch 1, another has re-reported epoch 2 only: epoch 3 is not done yet.
    other = t.loc[(t["status"] == "finished") & (t["trial_id"] != finished["trial_id"])].iloc[0]
    result2 = root / other["trial_dir"] / "result.json"
    lines2 = result2.read_text().splitlines()
    result2.write_text("\n".join([*lines2, lines2[1]]) + "\n")

    def retry_and_pend(entries: list) -> list:
        out = []
        for entry in entries:
            head = json.loads(entry[0])
            if head["trial_id"] == other["trial_id"]:
                head["status"] = "RUNNING"
            if head["trial_id"] == errored["trial_id"]:
                head["status"] = "RUNNING"  # Ray retries it after the failure
                pending = dict(head, trial_id="cbb29_99999", status="PENDING", relative_logdir=None)
                out.append([json.dumps(pending), entry[1]])
            out.append([json.dumps(head), *entry[1:]])
        return out

    _edit_state(root, retry_and_pend)
    s = analysis.load(root)
    t = s.trials.set_index("trial_id")
    assert t.loc[errored["trial_id"], "status"] == "running"
    assert t.loc[errored["trial_id"], "failures"] == 1
    assert t.loc["cbb29_99999", "status"] == "pending"
    assert t.loc["cbb29_99999", "epochs_done"] == 0
    e = s.epochs[s.epochs["trial_id"] == finished["trial_id"]]
    assert e["epoch"].tolist() == [1, 2, 3]
    assert e.loc[e["epoch"] == 3, "test_acc"].item() == 0.123
    assert t.loc[finished["trial_id"], "final_test_acc"] == 0.123
    assert s.epochs.loc[s.epochs["trial_id"] == other["trial_id"], "epoch"].tolist() == [1, 2]
    assert t.loc[other["trial_id"], "status"] == "running"


def test_bare_directory_without_driver_files(study_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "bare"
    shutil.copytree(study_dir, root)
    for pattern in ("study.*", "experiment_state-*.json"):
        for f in root.glob(pattern):
            f.unlink()
    s = analysis.load(root)
    assert s.name == "bare" and s.metric == "test_acc" and s.spec_text is None
    # Without study.json: the config keys that take several values (diagnostics
    # is true or unset, one value; data_dir and the rest are fixed).
    assert set(s.swept) == set(SWEPT) - {"diagnostics"}
    counts = s.trials["status"].value_counts()
    assert counts["finished"] == 10 and counts["diverged"] == 1 and counts["errored"] == 1


def test_bad_paths_raise_analysis_error(tmp_path: Path) -> None:
    with pytest.raises(analysis.AnalysisError, match="not found"):
        analysis.load(tmp_path / "missing")
    with pytest.raises(analysis.AnalysisError, match="not a study directory"):
        analysis.load(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        analysis.load(tmp_path / "file")
    bad = tmp_path / "badjson"
    bad.mkdir()
    (bad / "study.json").write_text("{not json")
    with pytest.raises(analysis.AnalysisError, match="cannot read"):
        analysis.load(bad)


def test_frames_do_not_import_ray_or_torch(study_dir: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys, analysis; s = analysis.load(sys.argv[1]); s.trials; s.epochs; s.probes; "
        "analysis.degradation_table(s); analysis.overhead_ratio_table(s); "
        "bad = [m for m in ('ray', 'torch', 'trainables') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code, str(study_dir)], check=True, timeout=120)
