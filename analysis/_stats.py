"""The statistics every aggregate of the analysis layer uses, in one place.

Rules (``../shared/docs/design.md``, "Trust"):

- every aggregate states its ``n``;
- with fewer than :data:`MIN_N` independent values (seeds, trials) no
  t-interval is drawn: the individual values are shown and a verdict that
  needs one is "inconclusive";
- otherwise the interval is the :data:`LEVEL` t-interval of the mean (of the
  values, or of the paired differences across shared seeds), and says so in
  its ``interval`` label;
- timings are summarised by median and interquartile range (IQR), which a
  slow epoch or a neighbour's burst on a shared machine does not drag.

Everything is vectorised: groupby aggregates with pandas' built-in
reductions and one vectorised t-quantile call, no per-group Python code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "LEVEL",
    "MIN_N",
    "interval_label",
    "mean_interval",
    "paired_differences",
    "quartiles",
    "t_half_width",
]

#: Fewest independent values (seeds, trials) for which a t-interval is drawn.
MIN_N = 3
#: Coverage of every t-interval.
LEVEL = 0.95

# Key used when a summary has no grouping: one group holding every value.
_ALL = "_all"


def t_half_width(std: Any, n: Any, level: float = LEVEL) -> np.ndarray:
    """Half-width of the t-interval of a mean, element-wise.

    Args:
        std: sample standard deviations (ddof = 1).
        n: sample sizes.
        level: coverage.

    Returns:
        ``t_{(1+level)/2, n-1} · std / √n``; NaN where ``n < MIN_N`` or the
        standard deviation is not finite.
    """
    from scipy.stats import t as student_t  # scipy comes with scikit-learn; heavy: lazy

    sd = np.asarray(pd.to_numeric(pd.Series(np.ravel(std)), errors="coerce"), dtype="float64")
    count = np.asarray(pd.to_numeric(pd.Series(np.ravel(n)), errors="coerce"), dtype="float64")
    ok = (count >= MIN_N) & np.isfinite(sd)
    df = np.where(ok, count - 1.0, 1.0)  # any valid df where masked out
    half = student_t.ppf(0.5 + level / 2.0, df) * sd / np.sqrt(np.where(ok, count, 1.0))
    return np.where(ok, half, np.nan)


def interval_label(n: Any, *, of: str = "the mean", level: float = LEVEL) -> np.ndarray:
    """What interval an aggregate of size ``n`` draws, as text, element-wise."""
    count = pd.to_numeric(pd.Series(np.ravel(n)), errors="coerce").fillna(0).to_numpy()
    drawn = f"{level:.0%} t-interval of {of}"
    return np.where(count >= MIN_N, drawn, f"none (n < {MIN_N}: individual values)")


def _grouped(values: pd.Series, by: str | Sequence[Any] | None) -> Any:
    """``values`` grouped by ``by`` (column names of ``values``' frame are not
    accepted here: pass Series or arrays aligned with ``values``)."""
    if by is None or (isinstance(by, Sequence) and not isinstance(by, str) and not len(by)):
        key = pd.Series(_ALL, index=values.index, name=_ALL)
        return values.groupby(key, sort=False)
    return values.groupby(by, observed=True, dropna=False, sort=True)


def mean_interval(
    values: pd.Series,
    by: Sequence[Any] | None = None,
    *,
    of: str = "the mean",
    level: float = LEVEL,
) -> pd.DataFrame:
    """Mean with its t-interval per group; no interval for fewer than :data:`MIN_N` values.

    Args:
        values: the values (NaN is left out and not counted).
        by: grouping keys aligned with ``values`` (Series or arrays), or None
            for one group.
        of: what the interval is of, for the ``interval`` label.
        level: coverage.

    Returns:
        One row per group, the keys as columns, then ``n`` (Int64), ``mean``,
        ``std`` (ddof = 1), ``low``, ``high`` (NaN when ``n < MIN_N``),
        ``min``, ``max`` and ``interval`` (what low/high are).
    """
    values = pd.to_numeric(values, errors="coerce").astype("float64")
    g = _grouped(values, by)
    out = g.agg(n="count", mean="mean", std="std", min="min", max="max")
    half = t_half_width(out["std"], out["n"], level)
    out["low"] = out["mean"] - half
    out["high"] = out["mean"] + half
    out["interval"] = interval_label(out["n"], of=of, level=level)
    out["n"] = out["n"].astype("Int64")
    out = out[["n", "mean", "std", "low", "high", "min", "max", "interval"]]
    return out.reset_index(drop=by is None)


def quartiles(values: pd.Series, by: Sequence[Any] | None = None) -> pd.DataFrame:
    """Median and interquartile range per group (for timings and ratios of them).

    Args:
        values: the values (NaN is left out and not counted).
        by: grouping keys aligned with ``values``, or None for one group.

    Returns:
        One row per group: the keys, ``n`` (Int64), ``median``, ``q25``,
        ``q75``, ``iqr`` (q75 − q25; linear interpolation between values).
    """
    values = pd.to_numeric(values, errors="coerce").astype("float64")
    g = _grouped(values, by)
    out = g.agg(n="count", median="median")
    q = g.quantile([0.25, 0.75]).unstack(-1)
    out["q25"] = q[0.25]
    out["q75"] = q[0.75]
    out["iqr"] = out["q75"] - out["q25"]
    out["n"] = out["n"].astype("Int64")
    return out.reset_index(drop=by is None)


def paired_differences(
    frame: pd.DataFrame,
    *,
    value: str,
    arm: str,
    first: Any,
    second: Any,
    pair: str = "seed",
    by: Sequence[str] = (),
) -> pd.DataFrame:
    """``second − first`` per shared ``pair`` value (a seed), within each ``by`` group.

    Rows with the same (``by``, ``arm``, ``pair``) are averaged first (a
    seed repeated under settings the comparison ignores counts once). Pairs
    missing either arm are dropped: only shared seeds are compared.

    Args:
        frame: long frame holding ``by`` columns, ``arm``, ``pair`` and ``value``.
        value: the measured column.
        arm: the column telling the two sides apart (``optimizer``, ``steps``).
        first, second: the two values of ``arm`` compared.
        pair: the column pairing rows of the two sides.
        by: further grouping columns (context, k).

    Returns:
        One row per (``by``…, ``pair``) present in both arms: the keys,
        ``first``, ``second`` and ``diff`` (= second − first).
    """
    keys = [*by, pair]
    cols = [*keys, "first", "second", "diff"]
    sides = frame[frame[arm].isin([first, second])]
    if sides.empty:
        return pd.DataFrame(columns=cols)
    means = (
        pd.to_numeric(sides[value], errors="coerce")
        .astype("float64")
        .groupby([sides[k] for k in [*keys, arm]], observed=True, dropna=False)
        .mean()
    )
    wide = means.unstack(arm)
    if first not in wide.columns or second not in wide.columns:
        return pd.DataFrame(columns=cols)
    out = wide[[first, second]].dropna(how="any")
    out.columns = ["first", "second"]
    out["diff"] = out["second"] - out["first"]
    return out.reset_index()[cols]
