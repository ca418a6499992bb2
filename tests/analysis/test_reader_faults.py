"""The reader under damaged files (issue 9): a torn ``result.json`` line, a row glued
onto a cut line after a resume, an empty or garbage ``params.json``, and the true
label of a trial that errored out while Ray's state still said it ran.

Each test damages a copy of the real tiny study (conftest.py) the way a crash or a
full disk does, then reads it as ``xsam-tune results`` would.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import analysis
from analysis import _results
from analysis._cache import CACHE_DIR
from analysis.cli import main

pytestmark = pytest.mark.ray


def _trial(root: Path, **match: object) -> Path:
    """The folder of the first trial whose params.json has ``match``."""
    for d in sorted(p for p in root.iterdir() if (p / "params.json").is_file()):
        config = json.loads((d / "params.json").read_text())
        if all(config.get(k) == v for k, v in match.items()):
            return d
    raise LookupError(match)


def _lines(d: Path) -> list[str]:
    return (d / "result.json").read_text().splitlines()


def _epochs(s: analysis.Study, d: Path) -> list[int]:
    tid = s.trials.loc[s.trials["trial_dir"] == d.name, "trial_id"].item()
    return s.epochs.loc[s.epochs["trial_id"] == tid, "epoch"].tolist()


def test_torn_last_line_is_reported_and_the_rows_before_it_kept(
    copy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    d = _trial(copy, optimizer="xsam", steps=2, seed=0)
    lines = _lines(d)
    (d / "result.json").write_text("\n".join(lines[:2]) + "\n" + lines[2][: len(lines[2]) // 2])
    with caplog.at_level(logging.WARNING, logger="analysis"):
        s = analysis.load(copy)
    assert _epochs(s, d) == [1, 2]
    row = s.trials.loc[s.trials["trial_dir"] == d.name].iloc[0]
    assert row["epochs_done"] == 2 and row["final_test_acc"] == json.loads(lines[1])["test_acc"]
    assert len(s.problems) == 1
    assert f"{d.name}/result.json line 3: torn last line" in s.problems[0]
    assert "2 rows before it are kept" in s.problems[0]
    assert [r.getMessage() for r in caplog.records] == [f"warning: {copy}: {s.problems[0]}"]
    # The other trials are whole.
    assert len(s.trials) == 12 and (s.trials["status"] == "finished").sum() == 9


def test_a_row_glued_onto_a_cut_line_is_recovered(copy: Path) -> None:
    """A crash cut epoch 2's line; the resumed trial appended epoch 2 again and 3
    without a newline in between, and a stray garbage line sits in the middle."""
    d = _trial(copy, optimizer="sam", steps=1, seed=0)
    lines = _lines(d)
    text = lines[0] + "\n" + "{not json\n" + lines[1][:57] + lines[1] + "\n" + lines[2] + "\n"
    (d / "result.json").write_text(text)
    s = analysis.load(copy)
    assert _epochs(s, d) == [1, 2, 3]
    e = s.epochs[s.epochs["trial_id"] == json.loads(lines[0])["trial_id"]]
    assert e["test_acc"].tolist() == [json.loads(x)["test_acc"] for x in lines]
    assert s.trials.loc[s.trials["trial_dir"] == d.name, "status"].item() == "finished"
    assert len(s.problems) == 2
    assert "line 2: not a JSON object" in s.problems[0]
    assert "line 3: a row glued onto a cut line; the row was recovered" in s.problems[1]


def test_rows_are_read_as_json_reads_them(copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast parser (orjson) gives json's objects, and the lines it would refuse
    or misread (Ray's NaN and Infinity tokens, an integer beyond 64 bits, a lone
    surrogate) are read by json: the frames equal those of a json-only read."""
    d = _trial(copy, optimizer="xsam", steps=2, seed=0)
    for line in (d / "result.json").read_bytes().splitlines():
        assert repr(_results._parse_row(line)) == repr(json.loads(line))
    # A lone surrogate (orjson refuses it; the frames' string arrays would too).
    assert _results._parse_row(b'{"note": "\\ud800"}') == {"note": "\ud800"}
    rows = [json.loads(x) for x in _lines(d)]
    rows[0]["test_loss"], rows[1]["test_loss"], rows[2]["train_loss"] = (
        math.nan,
        math.inf,
        -math.inf,
    )
    for i, row in enumerate(rows):
        row["big"] = 2**70 + i
    (d / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    fast = analysis.load(copy)
    frames = {k: fast.frame(k) for k in ("trials", "epochs", "probes")}
    e = frames["epochs"][frames["epochs"]["trial_id"] == rows[0]["trial_id"]]
    assert math.isnan(e["test_loss"].iloc[0]) and e["test_loss"].iloc[1] == math.inf
    assert e["train_loss"].iloc[2] == -math.inf
    # Exact (text: beyond Int64), not one float for all three.
    assert e["big"].astype(str).tolist() == [str(2**70 + i) for i in range(3)]

    def json_only(text: bytes) -> dict[str, Any] | None:
        row = json.loads(text)
        return row if isinstance(row, dict) else None

    shutil.rmtree(copy / CACHE_DIR, ignore_errors=True)
    monkeypatch.setattr(_results, "_parse_row", json_only)
    slow = analysis.load(copy)
    assert slow.problems == fast.problems == []
    for kind, frame in frames.items():
        pd.testing.assert_frame_equal(frame, slow.frame(kind), check_exact=True)


@pytest.mark.parametrize("content", ["", '{"optimizer": "xs', "[1, 2]", "\x00\x00\x00"])
def test_a_damaged_params_json_does_not_refuse_the_study(
    copy: Path, tmp_path: Path, content: str
) -> None:
    d = _trial(copy, optimizer="xsam", steps=1, seed=1)
    (d / "params.json").write_text(content)
    s = analysis.load(copy)
    assert len(s.trials) == 12 and len(s.problems) == 1
    assert s.problems[0].startswith(f"{d.name}/params.json ")
    # The config comes from Ray's copy in the rows: the trial keeps its settings.
    row = s.trials.loc[s.trials["trial_dir"] == d.name].iloc[0]
    assert (row["optimizer"], row["steps"], row["seed"], row["status"]) == (
        "xsam",
        1,
        1,
        "finished",
    )
    # The verbs read it too: results exits 0 with every trial and one warning line.
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert main(["results", str(copy), "--format", "csv"]) == 0
    assert len(pd.read_csv(io.StringIO(out.getvalue()))) == 12
    html, _ = analysis.write_report(copy, tmp_path / "report", kinds=["alpha"])
    assert html.exists()


def test_a_trial_without_rows_and_with_a_damaged_params_json_is_still_listed(copy: Path) -> None:
    d = _trial(copy, dataset="tinyimagenet")  # raised before its first epoch: no rows
    (d / "params.json").write_text("")
    s = analysis.load(copy)
    row = s.trials.loc[s.trials["trial_dir"] == d.name].iloc[0]
    assert row["status"] == "errored" and "DatasetError" in row["error"]
    # Ray's run state still holds its config.
    assert row["dataset"] == "tinyimagenet"


def _set_state(root: Path, trial_dir: str, status: str) -> None:
    for f in root.glob("experiment_state-*.json"):
        state = json.loads(f.read_text())
        for entry in state["trial_data"]:
            head = json.loads(entry[0])
            if head.get("relative_logdir") == trial_dir:
                head["status"] = status
                entry[0] = json.dumps(head)
        f.write_text(json.dumps(state))


_TWO_FAILURES = """Failure # 1 (occurred at 2026-12-01_10-00-00)
Traceback (most recent call last):
  File "loop.py", line 1, in run
OSError: [Errno 28] No space left on device

Failure # 2 (occurred at 2026-12-01_10-00-09)
ray::ImplicitFunc.train() (pid=1, ip=127.0.0.1)
Traceback (most recent call last):
  File "loop.py", line 1, in run
RuntimeError: worker lost its data
  second line of the message
"""


@pytest.mark.parametrize("ended", ["finished_at", "interrupted_at"])
def test_an_errored_out_trial_is_errored_not_interrupted(copy: Path, ended: str) -> None:
    """Its retries spent, mid-training; Ray's last saved state still says RUNNING."""
    d = _trial(copy, optimizer="sam", steps=2, seed=0)
    (d / "result.json").write_text(_lines(d)[0] + "\n")
    (d / "error.txt").write_text(_TWO_FAILURES)
    _set_state(copy, d.name, "RUNNING")
    info = json.loads((copy / "study.json").read_text())
    info.pop("finished_at")
    (copy / "study.json").write_text(json.dumps({**info, ended: "2026-12-01T10:00:10"}))
    row = analysis.load(copy).trials.set_index("trial_dir").loc[d.name]
    assert row["status"] == "errored"
    assert row["error"] == "RuntimeError: worker lost its data"  # the message's first line
    assert row["failures"] == 2 and row["epochs_done"] == 1


def test_labels_follow_the_run_and_come_from_the_contract(copy: Path) -> None:
    import xsam_contract

    # Ray says ERROR although every epoch was reported (it raised at the end):
    # errored, as the run's closing table says.
    d = _trial(copy, optimizer="xsam", steps=1, seed=0)
    (d / "error.txt").write_text(_TWO_FAILURES)
    _set_state(copy, d.name, "ERROR")
    # A scheduler stopped another after epoch 2: Ray marks that row done.
    stopped = _trial(copy, optimizer="sgd", seed=0)
    lines = _lines(stopped)
    (stopped / "result.json").write_text(
        lines[0] + "\n" + json.dumps(json.loads(lines[1]) | {"done": True}) + "\n"
    )
    t = analysis.load(copy).trials.set_index("trial_dir")
    assert t.loc[d.name, "status"] == "errored"
    assert t.loc[stopped.name, "status"] == "stopped"
    assert set(t["status"]) <= set(xsam_contract.STATUSES)
    assert list(t["status"].cat.categories) == list(xsam_contract.STATUSES)
