"""XSAM's extra cost, estimated within each trial, and where it cannot go.

Wall times of two trials that shared a machine are not a measurement of two
methods: a neighbour's burst lands on one and not the other (the quickstart
once showed XSAM 24 % *cheaper* than SAM that way). Within one trial, the
α-search phase (``probe``) and the forward/backward passes (``ascent +
descent``) run in the same process under the same load, so their ratio is
what XSAM adds on top of the passes SAM also makes. On the CPU the phases'
CPU seconds of the trial's own process (``cpu_*``) are used, which a
neighbour does not stretch; on a GPU the synchronised wall times
(``time_*``); the ``clock`` column says which.

- :func:`epoch_shares`: per epoch after the first (the first carries warm-up)
  of every trial that probes: ``probe_pct`` = 100 · time_probe / (time_ascent
  + time_descent), ``update_pct`` likewise for the update phase (vector
  arithmetic and the base step: XSAM's extra arithmetic is in there, next to
  what SAM pays too), and ``floor_pct``, the analytic floor: the epoch's probe
  forwards against its training passes, a backward counted as two forwards.
- :func:`overhead_estimate`: median and IQR of those per (context, k, refresh
  setting), with n trials and n epochs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis._stats import quartiles
from analysis._tables import context_keys

__all__ = ["epoch_shares", "overhead_estimate"]


def _num(frame: pd.DataFrame, col: str) -> pd.Series:
    if col not in frame.columns:
        return pd.Series(np.nan, index=frame.index, dtype="float64")
    return pd.to_numeric(frame[col], errors="coerce").astype("float64")


def epoch_shares(trials: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """Per timed epoch after the first of each trial that probed: probe, update and floor shares.

    Args:
        trials: ``Study.trials`` (for optimizer, steps, refresh and context).
        epochs: ``Study.epochs``.

    Returns:
        One row per epoch: ``trial_id``, the varying context columns,
        ``optimizer``, ``steps``, ``refresh``, ``epoch``, ``probe_pct``,
        ``update_pct``, ``floor_pct``, ``steps_per_epoch``. Epochs without
        a probe forward or without phase timings are left out.
    """
    ctx = context_keys(trials)
    keep = ["trial_id", *ctx, "optimizer", "steps"]
    info = trials[[c for c in keep if c in trials.columns]].copy()
    info["refresh"] = (
        trials["refresh"].astype("string").fillna("default")
        if "refresh" in trials.columns
        else pd.Series("default", index=trials.index, dtype="string")
    )
    ep = epochs[[c for c in epochs.columns if c not in info.columns or c == "trial_id"]]
    ep = ep.merge(info, on="trial_id", how="inner")
    # On the CPU a trial's own CPU seconds are its work whatever shared the cores; on a GPU
    # (or for rows written before the CPU columns existed) the synchronised wall times count.
    cpu_passes = _num(ep, "cpu_ascent") + _num(ep, "cpu_descent")
    on_cpu = (
        ep["device"].astype("string").str.startswith("cpu").fillna(False).to_numpy(bool)
        if ("device" in ep.columns)
        else np.zeros(len(ep), bool)
    )
    use_cpu = on_cpu & (cpu_passes > 0).to_numpy(bool)

    def phase(name: str) -> pd.Series:
        return _num(ep, f"cpu_{name}").where(use_cpu, _num(ep, f"time_{name}"))

    passes = phase("ascent") + phase("descent")
    npf = _num(ep, "n_probe_forward")
    nf, nb = _num(ep, "n_forward"), _num(ep, "n_backward")
    with np.errstate(divide="ignore", invalid="ignore"):
        probe = 100.0 * phase("probe") / passes
        update = 100.0 * phase("update") / passes
        floor = 100.0 * npf / ((nf - npf) + 2.0 * nb)
        k = _num(ep, "steps").fillna(0.0)
        steps_per_epoch = nb / (k + 1.0)
    out = ep.assign(
        clock=np.where(use_cpu, "cpu", "wall"),
        probe_pct=probe,
        update_pct=update,
        floor_pct=floor,
        steps_per_epoch=steps_per_epoch,
    )
    ok = (_num(ep, "epoch") > 1) & (npf > 0) & (passes > 0) & probe.notna()
    cols = [
        "trial_id",
        *ctx,
        "optimizer",
        "steps",
        "refresh",
        "epoch",
        "clock",
        "probe_pct",
        "update_pct",
        "floor_pct",
        "steps_per_epoch",
    ]
    return out.loc[ok.to_numpy(), [c for c in cols if c in out.columns]].reset_index(drop=True)


def overhead_estimate(
    trials: pd.DataFrame, epochs: pd.DataFrame, *, optimizers: tuple[str, ...] = ("xsam",)
) -> pd.DataFrame:
    """XSAM's extra cost over SAM per (context, k, refresh), estimated within trials.

    Args:
        trials, epochs: a study's frames.
        optimizers: whose probing trials count (XSAM's: SAM trials with
            ``diagnostics`` probe too, but their cost is not XSAM's).

    Returns:
        One row per group (``attrs["keys"]`` names the grouping columns): the
        keys, ``n_trials``, ``n_epochs``, ``median``, ``q25``, ``q75`` (probe
        time in % of the same epochs' forward/backward time), ``floor_pct``
        (median analytic floor), ``update_pct`` (median update-phase share),
        ``steps_per_epoch`` (median), and ``below_floor``: whether the whole
        IQR lies under half the analytic floor (a timing that cannot be right
        as measured: say so, do not report it as a finding).
    """
    sh = epoch_shares(trials, epochs)
    sh = sh[sh["optimizer"].isin(optimizers)] if "optimizer" in sh.columns else sh
    keys = [*context_keys(trials), "steps", "refresh"]
    keys = [c for c in keys if c in sh.columns]
    cols = [
        *keys,
        "n_trials",
        "n_epochs",
        "median",
        "q25",
        "q75",
        "floor_pct",
        "update_pct",
        "steps_per_epoch",
        "below_floor",
    ]
    if sh.empty:
        out = pd.DataFrame(columns=cols)
        out.attrs["keys"] = keys
        return out
    by = [sh[k] for k in keys]
    q = quartiles(sh["probe_pct"], by).rename(columns={"n": "n_epochs"})
    g = sh.groupby(keys, observed=True, dropna=False)
    extra = g.agg(
        n_trials=("trial_id", "nunique"),
        floor_pct=("floor_pct", "median"),
        update_pct=("update_pct", "median"),
        steps_per_epoch=("steps_per_epoch", "median"),
    ).reset_index()
    out = q.merge(extra, on=keys, how="left")
    out["n_trials"] = out["n_trials"].astype("Int64")
    # A no-grad probe forward is cheaper than a training forward, so the floor
    # is an estimate, not a bound: flag only an IQR below half of it.
    out["below_floor"] = out["q75"] < 0.5 * out["floor_pct"]
    out = out[cols].sort_values(keys, kind="stable").reset_index(drop=True)
    out.attrs["keys"] = keys  # the grouping columns, for callers that label rows
    return out
