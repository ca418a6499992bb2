"""Fractional GPUs on declared resources, for ``tests/study/test_gpu_placement.py``.

Run as ``python -m tests.study._gpu_placement NUM_GPUS NUM_CPUS xsam-tune-args…``:
starts a loopback-only Ray instance that declares ``NUM_GPUS`` GPUs (none
needs to exist) and ``NUM_CPUS`` CPUs, then runs ``xsam-tune ARGS --address
<that instance>`` (the launcher reuses the running instance) and exits with
its code.

:func:`train_recording_gpu` is the trainable: it records, per trial, the
``CUDA_VISIBLE_DEVICES`` its worker got and the GPU ids Ray assigned
(``gpus.txt`` in the record folder of ``tests/study/_faults_trainables.py``),
waits at that module's barrier (``barrier.txt``: whether it was met), then
the first trial on each GPU trains with ``trainables.tune.train_trial``
(``trained.txt``: ``<trial_id> <gpu ids>``) and the others report one row
without importing torch (eight workers importing torch at once on two cores
took most of the test's time).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import ray
import ray.tune

from tests.study._faults_trainables import WAIT_S, append_line, records_dir
from trainables.tune import train_trial


def train_recording_gpu(config: dict[str, Any]) -> None:
    """Record the GPU placement, wait until ``barrier`` trials run at once, train."""
    folder = records_dir()
    trial_id = ray.tune.get_context().get_trial_id()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "-")
    ids = ",".join(str(i) for i in ray.get_gpu_ids()) or "-"
    append_line(folder / "gpus.txt", f"{trial_id} {visible} {ids} {os.getpid()}")
    barrier = folder / "barrier"
    need = int(barrier.read_text()) if barrier.exists() else 0
    deadline = time.monotonic() + WAIT_S
    met = False
    while not met and time.monotonic() < deadline:
        met = len((folder / "gpus.txt").read_text().splitlines()) >= need
        time.sleep(0.1)
    # 1: every trial of the barrier was placed while this one waited (they ran at once)
    append_line(folder / "barrier.txt", f"{trial_id} {int(met)}")
    try:  # exactly one trial per GPU wins the claim
        os.close(os.open(folder / f"trains-on-{ids}", os.O_WRONLY | os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        ray.tune.report({"epoch": 1, "test_acc": 0.0})
        return
    append_line(folder / "trained.txt", f"{trial_id} {ids}")
    train_trial(config)


def main(argv: list[str]) -> int:
    """Declare the resources, run the study, shut Ray down."""
    num_gpus, num_cpus, *args = argv
    from study._cluster import loopback_only, ray_temp_dir
    from study.cli import main as xsam_tune

    with loopback_only():
        ray.init(
            num_cpus=int(num_cpus),
            num_gpus=int(num_gpus),
            include_dashboard=False,
            log_to_driver=False,
            _temp_dir=ray_temp_dir(),
        )
    try:
        # Join the instance just started (the launcher reuses a running one): the
        # pre-Ray check of this machine's own GPUs is for an instance it starts.
        return xsam_tune([*args, "--address", ray.get_runtime_context().gcs_address])
    finally:
        ray.shutdown()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
