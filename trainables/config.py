"""The trial config: every key a trial understands, its default and what is allowed.

This table is the one source of truth for trial settings; the study layer
validates study files against it before any trial starts, and the loop
validates again (a trial can be run from Python without a study file).
`docs/contract.md` documents the same table for users.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from trainables.data import DATASETS
from trainables.models import MODELS

OPTIMIZERS = ("sgd", "sam", "xsam", "asam", "gsam", "wsam")


class ConfigError(ValueError):
    """One bad trial setting: names the field, the value and what is allowed."""

    def __init__(self, field: str, value: Any, allowed: str) -> None:
        self.field, self.value, self.allowed = field, value, allowed
        super().__init__(f"{field}: {value!r} is not allowed; expected {allowed}")


@dataclass(frozen=True)
class Key:
    """One trial setting: its default, a check and the words that describe what passes."""

    default: Any
    check: Callable[[Any], bool]
    allowed: str


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int(lo: int) -> Key:
    return Key(None, lambda v: _is_int(v) and v >= lo, f"an integer >= {lo}")


def _num(lo: float, hi: float = math.inf, lo_open: bool = False, hi_open: bool = False) -> Key:
    def check(v: Any) -> bool:
        return _is_num(v) and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)

    left, right = "(" if lo_open else "[", ")" if hi_open or hi == math.inf else "]"
    return Key(None, check, f"a number in {left}{lo}, {hi}{right}")


def _one_of(*choices: str) -> Key:
    return Key(None, lambda v: v in choices, "one of " + ", ".join(choices))


def _bool() -> Key:
    return Key(None, lambda v: isinstance(v, bool), "true or false")


def _with(key: Key, default: Any) -> Key:
    return Key(default, key.check, key.allowed)


TRIAL_KEYS: dict[str, Key] = {
    # data
    "dataset": _with(_one_of(*DATASETS), "mnist1d"),
    "data_dir": Key(None, lambda v: v is None or isinstance(v, str), "a path or null"),
    "image_size": Key(
        None, lambda v: v is None or (_is_int(v) and v >= 1), "an integer >= 1 or null"
    ),
    "fake_shape": Key(
        [3, 32, 32],
        lambda v: (
            isinstance(v, (list, tuple)) and len(v) >= 1 and all(_is_int(s) and s >= 1 for s in v)
        ),
        "a list of positive integers",
    ),
    "fake_classes": _with(_int(2), 10),
    "fake_train_size": _with(_int(1), 256),
    "fake_test_size": _with(_int(1), 128),
    "augment": _with(_bool(), True),
    "data_on_device": _with(_bool(), True),
    "num_workers": _with(_int(0), 0),
    # model and optimizer
    "model": _with(_one_of(*MODELS), "cnn1d"),
    "optimizer": _with(_one_of(*OPTIMIZERS), "xsam"),
    "adaptive": _with(_bool(), False),
    "base_optimizer": _with(_one_of("sgd", "adamw"), "sgd"),
    "lr": _with(_num(0, lo_open=True), 0.05),
    "momentum": _with(_num(0, 1, hi_open=True), 0.9),
    "weight_decay": _with(_num(0), 1e-3),
    "nesterov": _with(_bool(), False),
    "epochs": _with(_int(1), 40),
    "batch_size": _with(_int(1), 128),
    "warmup_epochs": _with(_int(0), 0),
    # sharpness-aware settings
    "rho": _with(_num(0), 0.15),
    "steps": _with(_int(1), 1),
    "eta": _with(_num(0), 0.01),
    "rho_max": _with(_num(0, lo_open=True), 0.3),
    "alpha_max": _with(_num(0), 2.0),
    "alpha_delta": _with(_num(0, lo_open=True), 0.1),
    "alpha": _with(_num(0), 1.0),
    "refresh_every": _with(_num(0), 1),
    "refresh_unit": _with(_one_of("epoch", "step"), "epoch"),
    "gsam_alpha": _with(_num(0), 0.1),
    "wsam_gamma": _with(_num(0, 1, hi_open=True), 0.9),
    "wsam_decouple": _with(_bool(), True),
    "diagnostics": _with(_bool(), False),
    # running
    "timing": _with(_bool(), True),
    "precision": _with(_one_of("fp32", "bf16", "fp16"), "fp32"),
    "device": _with(_one_of("auto", "cpu", "cuda"), "auto"),
    "seed": Key(0, _is_int, "an integer"),
    "threads": _with(_int(0), 0),
    "checkpoint_every": _with(_int(0), 1),
}


def validate_trial_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Check every key and fill in the defaults.

    Args:
        config: the trial settings (unknown keys are refused).
        prefix: prepended to field names in errors, e.g. ``"trial."``.

    Returns:
        A new dict with every key of `TRIAL_KEYS`.

    Raises:
        ConfigError: the first bad field, with what is allowed.
    """
    for name in config:
        if name not in TRIAL_KEYS:
            raise ConfigError(
                f"{prefix}{name}", config[name], "a trial key: " + ", ".join(TRIAL_KEYS)
            )
    out: dict[str, Any] = {}
    for name, key in TRIAL_KEYS.items():
        value = config.get(name, key.default)
        if isinstance(value, float) and value.is_integer() and key.allowed.startswith("an integer"):
            value = int(value)  # YAML and samplers may hand integers over as 5.0
        if not key.check(value):
            raise ConfigError(f"{prefix}{name}", value, key.allowed)
        out[name] = value
    if out["optimizer"] == "asam":
        out["optimizer"], out["adaptive"] = "sam", True
    if out["warmup_epochs"] >= out["epochs"]:
        raise ConfigError(
            f"{prefix}warmup_epochs", out["warmup_epochs"], f"fewer than epochs ({out['epochs']})"
        )
    if out["alpha_delta"] > out["alpha_max"] > 0:
        raise ConfigError(
            f"{prefix}alpha_delta", out["alpha_delta"], f"at most alpha_max ({out['alpha_max']})"
        )
    return out
