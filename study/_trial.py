"""Access to the trial layer's config table and metrics row.

``trainables.loop.validate_trial_config`` is the one source of truth for the
keys of a trial config, and ``trainables.loop.METRICS`` for the metrics row
(docs/contract.md); the study layer only calls them and translates errors
into study-file paths. Imported on first use: they pull in torch, which
``xsam-tune --help`` has no use for.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

TrialValidator = Callable[[Mapping[str, Any]], dict]

# Columns of the metrics row that are not numbers to optimise.
_NOT_OBJECTIVES = frozenset({"diverged", "alpha_refreshed", "probes"})
# Ray Tune's own counters that a study may still optimise.
_RAY_METRICS = ("time_total_s", "training_iteration")


def trial_validator() -> TrialValidator:
    """``trainables.loop.validate_trial_config``."""
    from trainables.loop import validate_trial_config

    return validate_trial_config


@functools.cache
def trial_defaults() -> dict[str, Any]:
    """Every trial key with its default value (the validator applied to ``{}``)."""
    return dict(trial_validator()({}))


def trial_keys() -> frozenset[str]:
    """The keys a trial config may hold."""
    return frozenset(trial_defaults())


@functools.cache
def metric_names() -> tuple[str, ...]:
    """Metrics a study may optimise: the numeric columns of the metrics row,
    then Ray's ``time_total_s`` and ``training_iteration``."""
    from trainables.loop import METRICS

    return (*(m for m in METRICS if m not in _NOT_OBJECTIVES), *_RAY_METRICS)
