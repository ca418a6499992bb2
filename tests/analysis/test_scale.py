"""Analysis that scales: vectorised tables equal straightforward ones, each table is
computed once per Study, the parquet cache gives the same frames back and is
invalidated by any change, and Ray's run state is read only when a label needs it.

All on the real tiny study of conftest.py (and copies of it).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import analysis
from analysis import _results
from analysis._cache import CACHE_DIR

pytestmark = pytest.mark.ray


# -- reference implementations: one refresh or one group at a time -------------


def _reference_refresh_losses(probes: pd.DataFrame) -> pd.DataFrame:
    """Per refresh, in plain Python: recorded losses, else the grid's."""
    rows = []
    for (_, _), d in probes.groupby(["trial_id", "refresh_index"], sort=False):
        a = d["alpha"].to_numpy(dtype=float)
        loss = d["loss"].to_numpy(dtype=float)
        step = np.min(np.diff(np.sort(a))) if len(a) > 1 else math.inf

        def at(x: float, a=a, loss=loss, step=step) -> float:
            i = int(np.argmin(np.abs(a - x)))
            return float(loss[i]) if abs(a[i] - x) <= step / 2 + 1e-9 else math.nan

        star = d[d["is_star"].fillna(False).astype(bool)]
        grid = {
            "loss_v0": at(0.0),
            "loss_v1": at(1.0),
            "loss_best": float(star["loss"].iloc[0]) if len(star) else float(d["loss"].max()),
        }
        row = d.iloc[0].to_dict()
        for name, value in grid.items():
            recorded = row.get(name)
            row[name] = value if recorded is None or pd.isna(recorded) else float(recorded)
        rows.append(row)
    return pd.DataFrame(rows)


def _check_refresh_losses(s: analysis.Study) -> pd.DataFrame:
    got = analysis.refresh_losses(s)
    want = _reference_refresh_losses(s.probes)
    assert len(got) == len(want) == s.trials["n_refreshes"].sum()
    assert got["trial_id"].tolist() == want["trial_id"].tolist()
    assert got["refresh_index"].tolist() == want["refresh_index"].tolist()
    for col in ("loss_v0", "loss_v1", "loss_best", "alpha_star", "psi"):
        np.testing.assert_array_equal(got[col].to_numpy(float), want[col].to_numpy(float), col)
    for col in ("epoch", "step", "steps", "seed"):
        g, w = (pd.to_numeric(x[col]).astype("float64").to_numpy() for x in (got, want))
        np.testing.assert_array_equal(g, w, col)
    assert got["optimizer"].tolist() == want["optimizer"].tolist()
    return got


def test_refresh_losses_equal_the_per_refresh_reference(study_dir: Path) -> None:
    s = analysis.load(study_dir)
    got = _check_refresh_losses(s)
    # The study records every refresh's losses, and its grid (δ = 0.1) holds α = 0 and 1:
    # the recorded values are the grid's.
    p = s.probes
    assert p[["loss_v0", "loss_v1", "loss_best"]].notna().all().all()
    np.testing.assert_allclose(got["loss_v1"], p.loc[np.isclose(p["alpha"], 1.0), "loss"])


def test_refresh_losses_from_the_grid_equal_the_reference(study_dir: Path) -> None:
    """Older studies: records without loss_v0/v1/best; a grid with a gap; no α* mark."""
    s = analysis.load(study_dir)
    p = s.probes.copy()
    p[["loss_v0", "loss_v1", "loss_best"]] = np.nan
    # One refresh loses its α* mark (highest loss counts), another its α = 1 point
    # and a neighbour (no grid point within half a step: NaN).
    first = (p["trial_id"] == p["trial_id"].iloc[0]) & (p["refresh_index"] == 0)
    p.loc[first, "is_star"] = False
    last = (p["trial_id"] == p["trial_id"].iloc[-1]) & (
        p["refresh_index"] == p["refresh_index"].iloc[-1]
    )
    p = p[~(last & p["alpha"].between(0.85, 1.15))].reset_index(drop=True)
    s.__dict__["probes"] = p
    got = _check_refresh_losses(s)
    assert got["loss_v1"].isna().sum() == 1
    first = (p["trial_id"] == p["trial_id"].iloc[0]) & (p["refresh_index"] == 0)
    assert got.loc[0, "loss_best"] == p.loc[first, "loss"].max()


def test_degradation_overhead_and_fidelity_equal_plain_loops(study_dir: Path) -> None:
    s = analysis.load(study_dir)
    t = s.trials
    # Degradation: mean, std and n per (dataset, optimizer, k).
    table = analysis.degradation_table(s)
    done = t[t["status"] == "finished"]
    for _, row in table.iterrows():
        sel = done[
            (done["dataset"] == row["dataset"])
            & (done["optimizer"] == row["optimizer"])
            & (done["steps"].isna() if pd.isna(row["steps"]) else done["steps"] == row["steps"])
        ]
        v = sel["final_test_acc"].to_numpy(float) * 100
        assert row["n"] == len(v)
        assert row["mean"] == pytest.approx(v.mean())
        assert row["std"] == pytest.approx(v.std(ddof=1))
        cell = analysis.degradation_layout(table).loc[
            (row["dataset"], row["optimizer"]),
            "k=–" if pd.isna(row["steps"]) else f"k={row['steps']}",
        ]
        assert cell.startswith(f"{row['mean']:.1f} ± {row['std']:.1f}")
    # Fidelity: shares over each group's refreshes.
    rl = analysis.refresh_losses(s)
    for _, row in analysis.fidelity_table(s).iterrows():
        sel = rl[
            (rl["optimizer"] == row["optimizer"])
            & (rl["steps"].isna() if pd.isna(row["steps"]) else rl["steps"] == row["steps"])
        ]
        assert row["n_refreshes"] == len(sel)
        share = sum(b > a for a, b in zip(sel["loss_v0"], sel["loss_v1"], strict=True)) / len(sel)
        assert row["share_v1_gt_v0"] == pytest.approx(share)
        assert row["mean_alpha_star"] == pytest.approx(sel["alpha_star"].mean())


def test_each_table_is_computed_once_per_study(
    study_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from analysis import _tables

    s = analysis.load(study_dir)
    calls = {"refresh": 0, "overhead": 0}
    real_refresh, real_overhead = _tables._refresh_losses, _tables._overhead

    def counted(name, fn):
        def wrapper(*args):
            calls[name] += 1
            return fn(*args)

        return wrapper

    monkeypatch.setattr(_tables, "_refresh_losses", counted("refresh", real_refresh))
    monkeypatch.setattr(_tables, "_overhead", counted("overhead", real_overhead))
    first = analysis.refresh_losses(s)
    first["loss_v0"] = -1.0  # a caller's edit stays its own
    analysis.fidelity_table(s)
    analysis.overhead_table(s)
    analysis.overhead_ratio_table(s)
    again = analysis.refresh_losses(s)
    assert calls == {"refresh": 1, "overhead": 1}
    assert (again["loss_v0"] > 0).all()
    # A frame replaced by hand is read again.
    s.__dict__["probes"] = s.probes.iloc[0:0]
    assert len(analysis.refresh_losses(s)) == s.epochs["alpha_refreshed"].astype(bool).sum()
    assert calls["refresh"] == 2


# -- parquet cache --------------------------------------------------------------


def _frames(s: analysis.Study) -> dict[str, pd.DataFrame]:
    return {k: s.frame(k) for k in ("trials", "epochs", "probes")}


def test_cache_gives_the_same_frames_and_follows_changes(copy: Path) -> None:
    first = analysis.load(copy)
    files = sorted(p.name for p in (copy / CACHE_DIR).iterdir())
    assert [f.split("-")[0] for f in files] == ["epochs", "meta", "probes", "summary", "trials"]
    assert first._cached is not None
    fresh = _frames(first)
    second = analysis.load(copy)
    assert second._cached is not None and not second._raw
    for kind, frame in _frames(second).items():
        pd.testing.assert_frame_equal(frame, fresh[kind], check_exact=True, obj=kind)
    assert second.swept == first.swept and second.settings == first.settings
    # A changed result.json (a resumed trial reports again) gives another fingerprint.
    d = copy / fresh["trials"].loc[fresh["trials"]["status"] == "finished", "trial_dir"].iloc[0]
    lines = (d / "result.json").read_text().splitlines()
    row = json.loads(lines[-1]) | {"test_acc": 0.987}
    (d / "result.json").write_text("\n".join([*lines[:-1], json.dumps(row)]) + "\n")
    third = analysis.load(copy)
    assert (third.trials["final_test_acc"] == 0.987).sum() == 1
    assert len(list((copy / CACHE_DIR).glob("trials-*.parquet"))) == 1  # the stale one removed
    # A removed trial folder, too.
    shutil.rmtree(d)
    assert len(analysis.load(copy).trials) == len(fresh["trials"]) - 1


def test_no_cache_while_live_or_where_the_study_cannot_be_written(copy: Path) -> None:
    info = json.loads((copy / "study.json").read_text())
    info.pop("finished_at")
    (copy / "study.json").write_text(json.dumps(info))
    live = analysis.load(copy, stale_after=1e9)  # the fixture may be older than the default
    assert live.live and live._cached is None and not (copy / CACHE_DIR).exists()
    (copy / "study.json").write_text(json.dumps({**info, "finished_at": "2026-01-01"}))
    (copy / ".cache").write_text("a file where the cache folder would go")
    s = analysis.load(copy)
    assert s._cached is None and len(s.trials) == 12


def test_run_state_is_read_only_when_a_label_needs_it(
    copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[int] = []
    real = _results._read_experiment_state

    def counted(files):
        reads.append(len(files))
        return real(files)

    monkeypatch.setattr(_results, "_read_experiment_state", counted)
    # Finished study, every label fixed by the trial folders: not read.
    statuses = analysis.load(copy).trials["status"].value_counts()
    assert reads == [] and statuses["finished"] == 10 and statuses["errored"] == 1
    # The driver still runs: Ray's state says which trials run or wait.
    shutil.rmtree(copy / ".cache")
    info = json.loads((copy / "study.json").read_text())
    info.pop("finished_at")
    (copy / "study.json").write_text(json.dumps(info))
    assert len(analysis.load(copy).trials) == 12
    assert reads == [1]


# -- figures at scale: aggregates computed once, .probes read in part ----------


def _synthetic(study_dir: Path, out: Path, trials: int, epochs: int) -> Path:
    """A synthetic study made from the real tiny one by benchmarks/analysis_scale.py."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "analysis_scale.py"
    spec = importlib.util.spec_from_file_location("analysis_scale", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make(study_dir, out, trials, epochs)


def test_curve_intervals_equal_a_t_interval_per_group_and_epoch(
    study_dir: Path, tmp_path: Path
) -> None:
    """The learning-curve bands: mean ± t_{0.975, n-1}·s/√n of each group's trials at
    each epoch, computed group by group with scipy, on 36 trials (3 seeds of each
    of the tiny study's trials, so every group has ≥ 3 trials)."""
    from scipy import stats

    from analysis._tables import CURVE_METRICS, learning_curves

    s = analysis.load(_synthetic(study_dir, tmp_path / "syn", 36, 4))
    got = learning_curves(s)
    ep = s.epochs.merge(s.trials[["trial_id", "status"]], on="trial_id")
    ep = ep[ep["status"] != "diverged"]
    checked = 0
    for m in CURVE_METRICS:
        scale = 100.0 if m.endswith("_acc") else 1.0
        for (opt, k, epoch), rows in ep.groupby(["optimizer", "steps", "epoch"], dropna=False):
            group = opt if pd.isna(k) else f"{opt} k={k:g}"
            row = got[(got["metric"] == m) & (got["group"] == group) & (got["epoch"] == epoch)]
            assert len(row) == 1, (m, group, epoch)
            row = row.iloc[0]
            v = rows[m].to_numpy(float) * scale
            v = v[np.isfinite(v)]
            assert row["n"] == len(v)
            assert row["mean"] == pytest.approx(v.mean(), rel=1e-12)
            if len(v) >= 3:
                low, high = stats.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=stats.sem(v))
                assert (row["low"], row["high"]) == pytest.approx((low, high), rel=1e-9)
                checked += 1
            else:
                assert pd.isna(row["low"]) and pd.isna(row["high"])
    assert checked >= 4 * 5 * 4  # every metric, group and epoch has an interval


def test_report_reads_probes_in_part_and_gives_the_same_numbers(
    study_dir: Path, copy: Path, tmp_path: Path
) -> None:
    """A report reads three per-refresh or grid columns of .probes, never all of it;
    what it computes from them equals the same computation on the whole frame."""
    from analysis._report import _ClaimsFrames, write_report
    from analysis._tables import loss_curves, refresh_records

    analysis.load(copy)  # writes the parquet cache
    s = analysis.load(copy)
    assert s._cached is not None
    write_report(s, tmp_path / "report", kinds="alpha,fidelity")  # the ones that read .probes
    assert "probes" not in s.__dict__  # the grid's 21 rows per refresh were not built
    full = analysis.load(study_dir)
    probes = full.probes
    # Claims: the records' losses, one row per refresh, give the same table.
    pd.testing.assert_frame_equal(analysis.claims(_ClaimsFrames(s)), analysis.claims(full))
    rec = refresh_records(s)
    first = probes.drop_duplicates(["trial_id", "refresh_index"])
    assert rec["start"].tolist() == first.index.tolist()
    # Refresh losses and L(α) curves from columns of the cache = from the whole frame.
    pd.testing.assert_frame_equal(analysis.refresh_losses(s), analysis.refresh_losses(full))
    curves = loss_curves(s)
    want = probes.dropna(subset=["loss"]).groupby(["epoch", "alpha"])["loss"].agg(["mean", "size"])
    assert len(curves) == len(want) == 3 * 21  # 3 epochs x 21 grid points
    np.testing.assert_allclose(curves["loss"], want["mean"], rtol=1e-12)
    assert curves["n"].tolist() == want["size"].tolist()
    assert curves.attrs["n_trials"] == probes["trial_id"].nunique()


def test_probe_columns_from_rows_cache_and_frame_equal_the_frame(
    partial_dir: Path, copy: Path
) -> None:
    cols = ["trial_id", "steps", "epoch", "alpha", "is_star", "loss_best"]
    live = analysis.load(partial_dir, stale_after=1e9)
    assert live._cached is None  # built from the rows read
    part = live._probe_columns(cols)
    pd.testing.assert_frame_equal(part, live.probes[cols])
    analysis.load(copy)
    cached = analysis.load(copy)
    assert cached._cached is not None
    part = cached._probe_columns(cols)
    pd.testing.assert_frame_equal(part, cached.probes[cols])
    edited = cached.probes.iloc[:5]
    cached.__dict__["probes"] = edited  # a frame replaced by hand is what is read
    pd.testing.assert_frame_equal(cached._probe_columns(cols), edited[cols])
