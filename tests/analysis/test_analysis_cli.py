"""``xsam-tune results|plot|report``: options, errors, and exports that round-trip."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import analysis
from analysis.cli import add_parsers, main

pytestmark = pytest.mark.ray


def _same(original: pd.DataFrame, back: pd.DataFrame) -> None:
    """Values survive a text export; dtypes are the reader's business."""
    assert list(back.columns) == list(original.columns)
    assert len(back) == len(original)
    for col in original.columns:
        a, b = original[col], back[col]
        if isinstance(a.dtype, pd.DatetimeTZDtype):
            # Same unit on both sides: pandas compares the raw integers of
            # two resolutions (us from text, ns here) once a NaT is present.
            pd.testing.assert_series_equal(
                pd.to_datetime(b, utc=True, format="ISO8601").astype(a.dtype),
                a,
                check_names=False,
            )
        elif pd.api.types.is_bool_dtype(a.dtype):
            assert [None if pd.isna(x) else bool(x) for x in a] == [
                None if pd.isna(x) else bool(x) for x in b
            ], col
        elif pd.api.types.is_numeric_dtype(a.dtype):
            np.testing.assert_allclose(
                pd.to_numeric(b).astype(float),
                a.astype(float),
                rtol=1e-12,
                equal_nan=True,
                err_msg=col,
            )
        else:
            assert [None if pd.isna(x) else str(x) for x in a] == [
                None if pd.isna(x) else str(x) for x in b
            ], col


@pytest.mark.parametrize("table", ["trials", "epochs", "probes"])
@pytest.mark.parametrize("fmt", ["csv", "parquet", "json"])
def test_results_round_trip_through_pandas(
    table: str, fmt: str, study_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / f"{table}.{fmt}"
    flag = [] if table == "trials" else [f"--{table}"]
    assert main(["results", str(study_dir), *flag, "--format", fmt, "-o", str(out)]) == 0
    original = analysis.load(study_dir).frame(table)
    if fmt == "parquet":
        pd.testing.assert_frame_equal(pd.read_parquet(out), original)  # dtypes too
    elif fmt == "json":
        pd.testing.assert_frame_equal(pd.read_json(out, orient="table"), original)
        assert len(json.loads(out.read_text())["data"]) == len(original)
    else:
        _same(original, pd.read_csv(out))


def test_results_to_stdout(study_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["results", str(study_dir), "--format", "csv"]) == 0
    csv = capsys.readouterr().out
    assert csv.splitlines()[0].startswith("trial_id,trial_dir,status,optimizer")
    assert main(["results", str(study_dir)]) == 0
    table = capsys.readouterr().out.splitlines()
    header = table[0].split()
    assert header[:3] == ["trial_id", "status", "optimizer"] and "objective" in header
    assert len(table) == 1 + 12


def test_results_query_sort_columns(study_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "results",
        str(study_dir),
        "--query",
        "status == 'finished' and optimizer == 'xsam'",
        "--sort=-objective",
        "--columns",
        "trial_id,objective",
        "steps",
        "--format",
        "csv",
    ]
    assert main(args) == 0
    from io import StringIO

    got = pd.read_csv(StringIO(capsys.readouterr().out))
    t = analysis.load(study_dir).trials
    want = t[(t["status"] == "finished") & (t["optimizer"] == "xsam")]
    want = want.sort_values("objective", ascending=False)[["trial_id", "objective", "steps"]]
    assert got["trial_id"].tolist() == want["trial_id"].tolist()
    assert list(got.columns) == ["trial_id", "objective", "steps"]
    assert (
        main(
            [
                "results",
                str(study_dir),
                "--epochs",
                "--sort",
                "test_acc",
                "--desc",
                "--columns",
                "test_acc",
                "--format",
                "json",
            ]
        )
        == 0
    )
    values = pd.read_json(StringIO(capsys.readouterr().out), orient="table")["test_acc"]
    assert values.dropna().is_monotonic_decreasing


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["results", "{missing}"], "study directory not found"),
        (["results", "{empty}"], "not a study directory"),
        (["results", "{study}", "--columns", "nope"], "unknown column 'nope'"),
        (["results", "{study}", "--sort", "tset_acc", "--epochs"], "did you mean test_acc"),
        (["results", "{study}", "--query", "steps >>> 1"], "bad --query"),
        (["results", "{study}", "--format", "parquet"], "needs -o FILE"),
        (["plot", "{study}", "--kind", "pie"], "unknown plot kind 'pie'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    args: list[str],
    message: str,
    study_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "empty").mkdir()
    paths = {"missing": tmp_path / "missing", "empty": tmp_path / "empty", "study": study_dir}
    assert main([a.format(**paths) for a in args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_add_parsers_plugs_into_another_cli(
    study_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser(prog="xsam-tune")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run")  # the study layer's own commands sit beside ours
    add_parsers(sub)
    args = parser.parse_args(
        [
            "plot",
            str(study_dir),
            "--kind",
            "alpha",
            "curves",
            "--format",
            "png",
            "-o",
            str(tmp_path / "figs"),
        ]
    )
    assert args.func(args) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / "figs" / "alpha.png"), str(tmp_path / "figs" / "curves.png")]
    args = parser.parse_args(["results", str(study_dir), "--probes", "--stale-after", "5"])
    assert args.table == "probes" and args.stale_after == 5.0
    with pytest.raises(analysis.AnalysisError):
        args = parser.parse_args(["results", str(tmp_path / "nope")])
        args.func(args)
