"""The study layer's view of the trial contract (``xsam_contract``).

``xsam_contract.validate_trial_config`` is the one source of truth for the
keys of a trial config and ``xsam_contract.METRICS`` for the metrics row
(docs/contract.md); the study layer only calls them and translates errors
into study-file paths. The contract imports no torch, so checking a study
file does not load the trial layer.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import xsam_contract

__all__ = ["TrialValidator", "metric_names", "trial_defaults", "trial_keys", "trial_validator"]

TrialValidator = Callable[[Mapping[str, Any]], dict]

# Columns of the metrics row that are not numbers to optimise.
_NOT_OBJECTIVES = frozenset({"diverged", "alpha_refreshed", "probes"})
# Ray Tune's own counters that a study may still optimise.
_RAY_METRICS = ("time_total_s", "training_iteration")


def trial_validator() -> TrialValidator:
    """``xsam_contract.validate_trial_config``."""
    return xsam_contract.validate_trial_config


def trial_defaults() -> dict[str, Any]:
    """Every trial key with its default value (a fresh dict)."""
    return xsam_contract.trial_defaults()


def trial_keys() -> frozenset[str]:
    """The keys a trial config may hold."""
    return frozenset(xsam_contract.TRIAL_KEYS)


@functools.cache
def metric_names() -> tuple[str, ...]:
    """Metrics a study may optimise: the numeric columns of the metrics row,
    then Ray's ``time_total_s`` and ``training_iteration``."""
    metrics = xsam_contract.METRICS
    return (*(m for m in metrics if m not in _NOT_OBJECTIVES), *_RAY_METRICS)
