"""A Ray instance kept running between studies (issue 14): ``xsam-tune ray start|stop|status``.

A run without ``--address`` joins the kept instance and leaves it running; a
stale record (its process gone, its port silent, not loopback) is said in one
line, removed, and the run starts its own instance. The preload hook of the
trials' imports is chosen only where most of Ray's first workers run trials.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from study import _cluster, launch
from study._kept_ray import RECORD_NAME, KeptRay, _alive, find_kept
from study.config import parse_study
from tests.study._cli_driver import SLOW_ROWS, driver_env, run, tiny_study

#: Seconds any single ``xsam-tune`` call of these tests may take.
TIMEOUT = 240


def _record(folder: Path, **fields: object) -> Path:
    path = folder / RECORD_NAME
    path.write_text(json.dumps({"address": "127.0.0.1:1", "pid": os.getpid(), **fields}))
    return path


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _silent_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------
# the record (no Ray)
# --------------------------------------------------------------------------


def test_no_record_means_no_kept_instance(tmp_path: Path) -> None:
    assert find_kept(str(tmp_path)) == (None, None)


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"pid": "dead"}, "its process {pid} is gone"),
        ({"pid": "other"}, "its process {pid} is gone"),  # alive, but not a `ray start`
        ({"address": "10.0.0.66:6379"}, "names 10.0.0.66:6379, not a loopback address"),
        ({"address": "silent"}, "nothing answers at 127.0.0.1:{port}"),
        ({"address": 6379}, "unreadable record"),
    ],
)
def test_a_stale_record_is_named_and_removed(tmp_path: Path, fields: dict, why: str) -> None:
    port = _silent_port()
    # A live process whose command line looks like `ray start --head`.
    head = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "start", "--head"]
    )
    try:
        pid = {"dead": _dead_pid(), "other": os.getpid()}.get(fields.get("pid"), head.pid)
        address = fields.get("address", f"127.0.0.1:{port}")
        record = _record(
            tmp_path, pid=pid, address=f"127.0.0.1:{port}" if address == "silent" else address
        )
        kept, reason = find_kept(str(tmp_path))
    finally:
        head.kill()
        head.wait()
    assert kept is None
    assert reason is not None and why.format(pid=pid, port=port) in reason
    assert not record.exists()


def test_a_live_recorded_instance_is_found(tmp_path: Path) -> None:
    head = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "start", "--head"]
    )
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        address = f"127.0.0.1:{listening.getsockname()[1]}"
        try:
            record = _record(tmp_path, pid=head.pid, address=address, auth_mode="disabled")
            kept, reason = find_kept(str(tmp_path))
        finally:
            head.kill()
            head.wait()
    assert reason is None
    assert kept == KeptRay(address=address, pid=head.pid, record=str(record), auth_mode="disabled")


def test_ray_start_refuses_a_bad_cpu_count_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from study.cli import main

    monkeypatch.setenv("XSAM_TUNE_RAY_TMP", str(tmp_path / "ray"))
    assert main(["ray", "start", "--num-cpus", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["xsam-tune: error: --num-cpus: got 0, allowed: 1 or more"]
    assert not (tmp_path / "ray" / RECORD_NAME).exists()


def test_ray_status_without_an_instance_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from study.cli import main

    monkeypatch.setenv("XSAM_TUNE_RAY_TMP", str(tmp_path / "ray"))
    assert main(["ray", "status"]) == 3
    assert capsys.readouterr().out.strip() == "no Ray of `xsam-tune ray start` runs"
    assert main(["ray", "stop"]) == 0


def test_a_run_says_in_one_line_that_it_ignores_a_stale_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XSAM_TUNE_RAY_TMP", str(tmp_path / "ray"))
    (tmp_path / "ray").mkdir(mode=0o700)
    record = _record(tmp_path / "ray", pid=_dead_pid())
    assert _cluster._kept_instance() is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not using the Ray instance of `xsam-tune ray start`" in err[0]
    assert "is gone" in err[0] and "starting one for this run" in err[0]
    assert not record.exists()


def test_the_trials_imports_are_preloaded_only_where_most_first_workers_run_trials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def study(trials: int, cpu: float = 1, cap: int | None = None) -> object:
        data = {
            "name": "p",
            "trial": {"dataset": "fake", "model": "mlp"},
            "space": {"seed": {"grid": list(range(trials))}},
            "search": {"algorithm": "grid"},
            "metric": {"name": "test_acc", "mode": "max"},
            "resources": {"cpu": cpu},
        }
        if cap:
            data["max_concurrent_trials"] = cap
        return parse_study(data)

    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert launch._preload(study(4), own_trainable=False) == launch.PRELOAD
    assert launch._preload(study(20), own_trainable=False) == launch.PRELOAD
    assert launch._preload(study(3), own_trainable=False) is None  # 5 of 8 workers idle
    assert launch._preload(study(20, cpu=4), own_trainable=False) is None  # 2 at once
    assert launch._preload(study(20, cap=2), own_trainable=False) is None
    assert launch._preload(study(20), own_trainable=True) is None  # not our imports


def test_the_preload_hook_imports_the_trial_layer() -> None:
    code = (
        "import sys; from trainables.tune import preload_worker; preload_worker(); "
        "print('trainables.loop' in sys.modules and 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "True", out.stderr


# --------------------------------------------------------------------------
# a real kept instance
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kept(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], str]]:
    """``xsam-tune ray start --num-cpus 2`` in a private Ray temp dir; stopped at the end."""
    folder = tmp_path_factory.mktemp("kept")
    with driver_env(folder) as env:
        started = run(["ray", "start", "--num-cpus", "2"], env, timeout=TIMEOUT)
        assert started.returncode == 0, started.stderr
        record = json.loads((Path(env["XSAM_TUNE_RAY_TMP"]) / RECORD_NAME).read_text())
        try:
            yield env, record["address"]
        finally:
            run(["ray", "stop"], env, timeout=TIMEOUT)


@pytest.mark.ray
@pytest.mark.slow
def test_ray_start_keeps_one_loopback_instance(kept: tuple[dict[str, str], str]) -> None:
    env, address = kept
    assert address.startswith("127.0.0.1:")
    again = run(["ray", "start"], env, timeout=TIMEOUT)
    assert again.returncode == 0 and f"already running at {address}" in again.stdout
    status = run(["ray", "status"], env, timeout=TIMEOUT)
    assert status.returncode == 0 and address in status.stdout


@pytest.mark.ray
@pytest.mark.slow
def test_a_run_joins_the_kept_instance_and_leaves_it_running(
    kept: tuple[dict[str, str], str], tmp_path: Path
) -> None:
    env, address = kept
    timing = tmp_path / "timing.jsonl"
    study = tiny_study(tmp_path, "joined", tmp_path / "data", epochs=1, seeds=(0,))
    args = ["run", str(study), "--storage", str(tmp_path / "studies"), "-q"]
    done = run(
        [*args, "--trainable", SLOW_ROWS],
        {**env, "XSAM_TUNE_TIMING": str(timing), "XSAM_TEST_EPOCH_S": "0"},
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    assert f"using the Ray instance of `xsam-tune ray start` at {address}" in done.stderr
    marks = [json.loads(line) for line in timing.read_text().splitlines()]
    phases = [m["phase"] for m in marks]
    assert phases == [
        "ray_up",
        "fit",
        "first_trial",
        "first_row",
        "last_row",
        "fit_end",
        "ray_down",
    ]
    assert marks[0]["how"] == "kept" and marks[4]["rows"] == 3
    assert marks[-1]["torch"] is False  # the driver never imports torch
    assert [m["time"] for m in marks] == sorted(m["time"] for m in marks)
    # No instance of its own: no session directory beside the kept one's.
    assert not list(Path(env["XSAM_TUNE_RAY_TMP"]).glob("session_*"))
    info = json.loads((tmp_path / "studies" / "joined" / "study.json").read_text())
    assert "finished_at" in info
    status = run(["ray", "status"], env, timeout=TIMEOUT)
    assert status.returncode == 0 and address in status.stdout  # still running


@pytest.mark.ray
@pytest.mark.slow
def test_ray_stop_stops_the_kept_instance(tmp_path: Path) -> None:
    with driver_env(tmp_path) as env:
        assert run(["ray", "start", "--num-cpus", "1"], env, timeout=TIMEOUT).returncode == 0
        record = json.loads((Path(env["XSAM_TUNE_RAY_TMP"]) / RECORD_NAME).read_text())
        kept = KeptRay(address=record["address"], pid=record["pid"], record="")
        stopped = run(["ray", "stop"], env, timeout=TIMEOUT)
        assert stopped.returncode == 0 and f"Ray at {kept.address} stopped" in stopped.stdout
        assert not _alive(kept.pid)  # gone, or a zombie nobody reaps (PID 1 of a container)
        host, port = kept.address.rsplit(":", 1)
        with pytest.raises(OSError):
            socket.create_connection((host, int(port)), timeout=2).close()
        status = run(["ray", "status"], env, timeout=TIMEOUT)
        assert status.returncode == 3 and "no Ray of `xsam-tune ray start` runs" in status.stdout
