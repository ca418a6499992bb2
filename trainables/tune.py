"""The Ray Tune function trainable: the loop of `trainables.loop`, reported to Tune.

Each epoch's row goes to `ray.tune.report`, with a checkpoint every
`checkpoint_every` epochs (and always at the end). A restarted trial — a
retry after its worker died, or `xsam-tune resume` — continues from
`ray.tune.get_checkpoint()` and reproduces the uninterrupted run.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Any

STATE_FILE = "trial_state.pt"


def resolve_paths(config: dict[str, Any]) -> dict[str, Any]:
    """Relative `data_dir`s are relative to where the study was launched, not the trial dir."""
    data_dir = config.get("data_dir")
    if data_dir and not os.path.isabs(os.path.expanduser(data_dir)):
        origin = os.environ.get("TUNE_ORIG_WORKING_DIR", os.getcwd())
        config = {**config, "data_dir": str(Path(origin) / data_dir)}
    return config


class StorageFullError(OSError):
    """No space left for a checkpoint: the trial stops, its last checkpoint stays intact.

    An ``OSError`` with ``errno`` ENOSPC (it pickles as one, so Ray's copy of
    the error reaches the driver whole); the message says what to do.
    """


#: errno values of a full disk or an exhausted quota.
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_storage_full(exc: BaseException) -> bool:
    """Whether an error is a full disk or quota (pyarrow's copies may carry only the text)."""
    return isinstance(exc, OSError) and (
        exc.errno in FULL_ERRNOS or "No space left on device" in str(exc)
    )


def preload_worker() -> None:
    """Import what a trial needs (torch, torch._dynamo, the trial layer, Ray Tune) in a
    fresh Ray worker.

    The study layer names it as the ``worker_process_setup_hook`` of an
    instance it starts: Ray starts that instance's first workers while the
    driver is still setting the study up, so a trial's imports are done before
    it starts. A failed import is left for the trial to report.
    """
    # torch._dynamo: torch.optim.Optimizer's constructor runs under
    # torch._disable_dynamo, which imports it on a trial's first optimizer
    # (1-4 s on 2 cores): here instead, before the trial starts.
    try:
        import ray.tune  # noqa: F401
        import torch._dynamo  # noqa: F401

        import trainables.loop  # noqa: F401
    except Exception:  # the trial's own import raises it again, with its trial named
        pass


def train_trial(config: dict[str, Any]) -> None:
    """Run one trial under Ray Tune (a function trainable).

    Raises:
        StorageFullError: A checkpoint could not be written (full disk or quota).
    """
    # Imported here, not at the top: the driver imports this module only to name
    # the trainable, and Ray Tune and torch (seconds) are needed in the trial's worker.
    import ray.tune

    from trainables.loop import Trial

    trial = Trial(resolve_paths(config))
    checkpoint = ray.tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as path:
            trial.load(Path(path) / STATE_FILE)
    every = trial.config["checkpoint_every"]
    for row in trial.rows():
        last = trial.epoch >= trial.config["epochs"] or trial.diverged
        if last or (every and trial.epoch % every == 0):
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    trial.save(Path(tmp) / STATE_FILE)
                    ray.tune.report(row, checkpoint=ray.tune.Checkpoint.from_directory(tmp))
            except OSError as exc:
                if not is_storage_full(exc):
                    raise
                reason = " ".join(str(exc).split())[:200]
                raise StorageFullError(
                    errno.ENOSPC,
                    f"no space left for the checkpoint of epoch {trial.epoch} ({reason}); "
                    "free space, then continue with `xsam-tune resume <study directory>`",
                ) from None
        else:
            ray.tune.report(row)
