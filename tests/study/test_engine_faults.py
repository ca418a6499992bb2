"""Real Ray engine, real faults: the study layer on clusters it did not start.

Every test here drives ``xsam-tune`` in a subprocess (the pytest process
already holds the session's embedded Ray, ``tests/conftest.py``) against a
Ray cluster that is not the embedded one:

* a head node started with ``ray start --head`` on 127.0.0.1 (module
  fixture ``ray_head``: a private temp dir, free ports, its own token
  file, loopback only, always stopped);
* a two-node cluster (``ray.cluster_utils.Cluster``, one CPU per node) in a
  script of its own (``tests/study/_faults_two_nodes.py``).

The trials are the real trainable (``trainables.tune.train_trial`` on
mnist1d/cnn1d) inside thin recorders (``tests/study/_faults_trainables.py``)
that log every start, report and node to files, and pause a trial where a
test needs a window to kill something. ``XSAM_FAULTS_KEEP=1`` keeps the
module's folder (records, logs, study directories) for a look afterwards.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
RECORDER = "tests.study._faults_trainables"
#: Seconds any single driver run may take before the test gives up on it.
DRIVER_TIMEOUT = 240


@dataclass
class Head:
    """A running ``ray start --head`` node.

    Attributes:
        address: ``127.0.0.1:PORT`` of its GCS.
        env: Environment for drivers that join it (token, temp dir, records).
        records: ``$XSAM_FAULTS_DIR`` of its workers.
        proc: The ``ray start --block`` process (leader of its own session).
        log: Its output.
    """

    address: str
    env: dict[str, str]
    records: Path
    proc: subprocess.Popen
    log: Path


# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fault_base() -> Iterator[Path]:
    """A short private folder under /tmp (Ray puts Unix sockets below it, and
    their paths may not exceed 107 bytes) holding the Ray temp dirs, the auth
    token, the records and the studies of this module."""
    base = Path(tempfile.mkdtemp(prefix="xf-", dir="/tmp"))
    token = base / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    (base / "records").mkdir()
    try:
        yield base
    finally:
        if os.environ.get("XSAM_FAULTS_KEEP"):  # debugging: keep records, logs and studies
            print(f"\nfault-test files kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def data_dir(fault_base: Path) -> Path:
    """mnist1d generated once for the module (trials only read the cache)."""
    from trainables.data import load_dataset

    path = fault_base / "data"
    load_dataset({"dataset": "mnist1d", "data_dir": str(path)})
    return path


@pytest.fixture(scope="module")
def ray_head(fault_base: Path, data_dir: Path) -> Iterator[Head]:
    """``ray start --head --block`` on 127.0.0.1 with free ports, stopped at the end.

    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` keeps 127.0.0.1 as the node
    address (Ray otherwise swaps a loopback ``--node-ip-address`` for the
    machine's LAN address), so every server binds the loopback interface;
    drivers need the same setting to reach it. Token authentication stays
    on, with a token file of this module's own (``RAY_AUTH_TOKEN_PATH``).
    """
    env = _ray_env(fault_base, "head")
    gcs, *ports = _free_ports(8)
    log = fault_base / "head.log"
    ray_cli = Path(sys.executable).with_name("ray")
    command = [
        str(ray_cli if ray_cli.exists() else shutil.which("ray") or "ray"),
        "start",
        "--head",
        "--block",
        "--node-ip-address=127.0.0.1",
        f"--port={gcs}",
        f"--node-manager-port={ports[0]}",
        f"--object-manager-port={ports[1]}",
        f"--dashboard-agent-listen-port={ports[2]}",
        f"--dashboard-agent-grpc-port={ports[3]}",
        f"--runtime-env-agent-port={ports[4]}",
        f"--metrics-export-port={ports[5]}",
        "--include-dashboard=false",
        f"--dashboard-port={ports[6]}",  # a minimal dashboard.py runs anyway: not on 8265
        "--num-cpus=2",
        "--disable-usage-stats",
        f"--temp-dir={fault_base / 'head' / 'ray'}",
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ray start --head did not come up:\n{_tail(log)}")
            time.sleep(0.5)
        yield Head(f"127.0.0.1:{gcs}", env, fault_base / "records", proc, log)
    finally:
        _stop_session(proc)


# --------------------------------------------------------------------------
# the tests
# --------------------------------------------------------------------------


def test_study_against_a_ray_start_head_node(
    ray_head: Head, data_dir: Path, fault_base: Path
) -> None:
    """``xsam-tune run --address 127.0.0.1:PORT`` runs its trials on the
    cluster that ``ray start --head`` started (the recorder sees that GCS
    address in every trial), writes the complete study directory, and the
    head listens on the loopback interface only."""
    storage = fault_base / "studies"
    study = _write_study(fault_base, "head", data_dir, space={"seed": {"grid": [0, 1]}})
    args = ["run", str(study), "--address", ray_head.address, "--storage", str(storage)]
    args += ["--name", "head", "--trainable", f"{RECORDER}:train_recording_node", "-q"]
    proc = _run_driver(args, ray_head.env)
    assert proc.returncode == 0, _outputs(proc)

    nodes = _lines(ray_head.records / "head" / "nodes.txt")
    assert len({n[0] for n in nodes}) == 2
    assert {n[2] for n in nodes} == {ray_head.address}
    study_dir = storage / "head"
    info = json.loads((study_dir / "study.json").read_text())
    assert info["address"] == ray_head.address and "finished_at" in info
    trials = _trial_dirs(study_dir)
    assert len(trials) == 2
    for trial in trials:
        assert _result_epochs(trial) == [1, 2]
        assert sorted(p.name for p in trial.glob("checkpoint_*"))

    listening = _listening_sockets(_session_pids(ray_head.proc.pid))
    assert any(port == int(ray_head.address.rsplit(":", 1)[1]) for _, _, port in listening)
    exposed = [s for s in listening if not _is_loopback(s[1])]
    assert not exposed, f"Ray servers reachable from other machines: {exposed}"


def test_two_node_cluster_runs_trials_on_both_nodes(data_dir: Path, fault_base: Path) -> None:
    """On a two-node cluster (one CPU per node) a study with local storage is
    refused without ``--allow-local-storage`` (exit 2, nothing written); with
    it, two trials that must run at the same time (a barrier in the recorder)
    land one on each node, and both write every epoch and checkpoint into
    the study directory."""
    base = fault_base / "two"
    env = _ray_env(fault_base, "two")
    records = Path(env["XSAM_FAULTS_DIR"]) / "two-nodes"
    records.mkdir(parents=True)
    (records / "barrier").write_text("2")
    storage = base / "studies"
    study = _write_study(base, "two", data_dir, space={"seed": {"grid": [0, 1]}})
    out = base / "outcome.json"
    command = [sys.executable, "-m", "tests.study._faults_two_nodes", str(study), str(storage)]
    command += ["two-nodes", f"{RECORDER}:train_recording_node", str(out)]
    log = base / "script.log"
    with log.open("wb") as f:
        proc = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        proc.wait(timeout=DRIVER_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the two-node study did not end in {DRIVER_TIMEOUT} s:\n{_tail(log)}")
    finally:
        _stop_session(proc)  # the script's nodes, should it have died before shutting down
    assert proc.returncode == 0 and out.exists(), _tail(log)
    outcome = json.loads(out.read_text())

    assert outcome["refused_rc"] == 2
    assert "is local to this machine, but the cluster has 2 nodes" in log.read_text()
    assert not (storage / "two-nodes-refused").exists()

    assert outcome["rc"] == 0, _tail(log)
    nodes = _lines(records / "nodes.txt")
    assert len({n[0] for n in nodes}) == 2
    assert {n[1] for n in nodes} == {outcome["head"], outcome["worker"]}
    trials = _trial_dirs(storage / "two-nodes")
    assert len(trials) == 2
    for trial in trials:
        assert _result_epochs(trial) == [1, 2]
        assert len(list(trial.glob("checkpoint_*"))) >= 1


def test_killed_worker_resumes_from_its_checkpoint(
    ray_head: Head, data_dir: Path, fault_base: Path
) -> None:
    """Two trials of the same config (an XSAM trial, grid repeated twice): the
    worker process of one is SIGKILLed after it reported epoch 1 with a
    checkpoint. Ray retries it (``max_failures``) from that checkpoint, on a
    new process, without running epoch 1 again, and it ends with the same
    non-time metrics in its last row, and one row per epoch, as the trial
    nobody disturbed."""
    name = "worker-kill"
    records = ray_head.records / name
    records.mkdir()
    (records / "pause.json").write_text(json.dumps({"epoch": 1, "who": "first"}))
    (records / "hold").touch()
    storage = fault_base / "studies"
    study = _write_study(
        fault_base,
        name,
        data_dir,
        space={"seed": {"grid": [0]}},
        trial={"optimizer": "xsam", "steps": 2, "epochs": 3},
        extra={"search": {"algorithm": "grid", "num_samples": 2}, "max_failures": 2},
    )
    args = ["run", str(study), "--address", ray_head.address, "--storage", str(storage)]
    args += ["--name", name, "--trainable", f"{RECORDER}:train_recording_starts", "-q"]
    log = fault_base / f"{name}.log"
    with _driver(args, ray_head.env, log) as driver:
        paused = _wait_for(
            lambda: [r for r in _lines(records / "reports.txt") if r[0] == "paused"],
            driver,
            log,
            "a trial to pause after epoch 1",
        )
        _, victim, _, victim_pid = paused[0]
        os.kill(int(victim_pid), signal.SIGKILL)
        (records / "hold").unlink()
        driver.wait(timeout=DRIVER_TIMEOUT)
    assert driver.returncode == 0, _tail(log)

    starts = [s for s in _lines(records / "starts.txt") if s[0] == "start"]
    by_trial: dict[str, list[list[str]]] = {}
    for s in starts:
        by_trial.setdefault(s[1], []).append(s)
    assert len(by_trial) == 2
    # the victim: a fresh start, killed; one retry from the epoch-1 checkpoint elsewhere
    assert [(s[2], s[3]) for s in by_trial[victim]] == [("0", "0"), ("1", "1")]
    assert by_trial[victim][0][4] == victim_pid != by_trial[victim][1][4]
    reports = [r for r in _lines(records / "reports.txt") if r[0] == "report"]
    victim_reports = [(r[2], r[4] == victim_pid) for r in reports if r[1] == victim]
    assert victim_reports == [("1", True), ("2", False), ("3", False)]
    (other,) = set(by_trial) - {victim}
    assert [(s[2], s[3]) for s in by_trial[other]] == [("0", "0")]

    import analysis

    loaded = analysis.load(storage / name)
    trials = loaded.trials.set_index("trial_id")
    assert trials.loc[victim, "status"] == "finished"
    assert trials.loc[victim, "failures"] == 1 and trials.loc[other, "failures"] == 0
    epochs = loaded.epochs
    for trial_id in (victim, other):
        assert epochs.loc[epochs["trial_id"] == trial_id, "epoch"].tolist() == [1, 2, 3]

    dirs = {_last_row(d)["trial_id"]: d for d in _trial_dirs(storage / name)}
    assert _result_epochs(dirs[victim]) == [1, 2, 3]  # Ray did not log an epoch twice
    killed, undisturbed = _last_row(dirs[victim]), _last_row(dirs[other])
    compared = [*_non_time_metrics(), "training_iteration"]
    assert {k: _nan_safe(killed.get(k)) for k in compared} == {
        k: _nan_safe(undisturbed.get(k)) for k in compared
    }


def test_killed_driver_resumes_without_rerunning_finished_trials(
    ray_head: Head, data_dir: Path, fault_base: Path
) -> None:
    """The ``xsam-tune run`` process is SIGKILLed once one trial has finished
    (Ray's saved experiment state says TERMINATED) and the others are still
    open; ``xsam-tune resume DIR`` then completes the study: every trial
    finished with one row per epoch, and every trial that had finished
    before the kill was started exactly once. The resume names no
    ``--address``: it joins the head through ``RAY_ADDRESS``, as the
    entrypoint of a ``ray job submit`` job does."""
    name = "driver-kill"
    records = ray_head.records / name
    records.mkdir()
    (records / "pause.json").write_text(json.dumps({"epoch": 1, "who": "others"}))
    (records / "hold").touch()
    storage = fault_base / "studies"
    study_dir = storage / name
    study = _write_study(
        fault_base,
        name,
        data_dir,
        space={"seed": {"grid": [0, 1, 2]}},
        trial={"epochs": 3},
        extra={"max_concurrent_trials": 2},
    )
    args = ["run", str(study), "--address", ray_head.address, "--storage", str(storage)]
    args += ["--name", name, "--trainable", f"{RECORDER}:train_recording_starts", "-q"]
    log = fault_base / f"{name}.log"
    with _driver(args, ray_head.env, log) as driver:

        def one_finished_and_two_paused() -> dict[str, str] | None:
            state = _experiment_state(study_dir)
            paused = [r for r in _lines(records / "reports.txt") if r[0] == "paused"]
            done = [t for t, status in state.items() if status == "TERMINATED"]
            return state if len(done) == 1 and len(paused) == 2 else None

        state_at_kill = _wait_for(one_finished_and_two_paused, driver, log, "a finished trial")
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    finished = {t for t, status in state_at_kill.items() if status == "TERMINATED"}
    assert len(finished) == 1

    # Ray ends the dead driver's trial workers; they must be gone before the resume
    orphans = {int(r[3]) for r in _lines(records / "reports.txt") if r[0] == "paused"}
    deadline = time.monotonic() + 60
    while any(_alive(pid) for pid in orphans) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not any(_alive(pid) for pid in orphans), "trial workers outlived their driver"
    (records / "hold").unlink()

    # no --address: the cluster comes from RAY_ADDRESS, as inside `ray job submit`
    args = ["resume", str(study_dir), "--trainable", f"{RECORDER}:train_recording_starts", "-q"]
    resume = _run_driver(args, {**ray_head.env, "RAY_ADDRESS": ray_head.address})
    assert resume.returncode == 0, _outputs(resume)

    lines = [s for s in _lines(records / "starts.txt") if s[0] == "start"]
    assert {s[5] for s in lines} == {ray_head.address}
    starts = [s[1] for s in lines]
    for trial_id in finished:
        assert starts.count(trial_id) == 1, f"finished trial {trial_id} ran again"
    reports = [r for r in _lines(records / "reports.txt") if r[0] == "report"]
    for trial_id in finished:
        assert [r[2] for r in reports if r[1] == trial_id] == ["1", "2", "3"]

    import analysis

    loaded = analysis.load(study_dir)
    assert sorted(loaded.trials["status"]) == ["finished"] * 3
    epochs = loaded.epochs
    for trial_id in loaded.trials["trial_id"]:
        assert epochs.loc[epochs["trial_id"] == trial_id, "epoch"].tolist() == [1, 2, 3]
    info = json.loads((study_dir / "study.json").read_text())
    assert "finished_at" in info and len(info["resumed"]) == 1


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def _ray_env(base: Path, tag: str) -> dict[str, str]:
    """Environment of the Ray processes and drivers of one cluster."""
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


def _write_study(
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


def _driver_command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "study.cli", *args]


def _run_driver(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run ``xsam-tune ARGS`` to its end (killed after DRIVER_TIMEOUT seconds)."""
    return subprocess.run(
        _driver_command(args),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=DRIVER_TIMEOUT,
    )


@contextlib.contextmanager
def _driver(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """``xsam-tune ARGS`` running in the background, its output going to ``log``
    (a pipe nobody reads could fill up and stall it); killed on the way out if alive."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            _driver_command(args), cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def _wait_for(check: Callable[[], Any], driver: subprocess.Popen, log: Path, what: str) -> Any:
    """Poll ``check`` until it returns something truthy; fail if the driver
    ends first or DRIVER_TIMEOUT passes."""
    deadline = time.monotonic() + DRIVER_TIMEOUT
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        if driver.poll() is not None:
            pytest.fail(f"the driver ended (rc {driver.returncode}) before {what}:\n{_tail(log)}")
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}:\n{_tail(log)}")


def _experiment_state(study_dir: Path) -> dict[str, str]:
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


def _lines(path: Path) -> list[list[str]]:
    """A record file as lists of words (empty when it does not exist yet)."""
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def _trial_dirs(study_dir: Path) -> list[Path]:
    return sorted(p for p in study_dir.iterdir() if (p / "params.json").exists())


def _result_epochs(trial_dir: Path) -> list[int]:
    lines = (trial_dir / "result.json").read_text().splitlines()
    return [json.loads(line)["epoch"] for line in lines if line.strip()]


def _last_row(trial_dir: Path) -> dict[str, Any]:
    lines = [line for line in (trial_dir / "result.json").read_text().splitlines() if line]
    return json.loads(lines[-1])


def _non_time_metrics() -> list[str]:
    """The metrics row of docs/contract.md without its wall-clock and CPU-time columns."""
    from trainables.loop import METRICS

    return [m for m in METRICS if not m.startswith(("time_", "cpu_"))]


def _nan_safe(value: Any) -> Any:
    """NaN compares equal to itself after this (recursively through lists and dicts)."""
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, list):
        return [_nan_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: _nan_safe(v) for k, v in value.items()}
    return value


def _outputs(proc: subprocess.CompletedProcess) -> str:
    return f"rc {proc.returncode}\nstdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"


def _tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no output)"


def _free_ports(n: int) -> list[int]:
    """n distinct TCP ports free on 127.0.0.1 right now."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _session_pids(sid: int) -> list[int]:
    """Processes of the session that ``sid`` leads (what ``ray start`` spawned)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry))
    return pids


def _stop_session(proc: subprocess.Popen) -> None:
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
    while _session_pids(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in _session_pids(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _listening_sockets(pids: list[int]) -> list[tuple[int, str, int]]:
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


def _proc_net_address(hex_host: str) -> str:
    """An address as /proc/net/tcp{,6} prints it (32-bit words in host order)."""
    raw = bytes.fromhex(hex_host)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words))


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or bool(mapped and mapped.is_loopback)
