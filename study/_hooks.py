"""Ray Tune callbacks of a run: the study layer's own, and the console's adapter."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ray.tune import Callback

from study._faults import NoRetryOnBadInput

__all__ = ["Forward", "run_callbacks"]


def run_callbacks(listeners: Sequence[Any] = ()) -> list[Callback]:
    """The callbacks of a run: no retries of a trial that failed on bad input
    (:mod:`study._faults`), then each listener (the console) through :class:`Forward`."""
    return [NoRetryOnBadInput(), *(Forward(listener) for listener in listeners)]


class Forward(Callback):
    """A Ray Tune callback that passes the hooks on to an object with the same
    methods (:class:`study._console.Console`), which then needs no Ray import.

    Args:
        target: Has ``setup``, ``on_step_begin``, ``on_trial_start``,
            ``on_trial_result``, ``on_trial_complete``, ``on_trial_recover``,
            ``on_trial_error`` and ``on_experiment_end``.
    """

    def __init__(self, target: Any) -> None:
        self.target = target

    def setup(self, **info: Any) -> None:
        self.target.setup(**info)

    def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
        self.target.on_step_begin(iteration, trials, **info)

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.target.on_trial_start(iteration, trials, trial, **info)

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict, **info: Any
    ) -> None:
        self.target.on_trial_result(iteration, trials, trial, result, **info)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.target.on_trial_complete(iteration, trials, trial, **info)

    def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.target.on_trial_recover(iteration, trials, trial, **info)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.target.on_trial_error(iteration, trials, trial, **info)

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        self.target.on_experiment_end(trials, **info)
