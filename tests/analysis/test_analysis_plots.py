"""Every plot kind renders, from a finished, a running and a nearly empty study."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from matplotlib.figure import Figure

import analysis

pytestmark = pytest.mark.ray

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _check_files(paths: list[Path], kind: str) -> None:
    assert sorted(p.name for p in paths) == [f"{kind}.png", f"{kind}.svg"]
    for p in paths:
        data = p.read_bytes()
        assert len(data) > 5000, p
        if p.suffix == ".png":
            assert data.startswith(PNG_MAGIC)
        else:
            assert ET.fromstring(data).tag.endswith("svg")


@pytest.mark.parametrize("kind", list(analysis.PLOTS))
@pytest.mark.parametrize("which", ["finished", "partial"])
def test_every_kind_renders(
    kind: str, which: str, study_dir: Path, partial_dir: Path, tmp_path: Path
) -> None:
    root = study_dir if which == "finished" else partial_dir
    paths = analysis.plot(root, kind, tmp_path)
    _check_files(paths, kind)


def test_plot_functions_return_figures(study_dir: Path) -> None:
    s = analysis.load(study_dir)
    fig = analysis.plot_degradation(s)
    assert isinstance(fig, Figure)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert not any("no finished trials" in t for t in texts)
    # The table beside the plot shows the paper's layout.
    table = [c for ax in fig.axes for c in ax.tables]
    assert table, "degradation figure has no table"
    cells = {c.get_text().get_text() for c in table[0].get_celld().values()}
    layout = analysis.degradation_layout(analysis.degradation_table(s))
    assert set(layout.to_numpy().ravel()) <= cells


def test_plots_of_a_study_that_has_hardly_started(study_dir: Path, tmp_path: Path) -> None:
    """One trial, no rows yet: every figure says what is missing instead of failing."""
    root = tmp_path / "early"
    root.mkdir()
    shutil.copy(study_dir / "study.json", root / "study.json")
    first = sorted(p for p in study_dir.iterdir() if (p / "params.json").exists())[0]
    (root / first.name).mkdir()
    shutil.copy(first / "params.json", root / first.name / "params.json")
    info = json.loads((root / "study.json").read_text())
    info.pop("finished_at")
    (root / "study.json").write_text(json.dumps(info))
    paths = analysis.plot(root, "all", tmp_path / "figs", formats=["png"])
    assert len(paths) == len(analysis.PLOTS)
    fig = analysis.plot_sensitivity(root)
    texts = " ".join(" ".join(t.get_text().split()) for ax in fig.axes for t in ax.texts)
    assert "≥ 2 complete trials" in texts


def test_bad_kind_or_format(study_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(analysis.AnalysisError, match="unknown plot kind"):
        analysis.plot(study_dir, "pie", tmp_path)
    with pytest.raises(analysis.AnalysisError, match="unknown figure format"):
        analysis.plot(study_dir, "alpha", tmp_path, formats=["bmpx"])
    assert analysis.plot(study_dir, "alpha,curves", tmp_path, formats=["png"]) == [
        tmp_path / "alpha.png",
        tmp_path / "curves.png",
    ]


def test_alpha_and_fidelity_draw_every_refresh_in_few_artists(study_dir: Path) -> None:
    """α*/ψ: one step line per colour (k) holding every refresh's value; the L(α)
    panel: one line per epoch, the mean loss per epoch and α (analysis.loss_curves)."""
    import numpy as np

    from analysis._tables import loss_curves

    s = analysis.load(study_dir)
    rl = analysis.refresh_losses(s)
    fig = analysis.plot_alpha(s)
    ax_a, ax_p = fig.axes[:2]
    for ax, y in ((ax_a, "alpha_star"), (ax_p, "psi")):
        lines = [ln for ln in ax.lines if ln.get_drawstyle() == "steps-post"]
        assert len(lines) == 3  # k=1, k=2 and sgd's (no k)
        drawn = np.concatenate([ln.get_xydata() for ln in lines])
        drawn = drawn[~np.isnan(drawn[:, 0])]
        want = rl[["epoch", y]].to_numpy(dtype=float)
        assert sorted(map(tuple, drawn)) == sorted(map(tuple, want))
    labels = [t.get_text() for t in ax_a.get_legend().get_texts()]
    assert sorted(labels) == ["k=1", "k=2", "k=–"]
    fig = analysis.plot_fidelity(s)
    curves = loss_curves(s)
    (collection,) = fig.axes[1].collections
    segments = collection.get_segments()
    assert len(segments) == curves["epoch"].nunique() == 3
    np.testing.assert_allclose(np.concatenate(segments), curves[["alpha", "loss"]].to_numpy(float))
    assert f"mean over {rl['trial_id'].nunique()} trials" in fig.axes[1].get_title()
