"""End to end on a two-node Ray cluster on loopback: local storage refused then
allowed, and a study in an S3 bucket surviving a node kill and a driver kill.

The cluster (module fixture) is two ``ray start --block`` nodes on 127.0.0.1
(:func:`tests.study._engine.ray_node`: a head and a worker node, one CPU each,
separate temp dirs, token authentication), their environment pointing at the
tests' moto server (``tests/_s3.py``). The trials are the real trainable on
mnist1d/cnn1d inside the recorders of ``tests/study/_faults_trainables.py``.

1. Local storage on two nodes: refused without ``--allow-local-storage``;
   with it, two trials that must run at once land one on each node.
2. The bucket: a grid of three trials; once one paused trial sits on each
   node, the worker node is SIGKILLed (every process of its session); its
   trial resumes from its checkpoint in the bucket on the head and waits there
   (``hold_restart``) while the driver is SIGKILLed too; ``xsam-tune resume
   s3://…`` from another working directory (and cache) finishes the study.
   Loaded back from the bucket: the same trials, each epoch exactly once, and
   the same final non-time metrics as the reference: each trial's config run
   undisturbed by the plain loop in the test process (``trainables.loop.Trial``,
   which the trainable wraps).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests._s3 import S3
from tests.study._cli_driver import background
from tests.study._engine import (
    RECORDER,
    Node,
    comparable,
    experiment_state,
    exposed_sockets,
    kill_session,
    lines,
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

EPOCHS = 2
#: The first trial runs through, the next two pause after epoch 1 (one per node).
SEEDS = [0, 1, 2]


@dataclass
class Cluster:
    """The module's two-node cluster.

    Attributes:
        base: Its folder (temp dirs, token, records, studies, logs).
        env: Environment of its drivers (token, bucket settings, records).
        head: The head node (its ``address`` is the cluster's).
        worker: The live worker node.
        data_dir: The session's mnist1d.
    """

    base: Path
    env: dict[str, str]
    head: Node
    worker: Node
    data_dir: Path

    @property
    def records(self) -> Path:
        """``$XSAM_FAULTS_DIR`` of its trials."""
        return Path(self.env["XSAM_FAULTS_DIR"])


@pytest.fixture(scope="module")
def _nodes(
    s3: S3, mnist1d_dir: Path
) -> Iterator[tuple[Path, dict[str, str], Node, Callable[[], Node], Path]]:
    """The head, and a function giving a live worker node (a new one once the
    last was killed): nodes take seconds to start, so the module shares them."""
    base = Path(tempfile.mkdtemp(prefix="xs-", dir="/tmp"))  # short: Ray's socket paths
    try:
        token = base / "auth_token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        env = s3.apply(ray_env(base, "head"))
        # the head learns of a dead node within seconds (default: about 15 s)
        head_env = {**env, "RAY_health_check_period_ms": "500"}
        head_env["RAY_health_check_failure_threshold"] = "3"
        with contextlib.ExitStack() as stack:
            head = stack.enter_context(ray_node(base / "head", head_env, base / "head.log"))
            workers: list[Node] = []

            def worker() -> Node:
                if not workers or workers[-1].proc.poll() is not None:
                    tag = f"worker{len(workers)}"
                    node = ray_node(base / tag, env, base / f"{tag}.log", head=head.address)
                    workers.append(stack.enter_context(node))
                return workers[-1]

            yield base, env, head, worker, mnist1d_dir
    finally:
        if os.environ.get("XSAM_FAULTS_KEEP"):
            print(f"\ncluster test files kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def cluster(_nodes: tuple[Path, dict[str, str], Node, Callable[[], Node], Path]) -> Cluster:
    """The two-node cluster, its worker node alive."""
    base, env, head, worker, data_dir = _nodes
    return Cluster(base, env, head, worker(), data_dir)


def test_local_storage_on_two_nodes_refused_then_allowed(cluster: Cluster) -> None:
    """A study with local storage on a two-node cluster is refused without
    ``--allow-local-storage`` (exit 2, nothing written); with it, two trials
    that must run at the same time (a barrier in the recorder) land one on
    each node, and both write every epoch and checkpoint into the study
    directory."""
    name = "two-nodes"
    records = cluster.records / name
    records.mkdir(parents=True)
    (records / "barrier").write_text("2")
    storage = cluster.base / "studies"
    study = write_study(cluster.base, name, cluster.data_dir, space={"seed": {"grid": [0, 1]}})
    args = ["run", str(study), "--address", cluster.head.address, "--storage", str(storage)]
    args += ["--trainable", f"{RECORDER}:train_recording_node", "-q"]

    refused = run_driver([*args, "--name", f"{name}-refused"], cluster.env)
    assert refused.returncode == 2, outputs(refused)
    assert "is local to this machine, but the cluster has 2 nodes" in refused.stderr
    assert not (storage / f"{name}-refused").exists()

    allowed = run_driver([*args, "--name", name, "--allow-local-storage"], cluster.env)
    assert allowed.returncode == 0, outputs(allowed)
    nodes = lines(records / "nodes.txt")
    assert len({n[0] for n in nodes}) == 2  # two trials
    assert len({n[1] for n in nodes}) == 2, nodes  # on two nodes: the head and the worker
    assert {n[2] for n in nodes} == {cluster.head.address}
    trials = trial_dirs(storage / name)
    assert len(trials) == 2
    for trial in trials:
        assert result_epochs(trial) == [1, 2]
        assert len(list(trial.glob("checkpoint_*"))) >= 1


def test_bucket_study_survives_a_node_kill_and_a_driver_kill(cluster: Cluster, s3: S3) -> None:
    import analysis

    base, env, address, data_dir = cluster.base, cluster.env, cluster.head.address, cluster.data_dir
    bucket = s3.bucket()
    root = f"s3://{bucket}/studies"
    space = {"seed": {"grid": SEEDS}}
    extra = {"max_failures": 2}
    trainable = f"{RECORDER}:train_recording_starts"

    # 1. the faulted run: one paused trial on each node, then the worker node dies
    name = "faulted"
    records = paused_records(cluster.records, name, "others")
    # The victim's restart waits until the driver is dead: were it to finish its
    # last epoch before the kill, after Ray's last save of the experiment state,
    # the resume would run that epoch again (Ray's semantics).
    (records / "hold_restart").touch()
    study = write_study(base, name, data_dir, space=space, trial={"epochs": EPOCHS}, extra=extra)
    args = ["run", str(study), "--address", address, "--storage", root, "--trainable", trainable]
    log = base / f"{name}.log"
    worker = cluster.worker.proc
    worker_pids = set(session_pids(worker.pid))
    exposed = exposed_sockets(sorted(worker_pids))
    assert not exposed, f"worker-node servers reachable from other machines: {exposed}"
    # Ray saves its experiment state every second (default: every 10 s): the
    # test waits for a save before it kills the driver. (In a bucket a saved
    # state appears whole; a local copy can be read half-written.)
    with background([*args, "-q"], {**env, "TUNE_GLOBAL_CHECKPOINT_S": "1"}, log) as proc:

        def paused_on_both_nodes() -> list[list[str]] | None:
            worker_pids.update(session_pids(worker.pid))  # trial workers start late
            paused = [r for r in lines(records / "reports.txt") if r[0] == "paused"]
            on_worker = [r for r in paused if int(r[3]) in worker_pids]
            return paused if len(paused) == 2 and len(on_worker) == 1 else None

        paused = wait_for(paused_on_both_nodes, proc, log, "two pauses")
        (victim,) = [r[1] for r in paused if int(r[3]) in worker_pids]
        kill_session(worker.pid)
        worker.wait(timeout=30)
        (records / "hold").unlink()

        def victim_restarted_and_ends_saved() -> list[str] | None:
            # Every trial that ended is TERMINATED in the state saved to the bucket
            # (nothing ends after this: the head's one CPU holds the waiting victim).
            starts = [s for s in lines(records / "starts.txt") if s[:2] == ["start", victim]]
            ended = {s[1] for s in lines(records / "starts.txt") if s[0] == "end"}
            state = _bucket_state(s3, bucket, f"studies/{name}/", base / "state")
            if len(starts) >= 2 and all(state.get(t) == "TERMINATED" for t in ended):
                return starts[1]
            return None

        restart = wait_for(
            victim_restarted_and_ends_saved, proc, log, "the victim's restart on the head"
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    # resumed from its checkpoint in the bucket (epoch 1), on the surviving node
    assert restart[2] == "1" and int(restart[3]) >= 1, restart
    assert int(restart[4]) not in worker_pids, restart
    # Ray ends the dead driver's trial workers; the waiting victim must be gone
    # before it may go on, or it would train beside its resumed self
    assert wait_gone({int(restart[4])}), "a trial worker outlived its driver"
    (records / "hold_restart").unlink()

    # 2. resume from another working directory and cache (another machine)
    elsewhere = base / "elsewhere"
    elsewhere.mkdir()
    resume = run_driver(
        ["resume", f"{root}/{name}", "--address", address, "--trainable", trainable, "-q"],
        {**env, "XDG_CACHE_HOME": str(elsewhere / "cache")},
        cwd=elsewhere,
    )
    records_text = (records / "starts.txt").read_text() + (records / "reports.txt").read_text()
    assert resume.returncode == 0, f"{outputs(resume)}\n{records_text}\n{tail(log)}"
    assert os.listdir(elsewhere) == ["cache"]

    # 3. everything in the bucket, exactly once, equal to the reference: each trial's
    # config run undisturbed by the plain loop here (what the trainable wraps)
    with _aws(s3, base / "mirror"):
        faulted = analysis.load(f"{root}/{name}")
    assert len(faulted.trials) == len(SEEDS)
    assert sorted(faulted.trials["status"]) == ["finished"] * len(SEEDS)
    seeds = []
    for trial_dir in faulted.trials["trial_dir"]:
        trial_rows = rows(faulted.path / trial_dir / "result.json")
        epochs = [r["epoch"] for r in trial_rows]
        assert epochs == list(range(1, EPOCHS + 1)), (trial_dir, records_text)
        config = trial_rows[-1]["config"]
        seeds.append(config["seed"])
        assert comparable(trial_rows[-1]) == _reference(config), trial_dir
    assert sorted(seeds) == SEEDS
    assert faulted.trials.set_index("trial_id").loc[victim, "failures"] >= 1


def _reference(config: dict[str, Any]) -> dict[str, Any]:
    """:func:`comparable` of the last row of ``config`` run without Ray or a fault."""
    from trainables.loop import Trial
    from trainables.tune import resolve_paths

    *_, last = Trial(resolve_paths(config)).rows()
    return comparable({**last, "training_iteration": last["epoch"]})


@contextlib.contextmanager
def _aws(s3: S3, mirror: Path) -> Iterator[None]:
    """This process's environment pointed at the bucket while reading it."""
    from analysis._remote import CACHE_ENV

    saved = dict(os.environ)
    os.environ.update({**s3.env(), CACHE_ENV: str(mirror)})
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _bucket_state(s3: S3, bucket: str, prefix: str, scratch: Path) -> dict[str, str]:
    """Trial id → status in the newest experiment state Ray saved to the bucket."""
    keys = sorted(k for k in s3.keys(bucket, prefix) if "/experiment_state-" in k)
    if not keys:
        return {}
    scratch.mkdir(parents=True, exist_ok=True)
    local = scratch / keys[-1].rsplit("/", 1)[1]
    s3.client().download_file(bucket, keys[-1], str(local))
    try:
        return experiment_state(scratch)
    finally:
        local.unlink()
