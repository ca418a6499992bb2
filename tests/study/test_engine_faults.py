"""Real Ray engine, real faults: the study layer on clusters it did not start.

Every test here drives ``xsam-tune`` in a subprocess (the pytest process
already holds the session's embedded Ray, ``tests/conftest.py``) against a
Ray cluster that is not the embedded one:

a head node started with ``ray start --head`` on 127.0.0.1 (module fixture
``ray_head``, :func:`tests.study._engine.ray_node`: a private temp dir, free
ports, its own token file, loopback only, always stopped). The two-node
cluster tests are ``tests/study/test_cluster_s3.py``.

The trials are the real trainable (``trainables.tune.train_trial`` on
mnist1d/cnn1d) inside thin recorders (``tests/study/_faults_trainables.py``)
that log every start, report and node to files, and pause a trial where a
test needs a window to kill something. ``XSAM_FAULTS_KEEP=1`` keeps the
module's folder (records, logs, study directories) for a look afterwards.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.study._cli_driver import background
from tests.study._engine import (
    DRIVER_TIMEOUT,
    RECORDER,
    Node,
    comparable,
    experiment_state,
    exposed_sockets,
    lines,
    listening_sockets,
    outputs,
    paused_records,
    ray_env,
    ray_node,
    result_epochs,
    rows,
    run_driver,
    session_pids,
    tail,
    trial_dirs,
    wait_for,
    wait_gone,
    write_study,
)

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@dataclass
class Head:
    """A running ``ray start --head`` node and what its drivers need.

    Attributes:
        node: The node (``node.address`` is its GCS).
        env: Environment for drivers that join it (token, temp dir, records).
        records: ``$XSAM_FAULTS_DIR`` of its workers.
    """

    node: Node
    env: dict[str, str]
    records: Path

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT`` of its GCS."""
        return self.node.address


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
def data_dir(mnist1d_dir: Path) -> Path:
    """The session's mnist1d (trials only read it)."""
    return mnist1d_dir


@pytest.fixture(scope="module")
def ray_head(fault_base: Path, data_dir: Path) -> Iterator[Head]:
    """``ray start --head --block`` on 127.0.0.1 with free ports and two CPUs,
    stopped at the end. Token authentication stays on, with a token file of
    this module's own (``RAY_AUTH_TOKEN_PATH``)."""
    env = ray_env(fault_base, "head")
    log = fault_base / "head.log"
    with ray_node(fault_base / "head" / "ray", env, log, num_cpus=2) as node:
        yield Head(node, env, fault_base / "records")


# --------------------------------------------------------------------------
# the tests
# --------------------------------------------------------------------------


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
    records = paused_records(ray_head.records, name, "first")
    storage = fault_base / "studies"
    study = write_study(
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
    with background(args, ray_head.env, log) as proc:
        paused = wait_for(
            lambda: [r for r in lines(records / "reports.txt") if r[0] == "paused"],
            proc,
            log,
            "a trial to pause after epoch 1",
        )
        _, victim, _, victim_pid = paused[0]
        os.kill(int(victim_pid), signal.SIGKILL)
        (records / "hold").unlink()
        proc.wait(timeout=DRIVER_TIMEOUT)
    assert proc.returncode == 0, tail(log)

    starts = [s for s in lines(records / "starts.txt") if s[0] == "start"]
    by_trial: dict[str, list[list[str]]] = {}
    for s in starts:
        by_trial.setdefault(s[1], []).append(s)
    assert len(by_trial) == 2
    # the victim: a fresh start, killed; one retry from the epoch-1 checkpoint elsewhere
    assert [(s[2], s[3]) for s in by_trial[victim]] == [("0", "0"), ("1", "1")]
    assert by_trial[victim][0][4] == victim_pid != by_trial[victim][1][4]
    reports = [r for r in lines(records / "reports.txt") if r[0] == "report"]
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

    dirs = {_last_row(d)["trial_id"]: d for d in trial_dirs(storage / name)}
    assert result_epochs(dirs[victim]) == [1, 2, 3]  # Ray did not log an epoch twice
    assert comparable(_last_row(dirs[victim])) == comparable(_last_row(dirs[other]))


def test_killed_driver_resumes_without_rerunning_finished_trials(
    ray_head: Head, data_dir: Path, fault_base: Path
) -> None:
    """``xsam-tune run --address 127.0.0.1:PORT`` runs its trials on the cluster
    that ``ray start --head`` started (the recorder sees that GCS address in
    every trial) and is SIGKILLed once one trial has finished (Ray's saved
    experiment state says TERMINATED) and the others are still open;
    ``xsam-tune resume DIR`` then completes the study: every trial finished
    with one row per epoch and its checkpoints, every trial that had finished
    before the kill was started exactly once, and ``study.json`` names the
    cluster. The resume names no ``--address``: it joins the head through
    ``RAY_ADDRESS``, as the entrypoint of a ``ray job submit`` job does. The
    head listens on the loopback interface only."""
    name = "driver-kill"
    records = paused_records(ray_head.records, name, "others")
    storage = fault_base / "studies"
    study_dir = storage / name
    study = write_study(
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
    # Ray saves its experiment state every second (default: every 10 s at first):
    # the kill waits for a save that names the finished trial.
    env = {**ray_head.env, "TUNE_GLOBAL_CHECKPOINT_S": "1"}
    with background(args, env, log) as proc:

        def one_finished_and_two_paused() -> dict[str, str] | None:
            state = experiment_state(study_dir)
            paused = [r for r in lines(records / "reports.txt") if r[0] == "paused"]
            done = [t for t, status in state.items() if status == "TERMINATED"]
            return state if len(done) == 1 and len(paused) == 2 else None

        state_at_kill = wait_for(one_finished_and_two_paused, proc, log, "a finished trial")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finished = {t for t, status in state_at_kill.items() if status == "TERMINATED"}
    assert len(finished) == 1

    # Ray ends the dead driver's trial workers; they must be gone before the resume
    orphans = {int(r[3]) for r in lines(records / "reports.txt") if r[0] == "paused"}
    assert wait_gone(orphans), "trial workers outlived their driver"
    (records / "hold").unlink()

    # no --address: the cluster comes from RAY_ADDRESS, as inside `ray job submit`
    args = ["resume", str(study_dir), "--trainable", f"{RECORDER}:train_recording_starts", "-q"]
    resume = run_driver(args, {**ray_head.env, "RAY_ADDRESS": ray_head.address})
    assert resume.returncode == 0, outputs(resume)

    started = [s for s in lines(records / "starts.txt") if s[0] == "start"]
    assert {s[5] for s in started} == {ray_head.address}
    starts = [s[1] for s in started]
    for trial_id in finished:
        assert starts.count(trial_id) == 1, f"finished trial {trial_id} ran again"
    reports = [r for r in lines(records / "reports.txt") if r[0] == "report"]
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
    assert info["address"] == ray_head.address
    trials = trial_dirs(study_dir)
    assert len(trials) == 3
    for trial in trials:
        assert result_epochs(trial) == [1, 2, 3]  # Ray did not log an epoch twice
        assert sorted(p.name for p in trial.glob("checkpoint_*"))

    pids = session_pids(ray_head.node.proc.pid)
    listening = listening_sockets(pids)
    assert any(port == int(ray_head.address.rsplit(":", 1)[1]) for _, _, port in listening)
    exposed = exposed_sockets(pids)
    assert not exposed, f"Ray servers reachable from other machines: {exposed}"


def _last_row(trial_dir: Path) -> dict[str, Any]:
    return rows(trial_dir / "result.json")[-1]
