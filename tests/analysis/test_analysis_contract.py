"""The analysis layer reads the contract's names and the study layer's fields, and
its plot kinds are a registry: unknown kinds fail the same way everywhere."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.figure import Figure

import analysis
import xsam_contract
from analysis._cache import CACHE_DIR
from study.cli import main as xsam_tune

pytestmark = pytest.mark.ray


def test_dtypes_and_statuses_come_from_the_contract(
    study_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Change a dtype in the contract and the frames follow: there is no second table."""
    s = analysis.load(study_dir)
    assert str(s.trials["seed"].dtype) == xsam_contract.TRIAL_KEYS["seed"].dtype == "Int64"
    assert str(s.epochs["n_forward"].dtype) == xsam_contract.METRICS["n_forward"].dtype
    assert list(s.trials["status"].cat.categories) == list(xsam_contract.STATUSES)
    assert tuple(xsam_contract.STATUSES) == analysis.STATUSES
    seed = dataclasses.replace(xsam_contract.TRIAL_KEYS["seed"], dtype="float64")
    monkeypatch.setitem(xsam_contract.TRIAL_KEYS, "seed", seed)
    n_forward = xsam_contract.METRICS["n_forward"]
    monkeypatch.setitem(
        xsam_contract.METRICS, "n_forward", dataclasses.replace(n_forward, dtype="float64")
    )
    again = analysis.load(study_dir)
    assert str(again.trials["seed"].dtype) == "float64"
    assert str(again.epochs["n_forward"].dtype) == "float64"


def test_study_json_metric_and_host_are_read_as_written(study_dir: Path, tmp_path: Path) -> None:
    info = json.loads((study_dir / "study.json").read_text())
    s = analysis.load(study_dir)
    assert (s.metric, s.mode) == (info["metric"], info["mode"]) == ("test_acc", "max")
    html_path, _ = analysis.write_report(s, tmp_path / "report", kinds=["curves"])
    assert f"<td>{info['host']}</td>" in html_path.read_text()
    root = tmp_path / "study"
    shutil.copytree(study_dir, root)
    # Several objectives: `metrics` lists them all, the first is the one ranked by.
    objectives = [{"name": "test_loss", "mode": "min"}, {"name": "time_epoch", "mode": "min"}]
    (root / "study.json").write_text(json.dumps({**info, "metrics": objectives}))
    s = analysis.load(root)
    assert (s.metric, s.mode) == ("test_loss", "min")
    assert s.trials["objective"].equals(s.trials["final_test_loss"].rename("objective"))
    # A field of another JSON type than the contract's is an error naming it, not a guess.
    for bad, message in (
        ({"metrics": "test_acc"}, "metrics is 'test_acc'; expected a JSON list"),
        ({"metrics": [{"name": "test_acc"}]}, r"metrics\[0\] is .*expected \{name"),
        ({"space": ["rho"]}, r"space is \['rho'\]; expected a JSON object"),
    ):
        (root / "study.json").write_text(json.dumps({**info, **bad}))
        with pytest.raises(analysis.AnalysisError, match=message):
            analysis.load(root)


def test_unknown_plot_kind_is_an_error_at_every_entry_point(
    study_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    allowed = ", ".join(analysis.PLOTS)
    for call in (
        lambda: analysis.plot(study_dir, "pie", tmp_path),
        lambda: analysis.plot(study_dir, ["alpha", "pie"], tmp_path),
        lambda: analysis.write_report(study_dir, tmp_path / "report", kinds="pie"),
    ):
        with pytest.raises(analysis.AnalysisError) as info:
            call()
        assert str(info.value) == f"unknown plot kind 'pie'; choose one of {allowed} or all"
    assert not list(tmp_path.iterdir())  # nothing drawn before the check
    assert xsam_tune(["plot", str(study_dir), "--kind", "alpha", "pie", "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == f"xsam-tune: error: unknown plot kind 'pie'; choose one of {allowed} or all\n"
    assert not list(tmp_path.iterdir())


def plot_toy(
    study: analysis.Study | Path, out_dir: Path | None = None, formats: tuple[str, ...] = ("png",)
) -> Figure | list[Path]:
    """A toy kind: one bar per status (registered by the test below)."""
    s = study if isinstance(study, analysis.Study) else analysis.load(study)
    fig = Figure()
    counts = s.trials["status"].value_counts()
    fig.subplots().bar(counts.index.astype(str), counts.to_numpy())
    if out_dir is None:
        return fig
    paths = [Path(out_dir) / f"toy.{fmt}" for fmt in formats]
    for path in paths:
        fig.savefig(path, format=path.suffix[1:])
    return paths


def test_a_registered_plot_kind_is_drawn_and_offered_by_the_cli(
    study_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    analysis.PLOTS.register("toy", f"{__name__}:plot_toy")
    try:
        assert list(analysis.PLOTS)[-1] == "toy"
        assert isinstance(analysis.PLOTS.load("toy")(study_dir), Figure)
        assert analysis.plot(study_dir, "toy", tmp_path, formats=["png"]) == [tmp_path / "toy.png"]
        assert xsam_tune(["plot", "--help"]) == 0
        assert "toy" in capsys.readouterr().out.split("Kinds:")[1]
        assert xsam_tune(["plot", str(study_dir), "--kind", "toy", "-o", str(tmp_path)]) == 0
        assert (tmp_path / "toy.svg").exists()
    finally:
        analysis.PLOTS.unregister("toy")
    assert "toy" not in analysis.PLOTS


def test_the_cli_imports_only_what_a_verb_needs(study_dir: Path, tmp_path: Path) -> None:
    """``--help`` and the parser: no pandas; ``results`` on a cold cache: pandas (it
    reads the JSON and writes the cache) and no figure or statistics library; on a
    warm cache: nothing heavy (it prints the cached summary)."""
    root = tmp_path / "study"
    shutil.copytree(study_dir, root)
    shutil.rmtree(root / CACHE_DIR, ignore_errors=True)
    code = (
        "import contextlib, io, json, sys\n"
        "from study.cli import main\n"
        "heavy = ('pandas', 'matplotlib', 'seaborn', 'scipy', 'optuna', 'ray', 'torch')\n"
        "found = {}\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    if sys.argv[2] == 'help':\n"
        "        main(['--help'])\n"
        "        main(['plot', '--help'])\n"
        "    else:\n"
        "        assert main(['results', sys.argv[1]]) == 0\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))\n"
    )

    def imported(verb: str) -> list[str]:
        out = subprocess.run(
            [sys.executable, "-c", code, str(root), verb],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
        return json.loads(out.stdout.strip().splitlines()[-1])

    assert imported("help") == []
    assert not (root / CACHE_DIR).exists()
    assert imported("results") == ["pandas"]  # cold: the JSON read, the cache written
    assert list((root / CACHE_DIR).glob("summary-*.json"))
    assert imported("results") == []  # warm: the summary printed, no pandas


def test_optimizer_order_follows_the_registry(study_dir: Path) -> None:
    table = analysis.degradation_table(study_dir)
    registered = [o for o in xsam_contract.OPTIMIZERS if o in set(table["optimizer"])]
    assert list(pd.unique(table["optimizer"])) == registered == ["sgd", "sam", "xsam"]
