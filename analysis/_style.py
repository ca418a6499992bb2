"""How figures tell optimizers apart and show accuracy: one place for every figure.

- :func:`optimizer_style`: a fixed colour and marker per optimizer (SGD, SAM,
  XSAM, ASAM, GSAM, WSAM and any registered later), the same in every figure
  whatever subset it shows;
- accuracy is a fraction in the frames (``xsam_contract.ACCURACY_UNIT``) and a
  percentage in everything a person reads: :func:`to_percent`,
  :data:`PERCENT_LIMITS` and :func:`clamp_percent_axis`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pandas as pd

import xsam_contract

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = [
    "ACCURACY_COLUMNS",
    "PERCENT_LIMITS",
    "clamp_percent_axis",
    "is_accuracy",
    "optimizer_style",
    "to_percent",
]

#: Frame columns holding an accuracy (fractions there).
ACCURACY_COLUMNS: tuple[str, ...] = (
    *xsam_contract.ACCURACY_COLUMNS,
    *(f"final_{c}" for c in xsam_contract.ACCURACY_COLUMNS if c != "best_test_acc"),
)
#: Where an accuracy axis may go, in percent.
PERCENT_LIMITS = (0.0, 100.0)

# Okabe–Ito colours (distinguishable with the common colour-vision deficiencies)
# and one marker per optimizer, in the registry's order: sgd, sam, xsam, asam, gsam, wsam.
_COLORS = (
    "#000000",  # sgd: black, the plain baseline
    "#0072B2",  # sam: blue
    "#D55E00",  # xsam: vermillion
    "#56B4E9",  # asam: sky blue (SAM's family)
    "#009E73",  # gsam: green
    "#CC79A7",  # wsam: purple
    "#E69F00",
    "#F0E442",
    "#999999",
)
_MARKERS = ("s", "o", "D", "^", "v", "P", "X", "*", "h")


def optimizer_style(names: Iterable[Any] = ()) -> dict[str, dict[str, str]]:
    """Colour and marker of every registered optimizer and of any other name given.

    Registered optimizers keep their place (and so their style) in every
    figure; other names follow in sorted order.

    Returns:
        name → ``{"color": ..., "marker": ...}``.
    """
    order = list(xsam_contract.OPTIMIZERS)
    if isinstance(names, (pd.Series, pd.Index)):  # a frame's column: each name once
        names = names.dropna().unique()
    extra = sorted({str(n) for n in names if n is not None and not pd.isna(n)} - set(order))
    return {
        name: {"color": _COLORS[i % len(_COLORS)], "marker": _MARKERS[i % len(_MARKERS)]}
        for i, name in enumerate([*order, *extra])
    }


def is_accuracy(column: str) -> bool:
    """Whether a frame column holds an accuracy (a fraction in the frames)."""
    return column in ACCURACY_COLUMNS or column.endswith("_acc")


def to_percent(frame: pd.DataFrame, columns: Iterable[str] | None = None) -> pd.DataFrame:
    """A copy with accuracy columns in percent, renamed ``<name> (%)``.

    Args:
        frame: a result frame (accuracy as a fraction).
        columns: the columns to convert (default: every accuracy column present).
    """
    cols = [c for c in (columns if columns is not None else frame.columns) if is_accuracy(str(c))]
    cols = [c for c in cols if c in frame.columns]
    out = frame.copy()
    for c in cols:
        out[c] = 100.0 * pd.to_numeric(out[c], errors="coerce").astype("float64")
    return out.rename(columns={c: f"{c} (%)" for c in cols})


def clamp_percent_axis(ax: Axes, *, margin: float = 2.0) -> None:
    """Keep a percent axis inside [0, 100] while fitting the data drawn on it.

    Intervals drawn on it must be clipped to [0, 100] by the caller (a t-interval
    of accuracies can reach past 100 %; the axis never does).
    """
    lo, hi = ax.get_ylim()
    lo, hi = max(PERCENT_LIMITS[0], lo), min(PERCENT_LIMITS[1], hi)
    if hi - lo < margin:  # everything at one value: show a little room around it
        lo, hi = max(PERCENT_LIMITS[0], lo - margin), min(PERCENT_LIMITS[1], hi + margin)
    ax.set_ylim(lo, hi)
