"""The numbers behind the figures equal direct computations on the frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import analysis

pytestmark = pytest.mark.ray


def test_degradation_table_is_a_groupby_of_trials(study_dir: Path) -> None:
    s = analysis.load(study_dir)
    table = analysis.degradation_table(s)
    done = s.trials.query("status == 'finished'")
    direct = done.groupby(["optimizer", "steps"])["final_test_acc"].agg(["mean", "std", "count"])
    got = table.set_index(["optimizer", "steps"]).loc[direct.index]
    np.testing.assert_allclose(got["mean"], direct["mean"] * 100)
    np.testing.assert_allclose(got["std"], direct["std"] * 100, equal_nan=True)
    assert got["n"].tolist() == direct["count"].tolist()
    assert table.attrs["unit"] == "%"
    assert table["optimizer"].drop_duplicates().tolist() == ["sgd", "sam", "xsam"]
    raw = analysis.degradation_table(s, percent=False).set_index(["optimizer", "steps"])
    np.testing.assert_allclose(raw.loc[direct.index, "mean"], direct["mean"])


def test_degradation_layout_is_the_papers(study_dir: Path) -> None:
    table = analysis.degradation_table(study_dir)
    layout = analysis.degradation_layout(table)
    assert list(layout.index) == ["sgd", "sam", "xsam"]
    assert list(layout.columns) == ["k=1", "k=2"]
    row = table[(table["optimizer"] == "xsam") & (table["steps"] == 1)].iloc[0]
    assert layout.loc["xsam", "k=1"] == f"{row['mean']:.1f} ± {row['std']:.1f}"
    # One finished seed: no spread to show.
    assert layout.loc["sam", "k=2"].endswith("± –")


def _groups(s: analysis.Study) -> pd.DataFrame:
    t = s.trials
    label = t["refresh"].where(t["optimizer"] == "xsam", "n/a")
    return s.epochs.merge(t[["trial_id"]].assign(refresh=label), on="trial_id")


def test_overhead_table_is_sums_over_epochs(study_dir: Path) -> None:
    s = analysis.load(study_dir)
    table = analysis.overhead_table(s).set_index(["optimizer", "steps", "refresh"])
    e = _groups(s)
    g = e.groupby(["optimizer", "steps", "refresh"])
    n = g.size()
    assert table["n_epochs"].to_dict() == n.to_dict()
    for phase in ("ascent", "descent", "probe", "update", "data", "eval", "epoch"):
        col = f"time_{phase}"
        np.testing.assert_allclose(table.loc[n.index, col], g[col].sum() / n)
    phases = sum(
        g[f"time_{p}"].sum() for p in ("ascent", "descent", "probe", "update", "data", "eval")
    )
    np.testing.assert_allclose(
        table.loc[n.index, "time_other"], (g["time_epoch"].sum() - phases) / n
    )
    np.testing.assert_allclose(
        table.loc[n.index, "n_probe_forward"], g["n_probe_forward"].sum() / n
    )
    sam = table.xs("sam", level="optimizer")
    assert (sam.index.get_level_values("refresh") == "n/a").all()


def test_overhead_ratio_and_floor(study_dir: Path) -> None:
    s = analysis.load(study_dir)
    ratio = analysis.overhead_ratio_table(s)
    e = _groups(s)
    assert (
        len(ratio)
        == e.loc[e["optimizer"] == "xsam", ["steps", "refresh"]].drop_duplicates().shape[0]
    )
    for _, row in ratio.iterrows():
        sam = e[(e["optimizer"] == "sam") & (e["steps"] == row["steps"])]
        xsam = e[
            (e["optimizer"] == "xsam")
            & (e["steps"] == row["steps"])
            & (e["refresh"] == row["refresh"])
        ]
        sam_t = sam["time_epoch"].sum() / len(sam)
        xsam_t = xsam["time_epoch"].sum() / len(xsam)
        assert row["ratio"] == pytest.approx(xsam_t / sam_t)
        assert row["extra_pct"] == pytest.approx(100 * (xsam_t - sam_t) / sam_t)
        forwards = xsam["n_probe_forward"].sum()
        assert row["probe_forward_per_epoch"] == pytest.approx(forwards / len(xsam))
        assert row["forward_s"] == pytest.approx(xsam["time_probe"].sum() / forwards)
        # 21 grid points per refresh; the floor is their measured cost per epoch.
        assert row["probe_forward_per_epoch"] == pytest.approx(21 * row["refreshes_per_epoch"])
        assert row["floor_s"] == pytest.approx(xsam["time_probe"].sum() / len(xsam))
        assert row["floor_pct"] == pytest.approx(100 * row["floor_s"] / sam_t)


def test_fidelity_shares_count_refreshes(study_dir: Path) -> None:
    s = analysis.load(study_dir)
    p = s.probes
    per = p.groupby(["trial_id", "refresh_index"]).apply(
        lambda d: pd.Series(
            {
                "v0": d.loc[np.isclose(d["alpha"], 0.0), "loss"].item(),
                "v1": d.loc[np.isclose(d["alpha"], 1.0), "loss"].item(),
                "best": d.loc[d["is_star"].astype(bool), "loss"].item(),
                "steps": d["steps"].iloc[0],
            }
        ),
        include_groups=False,
    )
    fid = analysis.fidelity_table(s).set_index("steps")
    for k, d in per.groupby("steps"):
        assert fid.loc[k, "n_refreshes"] == len(d)
        assert fid.loc[k, "share_v1_gt_v0"] == pytest.approx((d["v1"] > d["v0"]).mean())
        assert fid.loc[k, "share_best_gt_v1"] == pytest.approx((d["best"] > d["v1"]).mean())
    losses = analysis.refresh_losses(s)
    assert len(losses) == s.trials["n_refreshes"].sum()


def test_refresh_losses_fall_back_to_epoch_columns(study_dir: Path, tmp_path: Path) -> None:
    s = analysis.load(study_dir)
    s.__dict__["probes"] = s.probes.iloc[0:0]  # as if no curves were saved
    losses = analysis.refresh_losses(s)
    refreshed = s.epochs[s.epochs["alpha_refreshed"].astype(bool)]
    assert len(losses) == len(refreshed)
    np.testing.assert_allclose(losses["loss_v1"], refreshed["probe_loss_v1"])


def test_importances_rebuilt_from_trials(study_dir: Path) -> None:
    s = analysis.load(study_dir)
    for evaluator in ("fanova", "ped-anova"):
        imp = analysis.importances(s, evaluator=evaluator)
        assert set(imp.index) == {"optimizer", "steps", "rho", "rho_max", "refresh_every"}
        assert imp.sum() == pytest.approx(1.0)
        assert (imp >= 0).all() and imp.is_monotonic_decreasing
    assert analysis.importances(s).attrs["evaluator"] == "fanova"  # auto, small study
    assert analysis.importances(s, evaluator="fanova").index[0] == "optimizer"
    with pytest.raises(analysis.AnalysisError, match="swept parameter"):
        analysis.importances(s, params=["epochs"])
    with pytest.raises(analysis.AnalysisError, match="unknown evaluator"):
        analysis.importances(s, evaluator="shap")


def test_importances_from_a_persisted_optuna_study(study_dir: Path, tmp_path: Path) -> None:
    import shutil

    import optuna
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    root = tmp_path / "study"
    shutil.copytree(study_dir, root)
    journal = root / "optuna.journal"  # where the study layer keeps an Optuna search

    def persist(name: str) -> None:
        storage = optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
        st = optuna.create_study(storage=storage, study_name=name)
        st.optimize(
            lambda t: t.suggest_float("x", -1, 1) ** 2 + 0.01 * t.suggest_float("y", -1, 1),
            n_trials=12,
        )

    persist("persisted")
    imp = analysis.importances(root)
    assert list(imp.index) == ["x", "y"] and imp.attrs["source"] == "optuna.journal"
    assert list(analysis.importances(study_dir, storage=journal).index) == ["x", "y"]
    persist("another")  # two studies in one file: not ours to pick, rebuild from trials
    imp = analysis.importances(root)
    assert imp.attrs["source"] == "trials" and "rho" in imp.index
    with pytest.raises(analysis.AnalysisError, match="2 Optuna studies"):
        analysis.importances(root, storage=journal)
    with pytest.raises(analysis.AnalysisError, match="not found"):
        analysis.importances(study_dir, storage=tmp_path / "missing.db")


def test_importances_need_two_complete_trials(partial_dir: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "one"
    shutil.copytree(partial_dir, root)
    s = analysis.load(root)
    keep = s.trials.loc[s.trials["status"] == "finished", "trial_dir"].iloc[0]
    for d in root.iterdir():
        if d.is_dir() and d.name != keep:
            shutil.rmtree(d)
    with pytest.raises(analysis.AnalysisError, match="≥ 2 complete trials"):
        analysis.importances(analysis.load(root))


def test_a_setting_that_varies_becomes_a_grouping_key(study_dir: Path, tmp_path: Path) -> None:
    """Two models in one study: their numbers never average together."""
    import json
    import shutil

    root = tmp_path / "two-models"
    shutil.copytree(study_dir, root)
    for i, d in enumerate(sorted(p for p in root.iterdir() if (p / "params.json").exists())):
        if i % 2:
            config = json.loads((d / "params.json").read_text())
            (d / "params.json").write_text(json.dumps({**config, "model": "cnn1d"}))
    s = analysis.load(root)
    table = analysis.degradation_table(s)
    assert list(table.columns[:3]) == ["model", "optimizer", "steps"]
    direct = s.trials.query("status == 'finished'").groupby(["model", "optimizer", "steps"])
    assert table["n"].sum() == direct.size().sum() and len(table) == direct.ngroups
    layout = analysis.degradation_layout(table)
    assert layout.index.names == ["model", "optimizer"]
    assert [o for m, o in layout.index if m == "mlp"] == ["sgd", "sam", "xsam"]
    assert "model" in analysis.overhead_table(s).columns
    assert "model" in analysis.overhead_ratio_table(s).columns
    assert "model" in analysis.fidelity_table(s).columns


def test_sgd_without_k_and_defaults_from_study_json(study_dir: Path, tmp_path: Path) -> None:
    """The study layer leaves ``steps`` unset for sgd (``when: optimizer in [sam, xsam]``)
    and may keep defaults out of params.json, recording them in study.json."""
    import json
    import shutil

    root = tmp_path / "conditional"
    shutil.copytree(study_dir, root)
    for d in root.iterdir():
        if (d / "params.json").exists():
            config = json.loads((d / "params.json").read_text())
            config.pop("epochs")
            if config["optimizer"] == "sgd":
                config.pop("steps")
            (d / "params.json").write_text(json.dumps(config))
    info = json.loads((root / "study.json").read_text())
    info["trial_defaults"] = {"epochs": 3, "steps": None, "eta": 0.01}
    (root / "study.json").write_text(json.dumps(info))
    s = analysis.load(root)
    t = s.trials
    assert t["epochs"].eq(3).all() and t["eta"].eq(0.01).all()
    assert t.loc[t["optimizer"] == "sgd", "steps"].isna().all()
    assert (t["status"] == "finished").sum() == 10
    table = analysis.degradation_table(s)
    sgd = table[table["optimizer"] == "sgd"]
    assert len(sgd) == 1 and sgd["n"].item() == 3 and pd.isna(sgd["steps"].item())
    layout = analysis.degradation_layout(table)
    assert list(layout.columns) == ["k=–", "k=1", "k=2"]
    assert layout.loc["sgd", "k=1"] == "–" and layout.loc["xsam", "k=–"] == "–"
    kinds = ["degradation", "overhead", "curves"]  # the ones that draw k
    assert len(analysis.plot(s, kinds, tmp_path / "figs", formats=["png"])) == 3
