"""Ctrl-C during ``xsam-tune run``: an honest stop, and a resume that completes the study.

SIGINT goes to the driver (a subprocess with its own embedded Ray) once
some trial has reported an epoch. Then: exit 130, ``interrupted_at`` in
``study.json`` (no ``finished_at``), the unfinished trials labelled
``interrupted`` in the closing table, the exact resume command printed; and
``xsam-tune resume`` finishes the study with every trial's epochs exactly once.
A second Ctrl-C while the first is being handled stops the driver at once.

Both cases are one test: their two drivers run at the same time (each with its
own Ray instance and temp dir), so their Ray start-ups overlap.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.study._cli_driver import (
    SLOW_ROWS,
    background,
    closing_rows,
    driver_env,
    run,
    tiny_study,
    wait_for_first_report,
)

pytestmark = [pytest.mark.ray]

EPOCHS = 6
TIMEOUT = 240


def test_ctrl_c_then_resume_and_a_second_ctrl_c_stops_at_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    study = tiny_study(tmp_path, "stopme", data, epochs=EPOCHS)
    storage = tmp_path / "studies"
    dir_file = tmp_path / "dir.txt"
    log = tmp_path / "run.log"
    args = ["run", str(study), "--storage", str(storage), "--trainable", SLOW_ROWS]
    # The other driver: its own study, data folder and storage. Its epochs take 2 s,
    # so it is surely still running when its turn comes, after the first driver's Ctrl-C.
    other = tmp_path / "twice"
    other.mkdir()
    data2 = other / "data"
    study2 = tiny_study(other, "twice", data2, epochs=EPOCHS)
    storage2 = other / "studies"
    log2 = other / "run.log"
    args2 = ["run", str(study2), "--storage", str(storage2), "--trainable", SLOW_ROWS]
    with (
        driver_env(tmp_path, XSAM_TEST_EPOCH_S="0.5") as env,
        driver_env(other, XSAM_TEST_EPOCH_S="2") as env2,
    ):
        with (
            background([*args, "--print-dir-to", str(dir_file)], env, log) as proc,
            background(args2, env2, log2) as proc2,
        ):
            wait_for_first_report(proc, data / "reports.txt", log, TIMEOUT)
            proc.send_signal(signal.SIGINT)
            rc2 = _ctrl_c_twice(proc2, data2 / "reports.txt", log2)
            rc = proc.wait(timeout=TIMEOUT)

        # twice: stopped at once, no closing table, the one-line notice instead
        text2 = log2.read_text()
        assert rc2 == 130, text2
        assert "xsam-tune: interrupted" in text2.splitlines(), text2
        assert not any(ln.split()[:3] == ["trial", "status", "epochs"] for ln in text2.splitlines())
        record = json.loads((storage2 / "twice" / "study.json").read_text())
        assert "interrupted_at" in record and "finished_at" not in record, record

        # once: an honest stop
        text = log.read_text()
        assert rc == 130, text
        study_dir = storage / "stopme"
        assert dir_file.read_text().strip() == str(study_dir)
        assert f"xsam-tune resume {study_dir}" in text.splitlines(), text
        assert "interrupted: stopping the trials" in text
        record = json.loads((study_dir / "study.json").read_text())
        assert "interrupted_at" in record and "finished_at" not in record, record
        table = closing_rows(text)
        assert len(table) == 3, text
        labels = {row[1] for row in table}
        assert "interrupted" in labels and labels <= {"interrupted", "pending", "finished"}, text
        for row in table:  # an unfinished trial is never called finished
            done, total = row[2].split("/")
            assert (row[1] == "finished") == (done == total), row

        resumed = run(
            ["resume", str(study_dir), "--trainable", SLOW_ROWS],
            {**env, "XSAM_TEST_EPOCH_S": "0.05"},
            timeout=TIMEOUT,
        )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    # Into a pipe: plain lines, no carriage returns or escapes (tests/study/test_console.py
    # has the terminal), the last progress line, the study's directory.
    plain = resumed.stdout
    assert "\r" not in plain and "\x1b" not in plain, plain
    assert re.search(r"^progress: 3/3 done, 0 running, 0 pending", plain, re.M), plain
    assert f"study directory: {study_dir}" in plain.splitlines(), plain
    record = json.loads((study_dir / "study.json").read_text())
    assert "finished_at" in record and "interrupted_at" not in record
    trial_dirs = sorted(p for p in study_dir.iterdir() if (p / "result.json").exists())
    assert len(trial_dirs) == 3
    for trial_dir in trial_dirs:
        rows = [json.loads(ln) for ln in (trial_dir / "result.json").read_text().splitlines()]
        assert [r["epoch"] for r in rows] == list(range(1, EPOCHS + 1)), trial_dir
    assert {row[1] for row in closing_rows(resumed.stdout)} == {"finished"}


def _ctrl_c_twice(proc: subprocess.Popen, reports: Path, log: Path) -> int:
    """Ctrl-C once the driver's trials have reported, again once it says it heard the
    first; its exit code."""
    wait_for_first_report(proc, reports, log, TIMEOUT)
    proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + TIMEOUT
    while "interrupted: stopping" not in log.read_text():  # the first was heard
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    return proc.wait(timeout=TIMEOUT)
