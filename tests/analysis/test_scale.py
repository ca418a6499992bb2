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


@pytest.fixture
def copy(study_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny study without its parquet cache."""
    root = tmp_path / "tiny"
    shutil.copytree(study_dir, root, ignore=shutil.ignore_patterns(".cache"))
    return root


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
