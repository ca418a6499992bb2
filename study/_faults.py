"""Which trial failures are worth a retry.

Ray Tune retries a failed trial ``max_failures`` times. That helps when a
worker died or a node went away, and wastes the retries when the trial
rejected its own input: a configuration, dataset, model or checkpoint error
(the project's ``ValueError`` subclasses: ``ConfigError``, ``RegistryError``,
``DatasetError``, ``ModelError``, ``CheckpointError``) fails the same way
every time. :class:`NoRetryOnBadInput` stops the retries of such a trial
after its first failure; the trial then ends ``errored`` with that error.

Ray has no hook before it decides to retry: the callback runs just after
(``on_trial_recover``) and sets the trial's ``max_failures`` to 0, so the
one retry already queued is the last. That retry fails at once, where the
first attempt did (configs are checked before any data is loaded).
"""

from __future__ import annotations

from typing import Any

from ray.tune import Callback

__all__ = ["BAD_INPUT_MODULES", "NoRetryOnBadInput", "is_bad_input", "trial_exception"]

#: Packages whose ``ValueError`` subclasses mean "this input is wrong".
BAD_INPUT_MODULES = ("xsam_contract", "trainables", "study")


def is_bad_input(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or the error a Ray task error wraps) is one of the
    project's bad-input errors, which a retry would raise again."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        exc = cause
    if not isinstance(exc, ValueError):
        return False
    return type(exc).__module__.split(".")[0] in BAD_INPUT_MODULES


def trial_exception(trial: Any) -> BaseException | None:
    """The exception of a trial's last failure, as Ray pickled it (None if unreadable)."""
    import ray.cloudpickle as cloudpickle

    path = getattr(trial, "pickled_error_file", None)
    if not path:
        return None
    try:
        with open(path, "rb") as fh:
            exc = cloudpickle.load(fh)
    except Exception:  # missing, torn, or a class this process cannot import
        return None
    return exc if isinstance(exc, BaseException) else None


class NoRetryOnBadInput(Callback):
    """Ray Tune callback: no further retries for a trial that failed on bad input."""

    def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """The trial failed and is queued for a retry: make that retry its last
        if the failure was bad input."""
        if is_bad_input(trial_exception(trial)):
            trial.max_failures = 0
