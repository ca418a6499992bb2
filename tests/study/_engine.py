"""Helpers of the real-engine tests (``test_engine_faults``, ``test_cluster_s3``,
``test_gpu_placement``): ``ray start`` nodes on 127.0.0.1, ``xsam-tune`` drivers in
subprocesses, the study files they run and the records their trials leave.

:func:`ray_node` is the one way these tests start a node: a head
(``ray start --head``) or a worker joining one (through
``tests/study/_loopback_node.py``), with ``--block`` in a session of its own,
free ports, its own temp dir, loopback addresses only; stopped with everything
it spawned on the way out. :func:`ray_env` is the environment of such a
cluster's nodes and of the drivers that join it (token authentication with a
token file of the test's own). The trials are the recorders of
``tests/study/_faults_trainables.py`` (:data:`RECORDER`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from study._kept_ray import free_ports, session_pids  # the launcher's own helpers
from tests.study._cli_driver import REPO, run

RECORDER = "tests.study._faults_trainables"
#: Seconds a node may take to say "Ray runtime started".
START_TIMEOUT = 120
#: Seconds any single driver run may take before the test gives up on it.
DRIVER_TIMEOUT = 240


@dataclass
class Node:
    """A running ``ray start --block`` node.

    Attributes:
        address: ``127.0.0.1:PORT`` of the cluster's GCS (the head's).
        proc: The ``ray start --block`` process (leader of its own session).
        log: Its output.
    """

    address: str
    proc: subprocess.Popen
    log: Path


def ray_env(base: Path, tag: str) -> dict[str, str]:
    """Environment of the Ray nodes and drivers of one cluster under ``base``.

    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` keeps 127.0.0.1 as the node address
    (Ray otherwise swaps a loopback ``--node-ip-address`` for the machine's LAN
    address), so every server binds the loopback interface; drivers need the
    same setting to reach it. The token file is ``base/auth_token``.
    """
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(
        RAY_TMPDIR=str(base / tag),  # Ray's default temp dir and its ray_current_cluster file
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(base / "auth_token"),
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        RAY_USAGE_STATS_ENABLED="0",
        XSAM_FAULTS_DIR=str(base / "records" / tag) if tag != "head" else str(base / "records"),
        PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
        PYTHONUNBUFFERED="1",
    )
    (base / tag).mkdir(parents=True, exist_ok=True)
    return env


@contextlib.contextmanager
def ray_node(
    temp_dir: Path,
    env: dict[str, str],
    log: Path,
    *,
    head: str | None = None,
    num_cpus: int = 1,
) -> Iterator[Node]:
    """``ray start --block`` of a head (``head`` None) or of a worker joining the
    head at ``head``, on 127.0.0.1 with free ports, ``num_cpus`` CPUs and
    ``temp_dir``; stopped, with everything it spawned, on the way out."""
    gcs, *ports = free_ports(8)
    if head is None:
        ray_cli = Path(sys.executable).with_name("ray")
        command = [str(ray_cli if ray_cli.exists() else shutil.which("ray") or "ray"), "start"]
        command += ["--head", f"--port={gcs}", "--include-dashboard=false"]
        # a minimal dashboard.py runs anyway: not on Ray's fixed 8265
        command += [f"--dashboard-port={ports[6]}"]
    else:  # Ray swaps loopback addresses of a joining node: see _loopback_node.py
        command = [sys.executable, "-m", "tests.study._loopback_node", "start", f"--address={head}"]
    command += [
        "--block",
        "--node-ip-address=127.0.0.1",
        f"--node-manager-port={ports[0]}",
        f"--object-manager-port={ports[1]}",
        f"--dashboard-agent-listen-port={ports[2]}",
        f"--dashboard-agent-grpc-port={ports[3]}",
        f"--runtime-env-agent-port={ports[4]}",
        f"--metrics-export-port={ports[5]}",
        f"--num-cpus={num_cpus}",
        "--disable-usage-stats",
        f"--temp-dir={temp_dir}",
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while "Ray runtime started" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{' '.join(command[:4])} did not come up:\n{tail(log)}")
            time.sleep(0.2)
        yield Node(head or f"127.0.0.1:{gcs}", proc, log)
    finally:
        stop_session(proc)


def tail(path: Path, chars: int = 4000) -> str:
    """The end of a log file (for failure messages)."""
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no output)"


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def wait_gone(pids: set[int], timeout: float = 60) -> bool:
    """Wait until none of ``pids`` is alive; whether that happened in time."""
    deadline = time.monotonic() + timeout
    while any(alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def kill_session(sid: int) -> None:
    """SIGKILL every process of the session ``sid`` leads (a node dying at once)."""
    for pid in session_pids(sid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def stop_session(proc: subprocess.Popen) -> None:
    """Stop a process started with ``start_new_session=True`` and everything it
    spawned: SIGTERM to the leader (``ray start --block`` then stops its node),
    then SIGKILL to whatever of the session is left, by pid."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while session_pids(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    kill_session(proc.pid)


def listening_sockets(pids: list[int]) -> list[tuple[int, str, int]]:
    """(pid, address, port) of every listening TCP socket the processes hold."""
    owner = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        owner[target[8:-1]] = pid
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table, encoding="utf-8") as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[3] != "0A" or cols[9] not in owner:  # 0A: LISTEN
                    continue
                host, port = cols[1].split(":")
                found.append((owner[cols[9]], _proc_net_address(host), int(port, 16)))
    return found


def exposed_sockets(pids: list[int]) -> list[tuple[int, str, int]]:
    """The listening sockets of ``pids`` that other machines could reach (not loopback)."""
    return [s for s in listening_sockets(pids) if not _is_loopback(s[1])]


def _proc_net_address(hex_host: str) -> str:
    """An address as /proc/net/tcp{,6} prints it (32-bit words in host order)."""
    raw = bytes.fromhex(hex_host)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words))


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


# --------------------------------------------------------------------------
# studies and drivers
# --------------------------------------------------------------------------


def paused_records(root: Path, name: str, who: str) -> Path:
    """The record folder ``root/name`` of a faulted study, with the plan that pauses
    trials after epoch 1 while its ``hold`` file exists (``who``: ``first`` or
    ``others``, see tests/study/_faults_trainables.py)."""
    records = root / name
    records.mkdir(parents=True)
    (records / "pause.json").write_text(json.dumps({"epoch": 1, "who": who}))
    (records / "hold").touch()
    return records


def write_study(
    folder: Path,
    name: str,
    data_dir: Path,
    *,
    space: dict[str, Any],
    trial: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """A tiny mnist1d/cnn1d study file (one CPU per trial, checkpoint every epoch)."""
    spec: dict[str, Any] = {
        "name": name,
        "trial": {
            "dataset": "mnist1d",
            "model": "cnn1d",
            "optimizer": "sgd",
            "epochs": 2,
            "batch_size": 500,
            "threads": 1,
            "data_dir": str(data_dir),
            **(trial or {}),
        },
        "space": space,
        "search": {"algorithm": "grid"},
        "metric": {"name": "test_acc", "mode": "max"},
        "resources": {"cpu": 1, "gpu": 0},
        "checkpoint_every": 1,
        **(extra or {}),
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_driver(
    args: list[str], env: dict[str, str], cwd: Path = REPO
) -> subprocess.CompletedProcess:
    """Run ``xsam-tune ARGS`` to its end (killed after DRIVER_TIMEOUT seconds)."""
    return run(args, env, timeout=DRIVER_TIMEOUT, cwd=cwd)


def wait_for(check: Callable[[], Any], proc: subprocess.Popen, log: Path, what: str) -> Any:
    """Poll ``check`` until it returns something truthy; fail if the driver
    ``proc`` ends first or DRIVER_TIMEOUT passes."""
    deadline = time.monotonic() + DRIVER_TIMEOUT
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        if proc.poll() is not None:
            pytest.fail(f"the driver ended (rc {proc.returncode}) before {what}:\n{tail(log)}")
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}:\n{tail(log)}")


def outputs(proc: subprocess.CompletedProcess) -> str:
    """A finished driver's exit code and output (for failure messages)."""
    return f"rc {proc.returncode}\nstdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"


# --------------------------------------------------------------------------
# what the study and its trials left
# --------------------------------------------------------------------------


def experiment_state(study_dir: Path) -> dict[str, str]:
    """Trial id → status in Ray's newest saved experiment state (empty when unreadable)."""
    files = sorted(study_dir.glob("experiment_state-*.json"))
    if not files:
        return {}
    try:
        state = json.loads(files[-1].read_text())
        out = {}
        for entry in state["trial_data"]:
            trial = json.loads(entry[0])
            out[str(trial["trial_id"])] = str(trial["status"])
        return out
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return {}  # caught mid-write: ask again


def lines(path: Path) -> list[list[str]]:
    """A record file as lists of words (empty when it does not exist yet)."""
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def trial_dirs(study_dir: Path) -> list[Path]:
    """The trial folders of a local study directory."""
    return sorted(p for p in study_dir.iterdir() if (p / "params.json").exists())


def rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``result.json``."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def result_epochs(trial_dir: Path) -> list[int]:
    """The epoch of each row of a trial's ``result.json``, in order."""
    return [row["epoch"] for row in rows(trial_dir / "result.json")]


def comparable(row: dict[str, Any]) -> dict[str, Any]:
    """The metrics of docs/contract.md's row that must not change when a trial is
    killed and resumed: all but its wall-clock and CPU-time columns (NaN made
    equal to itself), plus Ray's ``training_iteration``."""
    from trainables.loop import METRICS

    keys = [m for m in METRICS if not m.startswith(("time_", "cpu_"))]
    return {k: _nan_safe(row.get(k)) for k in [*keys, "training_iteration"]}


def _nan_safe(value: Any) -> Any:
    """NaN compares equal to itself after this (recursively through lists and dicts)."""
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, list):
        return [_nan_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: _nan_safe(v) for k, v in value.items()}
    return value
