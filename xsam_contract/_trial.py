"""The trial config: every key a trial understands, its default, dtype and what is allowed.

The study layer validates study files against this table before any trial
starts, the loop validates again (a trial can run from Python without a
study file), and the analysis layer types its columns from it.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from xsam_contract._registry import DATASETS, MODELS, OPTIMIZERS, Registry

#: The largest seed any of Python, NumPy and torch accept (NumPy takes < 2**32 after
#: the modulo the loop applies; torch takes a signed 64-bit integer).
MAX_SEED = 2**63 - 1
#: More intra-op threads than this is a typo, not a machine.
MAX_THREADS = 1024


class ConfigError(ValueError):
    """One bad trial setting: names the field, the value and what is allowed."""

    def __init__(self, field: str, value: Any, allowed: str) -> None:
        self.field, self.value, self.allowed = field, value, allowed
        super().__init__(f"{field}: {_shown(value)} is not allowed; expected {allowed}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Ray copies and pickles a trial's exception: rebuild it from its fields.
        return (type(self), (self.field, self.value, self.allowed))


class _Short(reprlib.Repr):
    """A repr of bounded size and time: a YAML alias bomb (10**9 nested items
    sharing a few objects) or a 5000-digit integer renders at once."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel, self.maxlist, self.maxtuple, self.maxdict = 2, 6, 6, 6
        self.maxstring, self.maxother = 80, 80

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 256:  # repr() of a huge int is slow, refused past 4300 digits
            return f"<an integer of about {int(x.bit_length() * 0.30103)} digits>"
        return repr(x)


def _shown(value: Any, limit: int = 100) -> str:
    """``repr(value)``, at most ``limit`` characters, computed in bounded time."""
    text = " ".join(_Short().repr(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Key:
    """One trial setting.

    Attributes:
        default: the value a config without the key gets.
        check: whether a value passes.
        allowed: the words that describe what passes (used in errors and docs).
        dtype: the pandas dtype of the key's column in the analysis frames.
        integer: whether integral floats (``5.0`` from YAML or a sampler) become ints.
    """

    default: Any
    check: Callable[[Any], bool]
    allowed: str
    dtype: str
    integer: bool = False


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int(default: int | None, lo: int, hi: int | None = None) -> Key:
    top = f" and <= {hi}" if hi is not None else ""
    return Key(
        default,
        lambda v: _is_int(v) and v >= lo and (hi is None or v <= hi),
        f"an integer >= {lo}{top}",
        "Int64",
        integer=True,
    )


def _num(
    default: float, lo: float, hi: float = math.inf, lo_open: bool = False, hi_open: bool = False
) -> Key:
    def check(v: Any) -> bool:
        return _is_num(v) and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)

    left, right = "(" if lo_open else "[", ")" if hi_open or hi == math.inf else "]"
    return Key(default, check, f"a number in {left}{lo}, {hi}{right}", "float64")


def _one_of(default: str, choices: tuple[str, ...]) -> Key:
    return Key(default, lambda v: v in choices, "one of " + ", ".join(choices), "string")


def _registered(default: str, registry: Registry, table: str) -> Key:
    # Read at check time: an entry registered later is allowed (errors list the names
    # registered then, see _current).
    return Key(default, lambda v: v in registry, f"a name in {table}", "string")


def _bool(default: bool) -> Key:
    return Key(default, lambda v: isinstance(v, bool), "true or false", "boolean")


TRIAL_KEYS: dict[str, Key] = {
    # data
    "dataset": _registered("mnist1d", DATASETS, "DATASETS"),
    "data_dir": Key(None, lambda v: v is None or isinstance(v, str), "a path or null", "string"),
    "image_size": Key(
        None,
        lambda v: v is None or (_is_int(v) and 1 <= v <= 4096),
        "an integer in [1, 4096] or null",
        "Int64",
        integer=True,
    ),
    "fake_shape": Key(
        [3, 32, 32],
        lambda v: (
            isinstance(v, (list, tuple))
            and 1 <= len(v) <= 4
            and all(_is_int(s) and 1 <= s <= 4096 for s in v)
        ),
        "a list of 1 to 4 integers in [1, 4096]",
        "string",  # kept as its JSON text in the frames so CSV round-trips
    ),
    "fake_classes": _int(10, 2, 100_000),
    "fake_train_size": _int(256, 1, 10_000_000),
    "fake_test_size": _int(128, 1, 10_000_000),
    "augment": _bool(True),
    "data_on_device": _bool(True),
    "num_workers": _int(0, 0, 256),
    # model and optimizer
    "model": _registered("cnn1d", MODELS, "MODELS"),
    "optimizer": _registered("xsam", OPTIMIZERS, "OPTIMIZERS"),
    "adaptive": _bool(False),
    "base_optimizer": _one_of("sgd", ("sgd", "adamw")),
    "lr": _num(0.05, 0, lo_open=True),
    "momentum": _num(0.9, 0, 1, hi_open=True),
    "weight_decay": _num(1e-3, 0),
    "nesterov": _bool(False),
    "epochs": _int(40, 1, 1_000_000),
    "batch_size": _int(128, 1, 10_000_000),
    "warmup_epochs": _int(0, 0, 1_000_000),
    # sharpness-aware settings
    "rho": _num(0.15, 0),
    "steps": _int(1, 1, 1000),
    "eta": _num(0.01, 0),
    "rho_max": _num(0.3, 0, lo_open=True),
    "alpha_max": _num(2.0, 0),
    "alpha_delta": _num(0.1, 0, lo_open=True),
    "alpha": _num(1.0, 0),
    "refresh_every": _num(1, 0),  # a number: 1 and 0.5 both occur
    "refresh_unit": _one_of("epoch", ("epoch", "step")),
    "gsam_alpha": _num(0.1, 0),
    "wsam_gamma": _num(0.9, 0, 1, hi_open=True),
    "wsam_decouple": _bool(True),
    "diagnostics": _bool(False),
    # running
    "timing": _bool(True),
    "precision": _one_of("fp32", ("fp32", "bf16", "fp16")),
    "device": _one_of("auto", ("auto", "cpu", "cuda")),
    "seed": _int(0, 0, MAX_SEED),
    "threads": _int(0, 0, MAX_THREADS),
    "checkpoint_every": _int(1, 0, 1_000_000),
}

#: At most this many α grid points per search: a = 2, δ = 1e-9 would be 2e9 probe forwards.
MAX_ALPHA_POINTS = 10_000


def trial_defaults() -> dict[str, Any]:
    """Every trial key with its default value (a fresh dict: callers may change it)."""
    return {
        name: (list(k.default) if isinstance(k.default, list) else k.default)
        for name, k in TRIAL_KEYS.items()
    }


def validate_trial_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Check every key and fill in the defaults.

    Args:
        config: the trial settings (unknown keys are refused).
        prefix: prepended to field names in errors, e.g. ``"trial."``.

    Returns:
        A new dict with every key of :data:`TRIAL_KEYS`.

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
        if key.integer and isinstance(value, float) and value.is_integer():
            value = int(value)  # YAML and samplers may hand integers over as 5.0
        if not key.check(value):
            raise ConfigError(f"{prefix}{name}", value, _current(name, key))
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
    if out["alpha_max"] / out["alpha_delta"] > MAX_ALPHA_POINTS:
        raise ConfigError(
            f"{prefix}alpha_delta",
            out["alpha_delta"],
            f"at least alpha_max / {MAX_ALPHA_POINTS} ({out['alpha_max'] / MAX_ALPHA_POINTS:g})",
        )
    return out


def _current(name: str, key: Key) -> str:
    """What is allowed now: registries may have gained entries since the table was built."""
    registry = {"dataset": DATASETS, "model": MODELS, "optimizer": OPTIMIZERS}.get(name)
    return "one of " + ", ".join(registry) if registry is not None else key.allowed
