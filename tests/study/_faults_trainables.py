"""Trainables for the fault tests: ``trainables.tune.train_trial`` plus a record.

Ray workers import this module by name (``--trainable
tests.study._faults_trainables:FUNC``; the clusters of the fault tests put the
repository on ``PYTHONPATH``), so it must not import pytest or anything else
of the test folder. Each wrapper writes what happened inside the worker to
files under ``$XSAM_FAULTS_DIR/<study name>/``, a folder the test reads:

``starts.txt``
    ``start <trial_id> <has_checkpoint 0|1> <checkpoint epoch> <pid> <gcs_address>``
    each time a trial's function starts (first run, retry after a worker
    died, resume after the driver died), ``end <trial_id> <pid>`` when it
    returns.
``reports.txt``
    ``report <trial_id> <epoch> <with_checkpoint 0|1> <pid>`` after every
    ``ray.tune.report`` has returned (for a Tune function trainable that is
    when the driver has taken the result and registered its checkpoint),
    ``paused <trial_id> <epoch> <pid>`` when the trial starts waiting.
``nodes.txt``
    ``<trial_id> <node_id> <gcs_address> <pid>`` (:func:`train_recording_node`).

Steering, read from the same folder (written by the test before the study
starts): ``barrier`` (a number n: :func:`train_recording_node` waits until n
trials have recorded their node), ``pause.json`` (see :func:`_pause_plan`) and
``hold_restart`` (while it exists, a run that starts from a checkpoint waits
before training).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any
from unittest import mock

import ray
import ray.tune

from trainables.tune import STATE_FILE, train_trial

#: Environment variable naming the root of the record folders.
RECORDS_ENV = "XSAM_FAULTS_DIR"
#: Longest a trial waits at a barrier or a pause before going on by itself
#: (the test then fails on what it finds, instead of hanging).
WAIT_S = 120.0


def records_dir() -> Path:
    """``$XSAM_FAULTS_DIR/<study name>``, created if missing."""
    root = os.environ.get(RECORDS_ENV)
    if not root:
        raise RuntimeError(f"{RECORDS_ENV} is not set in this Ray worker")
    path = Path(root) / ray.tune.get_context().get_experiment_name()
    path.mkdir(parents=True, exist_ok=True)
    return path


def append_line(path: Path, line: str) -> None:
    """Append one line in a single ``write`` (O_APPEND: lines of concurrent
    trials never interleave) and flush it to the file before going on."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def checkpoint_epoch(checkpoint: Any) -> int:
    """The epoch a trial checkpoint of ``trainables.tune`` was taken after (0: none)."""
    if checkpoint is None:
        return 0
    import torch

    with checkpoint.as_directory() as path:
        state = torch.load(Path(path) / STATE_FILE, map_location="cpu", weights_only=False)
    return int(state["epoch"])


def train_recording_node(config: dict[str, Any]) -> None:
    """Record the node the trial runs on, wait at the barrier, then train."""
    folder = records_dir()
    trial_id = ray.tune.get_context().get_trial_id()
    context = ray.get_runtime_context()
    address = context.gcs_address
    append_line(folder / "nodes.txt", f"{trial_id} {context.get_node_id()} {address} {os.getpid()}")
    barrier = folder / "barrier"
    need = int(barrier.read_text()) if barrier.exists() else 0
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        lines = (folder / "nodes.txt").read_text().splitlines()
        if len({line.split()[0] for line in lines if line.strip()}) >= need:
            break
        time.sleep(0.1)
    train_trial(config)


def train_recording_starts(config: dict[str, Any]) -> None:
    """Record every start and report of the trial, pause where planned, train."""
    folder = records_dir()
    trial_id = ray.tune.get_context().get_trial_id()
    pid = os.getpid()
    checkpoint = ray.tune.get_checkpoint()
    fresh = checkpoint is None
    append_line(
        folder / "starts.txt",
        f"start {trial_id} {int(not fresh)} {checkpoint_epoch(checkpoint)} {pid} "
        f"{ray.get_runtime_context().gcs_address}",
    )
    hold_restart = folder / "hold_restart"
    deadline = time.monotonic() + WAIT_S
    while not fresh and hold_restart.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    plan = _pause_plan(folder, trial_id, fresh)
    report = ray.tune.report

    def recording_report(metrics: dict[str, Any], *, checkpoint: Any = None) -> None:
        report(metrics, checkpoint=checkpoint)
        epoch = int(metrics["epoch"])
        append_line(
            folder / "reports.txt",
            f"report {trial_id} {epoch} {int(checkpoint is not None)} {pid}",
        )
        if plan is not None and epoch == plan:
            append_line(folder / "reports.txt", f"paused {trial_id} {epoch} {pid}")
            hold = folder / "hold"
            deadline = time.monotonic() + WAIT_S
            while hold.exists() and time.monotonic() < deadline:
                time.sleep(0.1)

    # train_trial looks ray.tune.report up at each call: it reports through the recorder
    with mock.patch.object(ray.tune, "report", recording_report):
        train_trial(config)
    append_line(folder / "starts.txt", f"end {trial_id} {pid}")


def _pause_plan(folder: Path, trial_id: str, fresh: bool) -> int | None:
    """After which epoch this run of the trial pauses (None: never).

    ``pause.json`` is ``{"epoch": E, "who": "first" | "others"}``: with
    ``first``, the first trial to start fresh pauses after epoch E (the
    worker the test kills); with ``others``, the first trial to start runs
    through and every other fresh start pauses after epoch E (trials still
    open when the test kills the driver). A run that resumes from a checkpoint
    never pauses. A pause lasts while the file ``hold`` exists.
    """
    plan_file = folder / "pause.json"
    if not fresh or not plan_file.exists():
        return None
    plan = json.loads(plan_file.read_text())
    try:  # exactly one trial wins the claim, even when two start at once
        fd = os.open(folder / "claim", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, trial_id.encode())
        os.close(fd)
        first = True
    except FileExistsError:
        first = (folder / "claim").read_text() == trial_id
    pauses = first if plan["who"] == "first" else not first
    return int(plan["epoch"]) if pauses else None
