"""The study console: event lines, the progress line, JSON events, the closing table.

Unit tests drive :class:`study._console.Console` with stand-in trials; the
end-to-end tests run ``xsam-tune run`` on a tiny study in a pseudo-terminal,
into a pipe and with ``--json``.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import pty
import re
import select
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from study._console import Console, error_reason, format_duration
from study._report import best_trials, status_of, trial_status
from study.config import parse_study
from tests.study._cli_driver import (
    REPO,
    SLOW_ROWS,
    closing_rows,
    command,
    driver_env,
    tiny_study,
)


@dataclass
class FakeTrial:
    trial_id: str
    config: dict[str, Any]
    status: str = "PENDING"
    last_result: dict[str, Any] = field(default_factory=dict)
    error_file: str | None = None
    path: str | None = None
    num_failures: int = 0


def _console(stream: io.StringIO, **kw: Any) -> Console:
    args = {"swept": ["optimizer", "seed"], "metric": "test_acc", "mode": "max", "epochs": 3}
    return Console(**{**args, "total": 3, "stream": stream, **kw})


def test_event_lines_progress_and_closing_labels() -> None:
    out = io.StringIO()
    console = _console(out, tty=False)
    console.setup()
    a = FakeTrial("a_00000", {"optimizer": "sam", "seed": 0, "epochs": 3, "lr": 0.1})
    b = FakeTrial("a_00001", {"optimizer": "sgd", "seed": 1, "epochs": 3})
    console.on_trial_start(0, [a, b], a)
    console.on_trial_start(0, [a, b], b)
    for epoch in (1, 2, 3):
        console.on_trial_result(
            0, [a, b], a, {"training_iteration": epoch, "test_acc": 0.5 + epoch}
        )
    console.on_trial_result(0, [a, b], b, {"training_iteration": 1, "test_acc": 0.4})
    a.last_result = {"training_iteration": 3, "test_acc": 3.5, "done": True}
    console.on_trial_complete(0, [a, b], a)
    console.restore_sigint()
    text = out.getvalue()
    lines = text.splitlines()
    assert "started  a_00000  optimizer=sam, seed=0" in lines
    assert "started  a_00001  optimizer=sgd, seed=1" in lines
    assert any(ln.startswith("finished  a_00000  test_acc=350.00%  (3/3 epochs)") for ln in lines)
    # not a terminal: plain progress lines, no carriage returns or escapes
    assert "\r" not in text and "\x1b" not in text
    progress = [ln for ln in lines if ln.startswith("progress: ")]
    assert progress, text
    assert "1/3 done, 1 running, 1 pending" in progress[-1]
    assert "epochs e1/3" in progress[-1] and "best test_acc 350.00%" in progress[-1]
    assert "lr" not in text  # fixed settings are not swept values
    assert console.views()["a_00000"].label == "finished"


def test_progress_redrawn_in_place_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("study._console._REDRAW_S", 0.0)  # redraw on every result
    out = io.StringIO()
    console = _console(out, tty=True)
    a = FakeTrial("t_1", {"optimizer": "xsam", "seed": 0})
    console.on_trial_start(0, [a], a)
    console.on_trial_result(0, [a], a, {"training_iteration": 1, "test_acc": 0.7})
    text = out.getvalue()
    assert "\r\x1b[K" in text  # the line is cleared and redrawn, not appended
    assert "started  t_1  optimizer=xsam, seed=0\n" in text
    assert "epochs e1/3" in text.rsplit("\r\x1b[K", 1)[-1]


def test_quiet_prints_progress_only_and_json_parses() -> None:
    quiet = io.StringIO()
    console = _console(quiet, tty=False, style="quiet")
    a = FakeTrial("q_1", {"optimizer": "sam", "seed": 0})
    console.on_trial_start(0, [a], a)
    a.last_result = {"training_iteration": 3, "test_acc": 0.9, "done": True}
    console.on_trial_complete(0, [a], a)
    assert all(ln.startswith("progress: ") for ln in quiet.getvalue().splitlines())
    assert quiet.getvalue()

    out = io.StringIO()
    console = _console(out, tty=False, style="json")
    console.on_trial_start(0, [a], a)
    console.on_trial_complete(0, [a], a)
    events = [json.loads(ln) for ln in out.getvalue().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[:2] == ["trial_started", "trial_finished"] and "progress" in kinds
    assert events[0]["config"] == {"optimizer": "sam", "seed": 0}
    assert events[1]["metric"] == 0.9 and events[1]["status"] == "finished"


def test_error_line_has_the_reason_and_the_log(tmp_path: Path) -> None:
    log = tmp_path / "error.txt"
    log.write_text(
        "Failure # 1 (occurred at 2026-01-01)\nray::train()\nTraceback:\n  File x\n"
        "ValueError: first\nFailure # 2 (occurred at 2026-01-01)\nTraceback (most recent):\n"
        '  File "x.py", line 3\n    raise RuntimeError("boom")\nRuntimeError: planned failure\n'
    )
    assert error_reason(str(log)) == "RuntimeError: planned failure"
    qualified = tmp_path / "qualified.txt"
    qualified.write_text("Failure # 1\nxsam_contract._trial.ConfigError: rho: bad\n")
    assert error_reason(str(qualified)) == "ConfigError: rho: bad"
    out = io.StringIO()
    console = _console(out, tty=False)
    trial = FakeTrial("e_1", {"optimizer": "sam"}, error_file=str(log), path=str(tmp_path))
    console.on_trial_start(0, [trial], trial)
    console.on_trial_error(0, [trial], trial)
    line = next(ln for ln in out.getvalue().splitlines() if ln.startswith("errored"))
    assert "RuntimeError: planned failure" in line and f"(log: {log})" in line


def test_eta_from_epochs_done() -> None:
    console = _console(io.StringIO(), tty=False, total=2)
    a = FakeTrial("x_1", {"epochs": 4})
    console.on_trial_start(0, [a], a)
    assert console.eta(10.0) is None  # nothing done yet: no guess
    console.on_trial_result(0, [a], a, {"training_iteration": 2, "test_acc": 0.1})
    # 2 epochs in 10 s; left: 2 of this trial + 3 of the unseen one (study default)
    assert console.eta(10.0) == pytest.approx(25.0)
    assert format_duration(25) == "25s" and format_duration(3725) == "1h02m"


def test_console_pickles_inert() -> None:
    console = _console(io.StringIO(), tty=False)
    clone = pickle.loads(pickle.dumps(console))
    a = FakeTrial("p_1", {})
    clone.on_trial_start(0, [a], a)  # prints nothing, needs no stream


def test_statuses_of_ended_trials() -> None:
    assert status_of({"training_iteration": 3}, 3, errored=False) == "finished"
    assert status_of({"training_iteration": 2}, 3, errored=False) == "stopped"
    assert status_of({"training_iteration": 2, "diverged": True}, 3, errored=False) == "diverged"

    @dataclass
    class R:
        metrics: dict[str, Any]
        error: Any = None

    assert trial_status(R({"training_iteration": 1}), 3) == "interrupted"
    assert trial_status(R({}), 3) == "pending"
    assert trial_status(R({}), 3, started=True) == "interrupted"
    assert trial_status(R({"training_iteration": 3, "done": True}), 3) == "finished"
    assert trial_status(R({}, error=RuntimeError()), 3) == "errored"


def test_closing_table_lists_every_trial_with_swept_values(base: dict[str, Any]) -> None:
    cfg = parse_study(base)

    @dataclass
    class R:
        metrics: dict[str, Any]
        config: dict[str, Any]
        error: Any = None
        path: str = ""

    results = [
        R(
            {"trial_id": "t1", "training_iteration": 3, "test_acc": 0.8, "done": True},
            {"optimizer": "sam", "steps": 2, "seed": 0, "epochs": 3},
        ),
        R(
            {"trial_id": "t2", "training_iteration": 1, "test_acc": 0.6},
            {"optimizer": "sgd", "seed": 1, "epochs": 3},
        ),
        R({}, {"optimizer": "xsam", "steps": 1, "seed": 1, "epochs": 3}, path="/s/t3"),
        R(
            {},
            {"optimizer": "sgd", "seed": 0, "epochs": 3},
            path="/s/1c75a828_optimizer=sgd,seed=0",
        ),
    ]
    table = best_trials(results, cfg)
    lines = table.splitlines()
    assert lines[0].startswith(
        "best 4 of 4 trials by test_acc (max): 1 finished, 1 interrupted, 2 pending"
    )
    assert lines[1].split() == [
        "trial",
        "status",
        "epochs",
        "test_acc",
        "optimizer",
        "steps",
        "seed",
    ]
    # accuracy, a fraction in the rows, reads in percent (ACCURACY_UNIT)
    assert lines[2].split() == ["t1", "finished", "3/3", "80.00%", "sam", "2", "0"]
    assert lines[3].split() == ["t2", "interrupted", "1/3", "60.00%", "sgd", "-", "1"]
    assert lines[4].split() == ["t3", "pending", "0/3", "-", "xsam", "1", "1"]
    assert lines[5].split() == ["1c75a828", "pending", "0/3", "-", "sgd", "-", "0"]


# --------------------------------------------------------------------------
# end to end: xsam-tune run in a pseudo-terminal and with --json, at once
# --------------------------------------------------------------------------

TIMEOUT = 240


def _in_a_terminal(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run ``argv`` with a pseudo-terminal as stdin, stdout and stderr; its exit
    code and everything it wrote (line ends as ``\n``)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the terminal closed: the driver ended
                break
            if not chunk:
                break
            chunks.append(chunk)
        elif proc.poll() is not None:
            break
    os.close(master)
    rc = proc.wait(timeout=30)
    return rc, b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")


@pytest.mark.ray
def test_two_runs_at_once_in_a_terminal_and_as_json(tmp_path: Path) -> None:
    """Two studies of the same name into the same storage at the same time: each
    gets and reports its own directory. One runs in a pseudo-terminal (the
    progress line redrawn in place), the other writes JSON lines. (Plain lines
    into a pipe: the resume of tests/study/test_interrupt.py.) One test, as the
    drivers' Ray start-ups overlap."""
    data = tmp_path / "data"
    study = tiny_study(tmp_path, "twin", data, epochs=2)
    storage = tmp_path / "studies"
    args = ["run", str(study), "--storage", str(storage), "--trainable", SLOW_ROWS]
    dirs_to = [tmp_path / "dir0", tmp_path / "dir1"]
    # Each driver has a Ray temp dir of its own, as two users or two CI jobs would.
    with driver_env(tmp_path) as env0, driver_env(tmp_path) as env1:
        with (tmp_path / "json.txt").open("w") as out:
            json_run = subprocess.Popen(
                command(*args, "--json", "--print-dir-to", str(dirs_to[1])),
                cwd=REPO,
                env=env1,
                stdout=out,
                stderr=subprocess.PIPE,
                text=True,
            )
        try:
            rc, text = _in_a_terminal(command(*args, "--print-dir-to", str(dirs_to[0])), env0)
            _, json_err = json_run.communicate(timeout=TIMEOUT)
        finally:
            if json_run.poll() is None:
                json_run.kill()
    assert rc == 0, text
    assert json_run.returncode == 0, json_err
    dirs = [d.read_text().strip() for d in dirs_to]
    assert dirs[0] != dirs[1], dirs
    for d in dirs:
        assert Path(d).parent == storage and (Path(d) / "study.json").exists()
        assert json.loads((Path(d) / "study.json").read_text())["path"] == d
        assert len([p for p in Path(d).iterdir() if (p / "result.json").exists()]) == 3

    # The terminal: the progress line is redrawn in place (carriage return and
    # erase-line, then the line without a newline); an event line clears it and
    # ends with one.
    segments = text.split("\r\x1b[K")
    redraws = [seg.rsplit("\n", 1)[-1] for seg in segments]
    assert any(re.match(r"\d/3 done, \d running, \d pending", part) for part in redraws), text
    assert any("ETA" in part and "elapsed" in part for part in redraws), text
    plain = "".join(seg[: seg.rfind("\n") + 1] for seg in segments)
    for optimizer in ("sgd", "sam", "xsam"):
        assert re.search(rf"^started  \S+  optimizer={optimizer}, seed=0$", plain, re.M), plain
    finished = re.findall(r"^finished  \S+  test_acc=[0-9.]+%  \(2/2 epochs\)$", plain, re.M)
    assert len(finished) == 3, plain
    rows = closing_rows(plain)
    assert [row[1:3] for row in rows] == [["finished", "2/2"]] * 3, plain
    assert sorted(row[4] for row in rows) == ["sam", "sgd", "xsam"]
    assert f"study directory: {dirs[0]}" in plain
    assert "Trial status" not in text and "╭" not in text  # Ray's own tables are off

    # JSON: every line parses, one event per start and end, the study's end last
    events = [json.loads(line) for line in (tmp_path / "json.txt").read_text().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds.count("trial_started") == 3 and kinds.count("trial_finished") == 3, kinds
    assert kinds[-1] == "study_end" and events[-1]["directory"] == dirs[1], events[-1]
    assert [t["status"] for t in events[-1]["trials"]] == ["finished"] * 3
