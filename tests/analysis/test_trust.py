"""What a reader can trust: figures inside their axes, n and intervals stated,
accuracy in percent where people read it, recorded probe losses, the claims verb.

Figures are drawn from the real tiny study (conftest), from a copy holding
one seed only, and from the interrupted copy; every point, line, bar and
band of every panel must lie inside its axes, and accuracy axes inside
[0, 100].
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest

import analysis
from analysis._style import optimizer_style
from analysis.cli import main
from analysis.plots import (
    plot_alpha,
    plot_curves,
    plot_degradation,
    plot_fidelity,
    plot_overhead,
    plot_sensitivity,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from matplotlib.transforms import Bbox

PLOTTERS = {
    "degradation": plot_degradation,
    "overhead": plot_overhead,
    "sensitivity": plot_sensitivity,
    "alpha": plot_alpha,
    "fidelity": plot_fidelity,
    "curves": plot_curves,
}

# A pixel of slack: markers centred on an axis limit are inside.
_SLACK = 1.5


def make_one_seed(src: Path, dst: Path, seed: int = 0) -> Path:
    """A copy of ``src`` keeping only the trials of one seed."""
    shutil.copytree(src, dst)
    for d in [p for p in dst.iterdir() if p.is_dir() and (p / "params.json").exists()]:
        if json.loads((d / "params.json").read_text()).get("seed") != seed:
            shutil.rmtree(d)
    return dst


@pytest.fixture(scope="module")
def one_seed_dir(study_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_one_seed(study_dir, tmp_path_factory.mktemp("one-seed") / "tiny")


def _outside(fig: Figure) -> list[str]:
    """Every drawn point outside its axes, and accuracy axes beyond [0, 100]."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import LineCollection, PathCollection, PolyCollection
    from matplotlib.patches import Rectangle

    FigureCanvasAgg(fig).draw()
    bad: list[str] = []
    for ax in fig.axes:
        if not ax.axison or not ax.get_visible():
            continue
        box = ax.bbox
        name = ax.get_title() or ax.get_ylabel() or "an axis"

        def check(points: np.ndarray, what: str, name: str = name, box: Bbox = box) -> None:
            pts = points[np.isfinite(points).all(axis=1)]
            out = (
                (pts[:, 0] < box.x0 - _SLACK)
                | (pts[:, 0] > box.x1 + _SLACK)
                | (pts[:, 1] < box.y0 - _SLACK)
                | (pts[:, 1] > box.y1 + _SLACK)
            )
            if out.any():
                bad.append(f"{name}: {int(out.sum())} {what} point(s) outside the axes")

        for line in ax.lines:
            if line.get_visible() and len(line.get_xydata()):
                check(line.get_transform().transform(line.get_xydata()), "line")
        for coll in ax.collections:
            if not coll.get_visible():
                continue
            if isinstance(coll, PathCollection) and len(coll.get_offsets()):
                offsets = np.asarray(coll.get_offsets(), dtype=float)
                check(coll.get_offset_transform().transform(offsets), "marker")
            elif isinstance(coll, (LineCollection, PolyCollection)):
                for path in coll.get_paths():
                    if len(path.vertices):
                        check(coll.get_transform().transform(path.vertices), "segment/band")
        for patch in ax.patches:
            if isinstance(patch, Rectangle) and patch.get_visible() and patch.get_height():
                corners = patch.get_patch_transform().transform([(0, 0), (1, 1)])
                check(ax.transData.transform(corners), "bar")
        label = ax.get_ylabel()
        if "%" in label and "acc" in label:
            lo, hi = sorted(ax.get_ylim())
            if lo < -1e-9 or hi > 100 + 1e-9:
                bad.append(f"{name}: accuracy axis {lo:.3g}..{hi:.3g} beyond [0, 100]")
    return bad


@pytest.mark.ray
@pytest.mark.parametrize("which", ["tiny", "one_seed", "interrupted"])
@pytest.mark.parametrize("kind", list(PLOTTERS))
def test_figures_stay_inside_their_axes(
    which: str, kind: str, study_dir: Path, one_seed_dir: Path, partial_dir: Path
) -> None:
    path = {"tiny": study_dir, "one_seed": one_seed_dir, "interrupted": partial_dir}[which]
    s = analysis.load(path, stale_after=0.0)  # the partial copy reads as interrupted
    fig = PLOTTERS[kind](s)
    assert not _outside(fig), _outside(fig)


@pytest.mark.ray
def test_optimizers_keep_their_colour_across_figures(study_dir: Path) -> None:
    from matplotlib.colors import to_hex

    style = optimizer_style()
    s = analysis.load(study_dir)
    for kind in ("degradation", "curves"):
        fig = PLOTTERS[kind](s)
        seen = {}
        for ax in fig.axes:
            legend = ax.get_legend()
            if legend is None:
                continue
            for text, handle in zip(legend.get_texts(), legend.legend_handles, strict=False):
                # labels such as "mnist1d / sam" or "xsam k=1 (trials, n=2)"
                names = [w for w in re.split(r"[\s/()]+", text.get_text()) if w in style]
                if names and hasattr(handle, "get_color"):
                    seen[names[0]] = to_hex(handle.get_color())
        assert seen, f"{kind}: no optimizer legend"
        for opt, colour in seen.items():
            assert colour.lower() == style[opt]["color"].lower(), (kind, opt)


@pytest.mark.ray
def test_degradation_states_n_and_draws_no_interval_from_two_seeds(study_dir: Path) -> None:
    table = analysis.degradation_table(study_dir)
    assert {"n", "mean", "low", "high", "interval"} <= set(table.columns)
    two = table[table["n"] < 3]
    assert len(two) and two["low"].isna().all() and two["high"].isna().all()
    assert two["interval"].str.contains("n < 3").all()
    assert table["mean"].dropna().between(0, 100).all()  # percent


@pytest.mark.ray
def test_results_table_shows_accuracy_in_percent(study_dir: Path) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["results", str(study_dir)]) == 0
    header = out.getvalue().splitlines()[0]
    assert "best_test_acc (%)" in header
    # the exported frame keeps the documented fraction
    csv = io.StringIO()
    with contextlib.redirect_stdout(csv):
        assert main(["results", str(study_dir), "--format", "csv"]) == 0
    frame = pd.read_csv(io.StringIO(csv.getvalue()))
    assert frame["best_test_acc"].dropna().le(1.0).all()


@pytest.mark.ray
def test_claims_verb_prints_every_claim(study_dir: Path) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["claims", str(study_dir)]) == 0
    text = out.getvalue()
    for claim in ("XSAM ≥ SAM", "SAM's accuracy falls", "Prop. 1.1", "Prop. 1.2", "α* is stable"):
        assert claim in text
    # two seeds: the accuracy claims cannot be decided
    table = analysis.claims(study_dir)
    acc = table[table["claim"].str.startswith("XSAM ≥ SAM")]
    assert set(acc["verdict"]) == {"inconclusive"} and acc["why"].str.contains("too few").all()


def test_claims_verb_rejects_a_missing_directory(tmp_path: Path) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["claims", str(tmp_path / "nope")]) == 2
    assert len(err.getvalue().strip().splitlines()) == 1 and "not found" in err.getvalue()


@pytest.mark.ray
def test_report_opens_with_the_claims(study_dir: Path, tmp_path: Path) -> None:
    html_path, md_path = analysis.write_report(study_dir, tmp_path, kinds=["alpha"])
    page = html_path.read_text()
    assert 'id="claims"' in page
    assert page.index('id="claims"') < page.index('id="figures"')
    md = md_path.read_text()
    assert md.index("## Claims") < md.index("## Multi-step degradation")
    assert "| claim |" in md


def _alpha_delta_study(root: Path) -> Path:
    """A one-trial study whose probe grid (δ = 0.3) misses α = 1: the record's
    ``loss_v1`` (probed at α = 1) differs from the nearest grid point's loss."""
    study = root / "grid03"
    trial = study / "train_trial_aaaaa_00000_0"
    trial.mkdir(parents=True)
    alphas = [0.0, 0.3, 0.6, 0.9, 1.2, 1.5, 1.8]
    losses = [1.0, 1.1, 1.2, 1.3, 1.25, 1.2, 1.1]
    config = {"optimizer": "xsam", "steps": 1, "seed": 0, "epochs": 2, "alpha_delta": 0.3}
    (trial / "params.json").write_text(json.dumps(config))
    rows = []
    for epoch in (1, 2):
        record = {
            "step": (epoch - 1) * 10,
            "epoch": epoch,
            "alpha": 0.9,
            "psi": 0.4,
            "alphas": alphas,
            "losses": losses,
            "loss_v0": 1.0,
            "loss_v1": 1.35,  # at α = 1, off the grid: L(0.9) = 1.3 is not it
            "loss_best": 1.3,
        }
        rows.append(
            {
                "trial_id": "aaaaa_00000",
                "epoch": epoch,
                "test_acc": 0.5,
                "alpha": 0.9,
                "alpha_refreshed": True,
                "probe_loss_v0": 1.0,
                "probe_loss_v1": 1.35,
                "probe_loss_best": 1.3,
                "probes": [record],
                "time_total_s": float(epoch),
            }
        )
    (trial / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (study / "study.json").write_text(json.dumps({"name": "grid03", "finished_at": 1.0}))
    return study


def test_fidelity_uses_the_recorded_losses_at_alpha_delta_0_3(tmp_path: Path) -> None:
    study = analysis.load(_alpha_delta_study(tmp_path))
    rl = analysis.refresh_losses(study)
    assert rl["loss_v1"].tolist() == [1.35, 1.35]  # not L(α = 0.9) = 1.3
    assert rl["loss_best"].tolist() == [1.3, 1.3]
    fid = analysis.fidelity_table(study)
    assert fid["share_best_gt_v1"].tolist() == [0.0]  # the grid missed SAM's direction
    fig = plot_fidelity(study)
    drawn = {round(float(y), 6) for ax in fig.axes for ln in ax.lines for y in ln.get_ydata()}
    # L(v1) − L(v0) = 0.35 and L(v(α*)) − L(v1) = −0.05 (the grid would give 0.3 and 0)
    assert {0.35, -0.05} <= drawn and not _outside(fig)
    table = analysis.claims(study)
    p12 = table[table["claim"].str.startswith("L(v(α*)) ≥ L(v1)")].iloc[0]
    assert p12["verdict"] == "contradicted" and "not a grid point" in p12["why"]


def _xsam_study(storage: Path, data_dir: Path, name: str, concurrent: int) -> Path:
    """Two XSAM trials (seeds 0, 1) run ``concurrent`` at a time, through the CLI."""
    import yaml

    from study.cli import main as xsam_tune

    spec = {
        "name": name,
        "trial": {
            "dataset": "mnist1d",
            "model": "cnn1d",
            "data_dir": str(data_dir),
            "optimizer": "xsam",
            "epochs": 6,
            "batch_size": 250,
            "lr": 0.05,
            "rho_max": 0.05,
            "refresh_unit": "epoch",
            "refresh_every": 1,
            "timing": True,
            "device": "cpu",
            "threads": 1,
        },
        "space": {"seed": {"grid": [0, 1]}},
        "search": {"algorithm": "grid"},
        "metric": {"name": "test_acc", "mode": "max"},
        "scheduler": {"name": "none"},
        "resources": {"cpu": 1, "gpu": 0},
        "max_concurrent_trials": concurrent,
        "max_failures": 0,
        "checkpoint_every": 0,
    }
    path = storage / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    with contextlib.redirect_stdout(io.StringIO()):
        code = xsam_tune(["run", str(path), "--storage", str(storage), "--name", name, "-q"])
    assert code == 0
    return storage / name


@pytest.mark.ray
@pytest.mark.slow
def test_overhead_estimate_does_not_depend_on_trials_sharing_the_cores(
    ray_session: None, mnist1d_dir: Path, tmp_path: Path
) -> None:
    """The within-trial estimate of two trials run side by side on the two cores
    agrees with the same trials run one at a time, to a quarter of its size.

    Sharing the cores still moves the CPU-time share by a few points through cache
    contention (19.1 % alone against 21.1 % side by side, IQRs 18.6–19.5 and
    20.3–22.0, on a quiet machine; 18.0 against 20.9 in one CI run), so the
    interquartile ranges need not overlap. What the bound rules out is a figure
    that moves with the epoch time, as dividing one trial's wall time by
    another's did: sharing stretched epochs from 3.5 s to 6.2 s (+77 %).
    """
    side = analysis.load(_xsam_study(tmp_path, mnist1d_dir, "side_by_side", 2))
    alone = analysis.load(_xsam_study(tmp_path, mnist1d_dir, "one_at_a_time", 1))
    a = analysis.overhead_estimate(side.trials, side.epochs).iloc[0]
    b = analysis.overhead_estimate(alone.trials, alone.epochs).iloc[0]
    assert a["n_epochs"] == b["n_epochs"] == 2 * 5  # epochs after the first, both trials
    smaller = min(a["median"], b["median"])
    assert abs(a["median"] - b["median"]) <= 0.25 * smaller, (a.to_dict(), b.to_dict())
