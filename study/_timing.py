"""An opt-in record of when a study's start-up and teardown phases end (issue 14).

With ``$XSAM_TUNE_TIMING`` naming a file, the driver appends one JSON line
per phase, ``{"phase": NAME, "time": UNIX_SECONDS}``: ``ray_up`` (connected
to Ray; ``how`` says whether it started an instance, joined a kept one or a
cluster), ``fit`` (the Tuner starts), ``first_trial`` (the first trial
started), ``first_row`` (the first metrics row reached the driver),
``last_row``, ``fit_end`` (the Tuner returned) and ``ray_down`` (Ray is
stopped or disconnected). ``benchmarks/study_start.py`` reads it. Without
the variable nothing is written and nothing is imported.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

__all__ = ["TIMING_ENV", "RowClock", "mark"]

#: The environment variable naming the timing record.
TIMING_ENV = "XSAM_TUNE_TIMING"


def mark(phase: str, at: float | None = None, **fields: Any) -> None:
    """Append ``phase`` with its time (default now) to the timing record, if one is asked for."""
    path = os.environ.get(TIMING_ENV)
    if not path:
        return
    line = json.dumps({"phase": phase, "time": time.time() if at is None else at, **fields})
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
    except OSError:  # a timing record never stops a study
        pass


class RowClock:
    """A run listener (the hooks of :class:`study._hooks.Forward`) that marks the first
    trial's start, the first row and the last row of the run."""

    def __init__(self) -> None:
        self._started = False
        self._rows = 0
        self._last: float | None = None

    def setup(self, **info: Any) -> None:
        mark("fit")

    def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
        pass

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        if not self._started:
            self._started = True
            mark("first_trial")

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict, **info: Any
    ) -> None:
        self._rows += 1
        self._last = time.time()
        if self._rows == 1:
            mark("first_row", at=self._last)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        pass

    def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        pass

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        pass

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        if self._last is not None:  # written once, at the end: one line, not one per row
            mark("last_row", at=self._last, rows=self._rows)
