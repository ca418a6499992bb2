"""The numbers behind the figures equal direct computations on the frames."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import analysis

pytestmark = pytest.mark.ray

EPOCHS = 3
# The tiny study of conftest.py ran one trial on (empty) tinyimagenet, so the
# dataset varies: tables carry it as a context column before optimizer and k.
CTX = ["dataset"]


def _no_k(frame: pd.DataFrame) -> pd.DataFrame:
    """``steps`` with sgd's missing k as 0: index lookups do not match <NA>."""
    return frame.assign(steps=frame["steps"].fillna(0))


def _probing(t: pd.DataFrame) -> pd.Series:
    """XSAM trials and trials with ``diagnostics: true`` (α probes)."""
    return t["optimizer"].eq("xsam") | t["diagnostics"].fillna(False).astype(bool)


def test_degradation_table_is_a_groupby_of_trials(study_dir: Path) -> None:
    s = analysis.load(study_dir)
    table = analysis.degradation_table(s)
    done = _no_k(s.trials.query("status == 'finished'"))
    keys = [*CTX, "optimizer", "steps"]
    assert list(table.columns[: len(keys)]) == keys
    # dropna=False: sgd has no k and is a group of its own.
    direct = done.groupby(keys)["final_test_acc"].agg(["mean", "std", "count"])
    assert len(table) == len(direct) == 5  # sgd; sam, xsam × k 1, 2
    got = _no_k(table).set_index(keys).loc[direct.index]
    np.testing.assert_allclose(got["mean"], direct["mean"] * 100)
    np.testing.assert_allclose(got["std"], direct["std"] * 100, equal_nan=True)
    assert got["n"].tolist() == direct["count"].tolist() == [2] * 5
    assert table.attrs["unit"] == "%"
    assert table["optimizer"].drop_duplicates().tolist() == ["sgd", "sam", "xsam"]
    raw = _no_k(analysis.degradation_table(s, percent=False)).set_index(keys)
    np.testing.assert_allclose(raw.loc[direct.index, "mean"], direct["mean"])


def test_degradation_layout_is_the_papers(study_dir: Path, tmp_path: Path) -> None:
    table = analysis.degradation_table(study_dir)
    layout = analysis.degradation_layout(table)
    assert layout.index.names == [*CTX, "optimizer"]
    assert list(layout.index) == [("mnist1d", o) for o in ("sgd", "sam", "xsam")]
    assert list(layout.columns) == ["k=–", "k=1", "k=2"]  # sgd has no k
    row = table[(table["optimizer"] == "xsam") & (table["steps"] == 1)].iloc[0]
    cell = f"{row['mean']:.1f} ± {row['std']:.1f} (n={row['n']})"
    assert layout.loc[("mnist1d", "xsam"), "k=1"] == cell
    assert layout.loc[("mnist1d", "sgd"), "k=1"] == "–"
    assert layout.loc[("mnist1d", "sam"), "k=–"] == "–"
    # One finished seed: no spread to show.
    root = tmp_path / "one-seed"
    shutil.copytree(study_dir, root)
    t = analysis.load(root).trials
    gone = t[(t["optimizer"] == "sam") & (t["steps"] == 2) & (t["seed"] == 0)]
    shutil.rmtree(root / gone["trial_dir"].item())
    layout = analysis.degradation_layout(analysis.degradation_table(root))
    assert layout.loc[("mnist1d", "sam"), "k=2"].endswith("± – (n=1)")
    assert layout.loc[("mnist1d", "sam"), "k=1"].endswith("(n=2)")


def _groups(s: analysis.Study) -> pd.DataFrame:
    """``.epochs`` with the refresh label of the overhead tables: the trial's
    refresh setting where it probes, ``n/a`` where it never does."""
    t = s.trials
    label = t["refresh"].where(_probing(t), "n/a")
    return s.epochs.merge(t[["trial_id"]].assign(refresh=label), on="trial_id")


def test_overhead_table_is_sums_over_epochs(study_dir: Path) -> None:
    s = analysis.load(study_dir)
    keys = [*CTX, "optimizer", "steps", "refresh"]
    table = _no_k(analysis.overhead_table(s)).set_index(keys)
    e = _no_k(_groups(s))
    g = e.groupby(keys)
    n = g.size()
    assert table["n_epochs"].to_dict() == n.to_dict()
    assert table.xs("sgd", level="optimizer")["n_epochs"].sum() == 3 * EPOCHS - 2  # 1 diverged
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
    # SAM splits into its plain runs and its diagnosed ones (seed 0), which probe.
    t = s.trials
    diagnosed = t[(t["optimizer"] == "sam") & _probing(t)]
    sam = table.xs("sam", level="optimizer")
    assert set(sam.index.get_level_values("refresh")) == {"n/a", *diagnosed["refresh"]}
    plain = table.xs("n/a", level="refresh")
    assert (plain["time_probe"] == 0).all() and (plain["n_probe_forward"] == 0).all()
    probed = table.drop(index="n/a", level="refresh")
    assert (probed["time_probe"] > 0).all() and (probed["n_probe_forward"] > 0).all()


def test_overhead_ratio_and_floor(study_dir: Path) -> None:
    s = analysis.load(study_dir)
    ratio = analysis.overhead_ratio_table(s)
    e = _groups(s)
    assert (
        len(ratio)
        == e.loc[e["optimizer"] == "xsam", ["steps", "refresh"]].drop_duplicates().shape[0]
    )
    for _, row in ratio.iterrows():
        # The baseline is SAM without diagnostic probes (both k have plain runs).
        sam = e[(e["optimizer"] == "sam") & (e["steps"] == row["steps"]) & (e["refresh"] == "n/a")]
        assert len(sam) == EPOCHS
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
                "optimizer": d["optimizer"].iloc[0],
                "steps": d["steps"].iloc[0],
            }
        ),
        include_groups=False,
    )
    fid = analysis.fidelity_table(s)
    # XSAM's searches and the diagnosed sgd (no k) and sam trials' ones.
    assert fid["optimizer"].tolist() == ["sgd", "sam", "sam", "xsam", "xsam"]
    fid = fid.set_index(["optimizer", "steps"])
    groups = per.groupby(["optimizer", "steps"], dropna=False)
    assert groups.ngroups == len(fid)
    for key, d in groups:
        assert fid.loc[key, "n_refreshes"] == len(d)
        assert fid.loc[key, "share_v1_gt_v0"] == pytest.approx((d["v1"] > d["v0"]).mean())
        assert fid.loc[key, "share_best_gt_v1"] == pytest.approx((d["best"] > d["v1"]).mean())
    losses = analysis.refresh_losses(s)
    assert len(losses) == s.trials["n_refreshes"].sum()


def test_refresh_losses_fall_back_to_epoch_columns(study_dir: Path, tmp_path: Path) -> None:
    s = analysis.load(study_dir)
    s.__dict__["probes"] = s.probes.iloc[0:0]  # as if no curves were saved
    losses = analysis.refresh_losses(s)
    refreshed = s.epochs[s.epochs["alpha_refreshed"].astype(bool)]
    assert len(losses) == len(refreshed)
    np.testing.assert_allclose(losses["loss_v1"], refreshed["probe_loss_v1"])


def _plant_objective(study_dir: Path, root: Path) -> None:
    """A copy of the study whose final test accuracy depends on the optimizer alone."""
    shutil.copytree(study_dir, root)
    level = {"sgd": 0.3, "sam": 0.5, "xsam": 0.7}
    for d in root.iterdir():
        if not (d / "result.json").exists():
            continue
        rows = [json.loads(line) for line in (d / "result.json").read_text().splitlines()]
        optimizer = json.loads((d / "params.json").read_text())["optimizer"]
        for row in rows:
            row["test_acc"] = level[optimizer] + 0.001 * row["epoch"]
        (d / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_importances_rebuilt_from_trials(study_dir: Path, tmp_path: Path) -> None:
    s = analysis.load(study_dir)
    for evaluator in ("fanova", "ped-anova"):
        imp = analysis.importances(s, evaluator=evaluator)
        # Swept and varying over the complete trials: not seed, and not lr,
        # dataset or diagnostics (one value each among them).
        assert set(imp.index) == {"optimizer", "steps", "rho", "rho_max", "refresh_every"}
        assert imp.sum() == pytest.approx(1.0)
        assert (imp >= 0).all() and imp.is_monotonic_decreasing
    assert analysis.importances(s).attrs["evaluator"] == "fanova"  # auto, small study
    # The parameter that drives the objective comes first.
    _plant_objective(study_dir, tmp_path / "planted")
    planted = analysis.load(tmp_path / "planted")
    for evaluator in ("fanova", "ped-anova"):
        assert analysis.importances(planted, evaluator=evaluator).index[0] == "optimizer"
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

    # The launcher names the Optuna study like the study (study.json name).
    persist("elsewhere")  # not this study's: rebuilt from the trials
    imp = analysis.importances(root)
    assert imp.attrs["source"] == "trials" and "rho" in imp.index
    with pytest.raises(analysis.AnalysisError, match="no Optuna study 'tiny'"):
        analysis.importances(root, storage=journal)
    persist("tiny")
    imp = analysis.importances(root)
    assert list(imp.index) == ["x", "y"] and imp.attrs["source"] == "optuna.journal"
    assert list(analysis.importances(study_dir, storage=journal).index) == ["x", "y"]
    with pytest.raises(analysis.AnalysisError, match="not found"):
        analysis.importances(study_dir, storage=tmp_path / "missing.journal")


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
    for d in root.iterdir():
        if (d / "params.json").exists():
            config = json.loads((d / "params.json").read_text())
            if config["seed"] == 1:  # every optimizer and k has a seed-1 run
                (d / "params.json").write_text(json.dumps({**config, "model": "mlp"}))
    s = analysis.load(root)
    table = analysis.degradation_table(s)
    keys = [*CTX, "model", "optimizer", "steps"]
    assert list(table.columns[:4]) == keys
    done = s.trials.query("status == 'finished'")
    direct = done.groupby(keys, dropna=False)
    assert table["n"].sum() == direct.size().sum() == len(done) and len(table) == direct.ngroups
    assert (table["n"] == 1).all()  # one seed per model
    layout = analysis.degradation_layout(table)
    assert layout.index.names == [*CTX, "model", "optimizer"]
    for model in ("cnn1d", "mlp"):
        assert [o for _, m, o in layout.index if m == model] == ["sgd", "sam", "xsam"]
    assert "model" in analysis.overhead_table(s).columns
    assert "model" in analysis.overhead_ratio_table(s).columns
    assert "model" in analysis.fidelity_table(s).columns


def test_sgd_without_k_and_defaults_from_study_json(study_dir: Path, tmp_path: Path) -> None:
    """The study layer leaves ``steps`` unset for sgd (``when: optimizer in [sam, xsam]``)
    and keeps defaults out of params.json, recording them in study.json."""
    s = analysis.load(study_dir)
    defaults = s.info["trial_defaults"]
    assert defaults["steps"] == 1 and defaults["eta"] == 0.01
    for d in study_dir.iterdir():
        if (d / "params.json").exists():
            config = json.loads((d / "params.json").read_text())
            assert ("steps" in config) == (config["optimizer"] != "sgd")
            assert "eta" not in config and config["epochs"] == EPOCHS
    t = s.trials
    assert t["epochs"].eq(EPOCHS).all() and t["eta"].eq(0.01).all()  # set, and defaulted
    # A swept key its condition left unset stays missing: not the default k = 1.
    assert t.loc[t["optimizer"] == "sgd", "steps"].isna().all()
    assert t.loc[t["optimizer"] != "sgd", "steps"].notna().all()
    assert (t["status"] == "finished").sum() == 10
    table = analysis.degradation_table(s)
    sgd = table[table["optimizer"] == "sgd"]
    assert len(sgd) == 1 and sgd["n"].item() == 2 and pd.isna(sgd["steps"].item())
    layout = analysis.degradation_layout(table)
    assert list(layout.columns) == ["k=–", "k=1", "k=2"]
    assert layout.loc[("mnist1d", "sgd"), "k=1"] == "–"
    assert layout.loc[("mnist1d", "xsam"), "k=–"] == "–"
    kinds = ["degradation", "overhead", "curves"]  # the ones that draw k
    assert len(analysis.plot(s, kinds, tmp_path / "figs", formats=["png"])) == 3
