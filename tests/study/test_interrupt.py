"""Ctrl-C during ``xsam-tune run``: an honest stop, and a resume that completes the study.

SIGINT goes to the driver (a subprocess with its own embedded Ray) once
some trial has reported an epoch. Then: exit 130, ``interrupted_at`` in
``study.json`` (no ``finished_at``), the unfinished trials labelled
``interrupted`` in the closing table, the exact resume command printed; and
``xsam-tune resume`` finishes the study with every trial's epochs exactly once.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.study._cli_driver import (
    REPO,
    SLOW_ROWS,
    command,
    driver_env,
    tiny_study,
    wait_for_first_report,
)

pytestmark = [pytest.mark.ray]

EPOCHS = 6
TIMEOUT = 240


def test_ctrl_c_then_resume(tmp_path: Path) -> None:
    data = tmp_path / "data"
    study = tiny_study(tmp_path, "stopme", data, epochs=EPOCHS)
    storage = tmp_path / "studies"
    dir_file = tmp_path / "dir.txt"
    log = tmp_path / "run.log"
    args = ["run", str(study), "--storage", str(storage), "--trainable", SLOW_ROWS]
    with driver_env(tmp_path, XSAM_TEST_EPOCH_S="0.5") as env:
        with log.open("w") as out:
            proc = subprocess.Popen(
                command(*args, "--print-dir-to", str(dir_file)),
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )
        try:
            wait_for_first_report(proc, data / "reports.txt", log, TIMEOUT)
            proc.send_signal(signal.SIGINT)
            rc = proc.wait(timeout=TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
        text = log.read_text()
        assert rc == 130, text
        study_dir = storage / "stopme"
        assert dir_file.read_text().strip() == str(study_dir)
        assert f"xsam-tune resume {study_dir}" in text.splitlines(), text
        assert "interrupted: stopping the trials" in text
        record = json.loads((study_dir / "study.json").read_text())
        assert "interrupted_at" in record and "finished_at" not in record, record
        table = _closing_rows(text)
        assert len(table) == 3, text
        labels = {row[1] for row in table}
        assert "interrupted" in labels and labels <= {"interrupted", "pending", "finished"}, text
        for row in table:  # an unfinished trial is never called finished
            done, total = row[2].split("/")
            assert (row[1] == "finished") == (done == total), row

        resumed = subprocess.run(
            command("resume", str(study_dir), "--trainable", SLOW_ROWS),
            cwd=REPO,
            env={**env, "XSAM_TEST_EPOCH_S": "0.05"},
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    record = json.loads((study_dir / "study.json").read_text())
    assert "finished_at" in record and "interrupted_at" not in record
    trial_dirs = sorted(p for p in study_dir.iterdir() if (p / "result.json").exists())
    assert len(trial_dirs) == 3
    for trial_dir in trial_dirs:
        rows = [json.loads(ln) for ln in (trial_dir / "result.json").read_text().splitlines()]
        assert [r["epoch"] for r in rows] == list(range(1, EPOCHS + 1)), trial_dir
    assert {row[1] for row in _closing_rows(resumed.stdout)} == {"finished"}


def _closing_rows(text: str) -> list[list[str]]:
    """The rows of the closing table (after its ``trial status epochs`` header)."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.split()[:3] == ["trial", "status", "epochs"])
    rows = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        rows.append(line.split())
    return rows


def test_second_ctrl_c_stops_at_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    study = tiny_study(tmp_path, "twice", data, epochs=EPOCHS)
    storage = tmp_path / "studies"
    log = tmp_path / "run.log"
    args = ["run", str(study), "--storage", str(storage), "--trainable", SLOW_ROWS]
    with driver_env(tmp_path, XSAM_TEST_EPOCH_S="0.5") as env:
        with log.open("w") as out:
            proc = subprocess.Popen(
                command(*args), cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        try:
            wait_for_first_report(proc, data / "reports.txt", log, TIMEOUT)
            proc.send_signal(signal.SIGINT)
            deadline = time.monotonic() + TIMEOUT
            while "interrupted: stopping" not in log.read_text():  # the first was heard
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.02)
            proc.send_signal(signal.SIGINT)
            rc = proc.wait(timeout=TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log.read_text()
    assert rc == 130, text
    # stopped at once: no closing table, the one-line notice instead
    assert "xsam-tune: interrupted" in text.splitlines(), text
    assert not any(ln.split()[:3] == ["trial", "status", "epochs"] for ln in text.splitlines())
    record = json.loads((storage / "twice" / "study.json").read_text())
    assert "interrupted_at" in record and "finished_at" not in record, record
