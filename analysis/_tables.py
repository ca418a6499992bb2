"""The numbers behind the figures, as dataframes (the figures draw exactly these)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import xsam_contract
from analysis._errors import AnalysisError
from analysis._results import Study, load
from analysis._schema import PROBE_COLUMNS
from analysis._stats import mean_interval, quartiles
from analysis._style import is_accuracy

__all__ = [
    "COMPLETE",
    "PHASES",
    "as_study",
    "degradation_layout",
    "degradation_table",
    "fidelity_table",
    "overhead_ratio_table",
    "overhead_table",
    "refresh_losses",
    "refresh_records",
]

#: Statuses whose final metrics count as results (Ray/Optuna treat both as complete).
COMPLETE: tuple[str, ...] = ("finished", "stopped")
#: Timed phases of an epoch, in stacking order (``time_<phase>`` in ``.epochs``).
PHASES: tuple[str, ...] = tuple(
    c.removeprefix("time_") for c in xsam_contract.TIME_COLUMNS if c != "time_epoch"
)
# Settings that change what a number means. When one varies within a study it
# becomes an extra grouping key, so runs on different models never average together.
_CONTEXT = ("dataset", "model", "batch_size", "precision", "base_optimizer", "adaptive", "device")


def as_study(study: Study | str | Path) -> Study:
    """A Study from a Study or a study directory path."""
    return study if isinstance(study, Study) else load(study)


def _once(s: Study, key: tuple[Any, ...], build: Callable[[], pd.DataFrame]) -> pd.DataFrame:
    """``build()`` computed once per Study and arguments (a report asks for the
    same table from several figures), recomputed if a frame it reads was replaced.

    Returns a copy (lazy under pandas' copy-on-write) so a caller's edits stay its own.
    """
    frames = (s.__dict__.get("trials"), s.__dict__.get("epochs"), s.__dict__.get("probes"))
    memo = s.__dict__.setdefault("_table_memo", {})
    hit = memo.get(key)
    # Stale when a frame it read has been replaced since (frames first read later are
    # not), or when .probes, which a table reads in part (some columns, from the
    # cache: Study._probe_columns), has been read in full since (it may be edited).
    if (
        hit is None
        or any(a is not None and a is not b for a, b in zip(hit[0], frames, strict=True))
        or (hit[0][2] is None and frames[2] is not None)
    ):
        table = build()
        # The frames as they are now (build() may have read some for the first time).
        frames = (s.__dict__.get("trials"), s.__dict__.get("epochs"), s.__dict__.get("probes"))
        memo[key] = hit = (frames, table)
    out = hit[1].copy()
    out.attrs = dict(hit[1].attrs)
    return out


def importances_once(s: Study) -> pd.Series:
    """:func:`analysis.importances` with its defaults, computed once per Study (the
    report's table and the sensitivity figure show the same numbers)."""
    from analysis._importance import importances  # it imports this module

    return _once(s, ("importances",), lambda: importances(s))


def context_keys(trials: pd.DataFrame) -> list[str]:
    """The context settings that take more than one value among ``trials``."""
    return [c for c in _CONTEXT if c in trials.columns and trials[c].nunique(dropna=False) > 1]


def optimizer_order(values: pd.Series | list[str]) -> list[str]:
    """Optimizers present in ``values``, in the contract's registry order; unregistered
    names (a study run with a variant registered elsewhere) follow alphabetically."""
    present = {str(v) for v in pd.Series(values).dropna().unique()}
    order = list(xsam_contract.OPTIMIZERS)
    return [o for o in order if o in present] + sorted(present - set(order))


def _sort_optimizers(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Rows sorted by ``keys`` with optimizers in canonical rather than alphabetical order."""
    if frame.empty or "optimizer" not in frame.columns:
        return frame.reset_index(drop=True)
    rank = {o: i for i, o in enumerate(optimizer_order(frame["optimizer"]))}
    ranked = frame.assign(_rank=frame["optimizer"].map(rank).astype("float64"))
    by = [
        "_rank" if k == "optimizer" else k for k in keys if k in ranked.columns or k == "optimizer"
    ]
    return ranked.sort_values(by, kind="stable").drop(columns="_rank").reset_index(drop=True)


# -- degradation -----------------------------------------------------------


def degradation_table(
    study: Study | str | Path,
    metric: str = "test_acc",
    *,
    statuses: tuple[str, ...] = ("finished",),
    percent: bool | None = None,
) -> pd.DataFrame:
    """Final ``metric`` per optimizer and k over seeds (multi-step degradation).

    One row per (context, optimizer, steps): ``n`` (trials), ``mean``, ``std``
    (sample, ddof=1), ``low`` and ``high`` (the 95 % t-interval of the mean;
    NaN for fewer than 3 trials, where the figures show the trials instead),
    ``interval`` (which interval low..high is), ``min`` and ``max``. Only
    trials with a status in ``statuses`` count.

    Args:
        study: a Study or a study directory.
        metric: a metric of the contract; its ``final_`` column of ``.trials``
            is used (or the column itself when ``.trials`` has it).
        statuses: trial states that count.
        percent: scale by 100 (None: when the metric is an accuracy, which the
            contract stores as a fraction). ``attrs["unit"]`` says which.

    Returns:
        The long table; :func:`degradation_layout` turns it into the paper's layout.
    """
    s = as_study(study)
    key = ("degradation", metric, tuple(statuses), percent)
    return _once(s, key, lambda: _degradation(s, metric, tuple(statuses), percent))


def _degradation(
    s: Study, metric: str, statuses: tuple[str, ...], percent: bool | None
) -> pd.DataFrame:
    trials = s.trials
    col = f"final_{metric}" if f"final_{metric}" in trials.columns else metric
    if col not in trials.columns:
        raise AnalysisError(f"unknown metric {metric!r}")
    t = trials[trials["status"].isin(statuses)]
    keys = [*context_keys(trials), "optimizer", "steps"]
    keys = [k for k in keys if k in trials.columns]
    if percent is None:
        percent = metric in xsam_contract.ACCURACY_COLUMNS  # fractions: shown in percent
    scale = 100.0 if percent else 1.0
    values = t[col].astype("float64") * scale
    out = mean_interval(values, [t[k] for k in keys], of="the mean over seeds")
    out = _sort_optimizers(out, keys)
    out.attrs.update(metric=metric, column=col, unit="%" if percent else "", statuses=statuses)
    return out


def degradation_layout(table: pd.DataFrame, digits: int = 1) -> pd.DataFrame:
    """The paper's layout: rows optimizer, columns k, cells ``mean ± std (n=…)``.

    Args:
        table: the output of :func:`degradation_table`.
        digits: decimals shown.

    Returns:
        A frame of strings indexed by (context…, optimizer) with one column per k.
    """
    if table.empty:
        return pd.DataFrame()
    values = ("steps", "n", "mean", "std", "low", "high", "interval", "min", "max")
    rows = [c for c in table.columns if c not in values]
    mean = table["mean"].astype("float64")
    std = table["std"].astype("float64")
    sd = std.map(f"{{:.{digits}f}}".format).where(std.notna(), "–")
    n = " (n=" + table["n"].astype("string").fillna("0") + ")"
    cell = (mean.map(f"{{:.{digits}f}}".format) + " ± " + sd + n).where(mean.notna(), "–")
    cells = table.assign(cell=cell, k=table["steps"].map(_k_label))
    wide = cells.pivot(index=rows, columns="k", values="cell")
    # "k=–" holds runs without ascent steps (plain SGD when the study leaves k unset).
    ks = ["k=–"] if table["steps"].isna().any() else []
    ks += [_k_label(k) for k in sorted(table["steps"].dropna().unique())]
    wide = wide[ks]
    # Rows in the table's order (canonical optimizers), not pivot's alphabetical one.
    first_seen = table[rows].drop_duplicates()
    order = first_seen.iloc[:, 0] if len(rows) == 1 else pd.MultiIndex.from_frame(first_seen)
    wide = wide.reindex(order)
    wide.columns.name = None
    return wide.fillna("–")


def _k_label(k: object) -> str:
    return "k=–" if pd.isna(k) else f"k={k}"


# -- overhead --------------------------------------------------------------


def _overhead_groups(s: Study) -> tuple[pd.DataFrame, list[str]]:
    """``.epochs`` with a ``refresh`` grouping label, and the group keys.

    Trials that never probe share the label ``n/a`` so that, say, SAM trials
    do not split by a refresh setting they ignore.
    """
    trials = s.trials
    probes = trials["optimizer"].eq("xsam").fillna(False) | trials["n_refreshes"].gt(0)
    if "diagnostics" in trials.columns:
        probes |= trials["diagnostics"].fillna(False).astype(bool)
    # A probing trial whose config leaves the refresh setting to the trial
    # layer's default shows "default".
    label = trials["refresh"].astype("string").fillna("default").where(probes.to_numpy(), "n/a")
    ctx = context_keys(trials)
    extra = trials[["trial_id", *ctx]].assign(refresh_group=label.to_numpy())
    ep = s.epochs
    ep = ep.drop(columns=[c for c in ctx if c in ep.columns]).merge(extra, on="trial_id")
    keys = [*ctx, "optimizer", "steps", "refresh_group"]
    return ep, [k for k in keys if k in ep.columns]


def overhead_table(study: Study | str | Path) -> pd.DataFrame:
    """Seconds per epoch of each timed phase, per (context, optimizer, k, refresh).

    Every value is a sum over the group's rows of ``.epochs`` divided by the
    number of those rows (``n_epochs``): ``time_<phase>`` for each of
    :data:`PHASES`, ``time_other`` (``time_epoch`` minus the phases: setup,
    logging, untimed work) and ``time_epoch``; ``n_forward``, ``n_backward``,
    ``n_probe_forward`` and ``n_refresh`` likewise per epoch. All epochs of
    all trials count, whatever the trial's status.
    """
    s = as_study(study)
    return _once(s, ("overhead",), lambda: _overhead(s))


def _overhead(s: Study) -> pd.DataFrame:
    ep, keys = _overhead_groups(s)
    cols = [f"time_{p}" for p in PHASES] + ["time_epoch"]
    counts = ["n_forward", "n_backward", "n_probe_forward", "n_refresh"]
    if ep.empty:
        out = pd.DataFrame(columns=[*keys, "n_trials", "n_epochs", *cols, "time_other", *counts])
        return out.rename(columns={"refresh_group": "refresh"})
    g = ep.groupby(keys, observed=True, dropna=False)
    out = g.agg(n_trials=("trial_id", "nunique"), n_epochs=("epoch", "size"))
    for c in cols + counts:
        # min_count=1: a phase nobody timed stays NaN instead of becoming 0.
        out[c] = g[c].sum(min_count=1).astype("float64") / out["n_epochs"]
    phases = out[[f"time_{p}" for p in PHASES]].sum(axis=1, min_count=1)
    out["time_other"] = out["time_epoch"] - phases
    out = out.reset_index().rename(columns={"refresh_group": "refresh"})
    order = [*[k if k != "refresh_group" else "refresh" for k in keys], "n_trials", "n_epochs"]
    out = out[[*order, *cols[:-1], "time_other", "time_epoch", *counts]]
    out["n_trials"] = out["n_trials"].astype("Int64")
    out["n_epochs"] = out["n_epochs"].astype("Int64")
    return _sort_optimizers(out, [k if k != "refresh_group" else "refresh" for k in keys])


def overhead_ratio_table(study: Study | str | Path, baseline: str = "sam") -> pd.DataFrame:
    """XSAM against SAM (same context and k): time ratio, measured extra cost, floor.

    One row per XSAM group of :func:`overhead_table` that has a ``baseline``
    group with the same context and ``steps`` (its runs without diagnostic
    probes when there are any). Columns:

    - ``refreshes_per_epoch``: α refreshes per epoch (measured).
    - ``sam_time_epoch``, ``xsam_time_epoch``: seconds per epoch.
    - ``ratio`` = xsam / sam; ``extra_s`` = xsam − sam; ``extra_pct`` = 100·extra/sam.
    - ``probe_forward_per_epoch``: probe forwards per epoch (grid points × refreshes).
    - ``forward_s``: measured seconds per probe forward = Σ time_probe / Σ n_probe_forward
      over the XSAM group's epochs (a no-grad forward on one minibatch, with
      forming θ0 + ρm·v(α)).
    - ``floor_s`` = probe_forward_per_epoch × forward_s: what the extra forwards
      alone cost per epoch; ``floor_pct`` = 100·floor/sam. XSAM cannot cost less
      than SAM + floor; ``extra_pct − floor_pct`` is the cost of everything else
      (computing v0, v1, ψ and v(α*), bookkeeping).
    - ``ratio_low``, ``ratio_high``: the spread of the ratio from the epoch
      times after the first (XSAM's quartiles over SAM's: q25/q75 and q75/q25).
    - ``impossible``: ``ratio_high < 1``, XSAM cheaper than SAM beyond that
      spread. XSAM makes SAM's passes plus its probes, so this cannot be a
      property of the methods: the two groups' trials did not see the same
      machine (trials side by side on shared cores). Never a finding; the
      within-trial estimate (:func:`analysis.overhead_estimate`) is the one to read.
    """
    s = as_study(study)
    return _once(s, ("overhead_ratio", baseline), lambda: _overhead_ratio(s, baseline))


def _overhead_ratio(s: Study, baseline: str) -> pd.DataFrame:
    table = overhead_table(s)
    ctx = [c for c in context_keys(s.trials) if c in table.columns]
    cols = [
        *ctx,
        "steps",
        "refresh",
        "refreshes_per_epoch",
        "sam_time_epoch",
        "xsam_time_epoch",
        "ratio",
        "extra_s",
        "extra_pct",
        "probe_forward_per_epoch",
        "forward_s",
        "floor_s",
        "floor_pct",
        "ratio_low",
        "ratio_high",
        "impossible",
    ]
    base = table[table["optimizer"] == baseline]
    xsam = table[table["optimizer"] == "xsam"]
    if base.empty or xsam.empty:
        return pd.DataFrame(columns=cols)
    join = [*ctx, "steps"]
    # Baseline runs with `diagnostics: true` pay for α probes too: where a
    # context and k has plain runs (refresh "n/a"), compare with those only.
    plain = base["refresh"].eq("n/a")
    has_plain = plain.groupby([base[k] for k in join], dropna=False).transform("any")
    base = base[plain | ~has_plain]
    base = base.groupby(join, dropna=False)["time_epoch"].mean().rename("sam_time_epoch")
    out = xsam.merge(base.reset_index(), on=join, how="inner")
    if out.empty:
        return pd.DataFrame(columns=cols)
    out = out.rename(columns={"time_epoch": "xsam_time_epoch"})
    out["refreshes_per_epoch"] = out["n_refresh"]
    out["ratio"] = out["xsam_time_epoch"] / out["sam_time_epoch"]
    out["extra_s"] = out["xsam_time_epoch"] - out["sam_time_epoch"]
    out["extra_pct"] = 100.0 * out["extra_s"] / out["sam_time_epoch"]
    out["probe_forward_per_epoch"] = out["n_probe_forward"]
    with np.errstate(divide="ignore", invalid="ignore"):
        fwd = out["time_probe"] / out["n_probe_forward"]
    out["forward_s"] = fwd.where(out["n_probe_forward"] > 0)
    out["floor_s"] = (out["probe_forward_per_epoch"] * out["forward_s"]).where(
        out["n_probe_forward"] > 0, 0.0
    )
    out["floor_pct"] = 100.0 * out["floor_s"] / out["sam_time_epoch"]
    out = out.merge(_ratio_spread(s, baseline, join), on=[*join, "refresh"], how="left")
    out["impossible"] = (out["ratio_high"] < 1.0).fillna(False).astype(bool)
    out = out[cols].sort_values(["steps", "refreshes_per_epoch"], kind="stable")
    return out.reset_index(drop=True)


def _ratio_spread(s: Study, baseline: str, join: list[str]) -> pd.DataFrame:
    """Quartile ratios of epoch times (epochs after the first) of each XSAM group
    over its baseline group: ``ratio_low`` = q25/q75, ``ratio_high`` = q75/q25."""
    ep, keys = _overhead_groups(s)
    ep = ep[ep["epoch"].astype("float64") > 1]
    q = quartiles(ep["time_epoch"], [ep[k] for k in keys]).rename(
        columns={"refresh_group": "refresh"}
    )
    xs = q[q["optimizer"] == "xsam"]
    base = q[q["optimizer"] == baseline]
    plain = base["refresh"].eq("n/a")
    has_plain = plain.groupby([base[k] for k in join], dropna=False).transform("any")
    base = base[plain | ~has_plain].groupby(join, dropna=False)[["q25", "q75"]].mean()
    out = xs.merge(base.reset_index(), on=join, how="inner", suffixes=("", "_base"))
    out["ratio_low"] = out["q25"] / out["q75_base"]
    out["ratio_high"] = out["q75"] / out["q25_base"]
    return out[[*join, "refresh", "ratio_low", "ratio_high"]]


# -- learning curves --------------------------------------------------------

#: The metrics of the learning curves, in the figure's order.
CURVE_METRICS: tuple[str, ...] = ("train_loss", "test_loss", "train_acc", "test_acc")


def curve_rows(study: Study | str | Path) -> pd.DataFrame:
    """The epochs the learning curves are drawn from: diverged trials left out
    (their NaN or chance-level epochs would drag a group's mean down), ±inf as
    missing, accuracy in %, and ``group``: the optimizer, with ``k=…`` when k
    varies. Columns ``trial_id``, ``epoch``, ``optimizer``, ``steps`` (float),
    ``group`` and :data:`CURVE_METRICS`; ``attrs["diverged"]``: trials left out."""
    s = as_study(study)
    return _once(s, ("curve_rows",), lambda: _curve_rows(s))


def _curve_rows(s: Study) -> pd.DataFrame:
    ep = s.epochs
    metrics = [m for m in CURVE_METRICS if m in ep.columns]
    diverged = s.trials.loc[s.trials["status"].eq("diverged").fillna(False), "trial_id"]
    ep = ep[~ep["trial_id"].isin(diverged)]
    out = pd.DataFrame(
        {
            "trial_id": ep["trial_id"].to_numpy(dtype=object),
            "epoch": ep["epoch"].to_numpy(dtype="float64", na_value=np.nan),
            "optimizer": ep["optimizer"].astype(object).to_numpy(),
            "steps": ep["steps"].to_numpy(dtype="float64", na_value=np.nan),
        }
    )
    for m in metrics:
        v = pd.to_numeric(ep[m], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        v = np.where(np.isinf(v), np.nan, v)
        out[m] = 100.0 * v if is_accuracy(m) else v
    group = out["optimizer"].astype(str)
    if out["steps"].nunique() > 1:  # each k formatted once, not once per row
        labels = {k: f" k={k:g}" for k in out["steps"].dropna().unique()}
        group = group + out["steps"].map(labels).fillna("")
    out["group"] = group.to_numpy(dtype=object)
    out.attrs["diverged"] = len(diverged)
    return out


def learning_curves(study: Study | str | Path) -> pd.DataFrame:
    """What the learning-curve figure draws: per ``group`` (optimizer and k),
    metric and epoch, the mean over trials with its 95 % t-interval, computed
    once with :func:`analysis._stats.mean_interval` (no resampling; no interval
    below 3 trials). Accuracy in %; diverged trials left out (:func:`curve_rows`).
    Columns ``metric``, ``group``, ``epoch``, ``n``, ``mean``, ``std``, ``low``,
    ``high``, ``min``, ``max``, ``interval``."""
    s = as_study(study)
    return _once(s, ("learning_curves",), lambda: _learning_curves(s))


def _learning_curves(s: Study) -> pd.DataFrame:
    d = curve_rows(s)
    parts = []
    for m in CURVE_METRICS:
        if m not in d.columns:
            continue
        stat = mean_interval(d[m], [d["group"], d["epoch"]], of="the mean over trials")
        parts.append(stat.assign(metric=m))
    if not parts:
        return pd.DataFrame(columns=["metric", "group", "epoch", "n", "mean", "low", "high"])
    out = pd.concat(parts, ignore_index=True)
    return out[["metric", *[c for c in out.columns if c != "metric"]]]


# -- fidelity --------------------------------------------------------------


def refresh_losses(study: Study | str | Path) -> pd.DataFrame:
    """One row per α refresh: L(v0), L(v1), L(v(α*)), α*, ψ.

    From ``.probes`` (every refresh): the losses the refresh recorded
    (``loss_v0``, ``loss_v1``, ``loss_best``; α = 1 need not be a grid point);
    where a record lacks one (older studies), the grid's: the loss at the grid
    point nearest α = 0 or α = 1 (NaN when none lies within half a grid step)
    and at α* (the highest loss when no point is marked). Without saved curves
    it falls back to the ``probe_loss_*`` columns of ``.epochs`` (the last
    refresh of each epoch). Computed once per Study.
    """
    s = as_study(study)
    return _once(s, ("refresh_losses",), lambda: _refresh_losses(s))


_RECORDED = ("loss_v0", "loss_v1", "loss_best")


def refresh_records(study: Study | str | Path) -> pd.DataFrame:
    """One row per α refresh of ``.probes`` as its record holds it (nothing read off
    the grid): ``trial_id``, ``refresh_index``, ``epoch``, ``step``, ``alpha_star``,
    ``psi``, ``loss_v0``, ``loss_v1``, ``loss_best`` (NaN where the record lacks
    one), and ``start``, the refresh's first row in ``.probes``. Read from those
    columns alone (not the grid points' or the keys'), once per Study."""
    s = as_study(study)
    return _once(s, ("refresh_records",), lambda: _refresh_records(s))


# Per-refresh columns of .probes (repeated on each of a refresh's grid points).
_PER_REFRESH = ("refresh_index", "epoch", "step", "alpha_star", "psi", *_RECORDED)


def _refresh_records(s: Study) -> pd.DataFrame:
    pr = s._probe_columns(["trial_id", *_PER_REFRESH])
    # Grid points of one refresh are consecutive rows: a refresh starts where
    # the trial or the refresh index changes.
    trial = pd.factorize(pr["trial_id"])[0]
    index = pr["refresh_index"].to_numpy(dtype="float64", na_value=np.nan)
    start = np.ones(len(pr), dtype=bool)
    start[1:] = (index[1:] != index[:-1]) | (trial[1:] != trial[:-1])
    starts = np.flatnonzero(start)
    out = pr.take(starts).reset_index(drop=True)
    out["start"] = starts
    return out


def _refresh_losses(s: Study) -> pd.DataFrame:
    cols = ["trial_id", "epoch", "step", *_RECORDED, "alpha_star", "psi"]
    rec = refresh_records(s)
    if not rec.empty:
        # The trial's key columns, as .probes holds them (taken from .trials).
        keys = s._key_frame(exclude=PROBE_COLUMNS)
        rows = pd.Index(keys["trial_id"]).get_indexer(rec["trial_id"])
        first = rec[["trial_id", "refresh_index"]].copy()
        for c in keys.columns[1:]:
            first[c] = keys[c].array.take(rows)
        for c in ("epoch", "step", "alpha_star", "psi"):
            first[c] = rec[c]
        starts = rec["start"].to_numpy()
        grid = None
        for name in _RECORDED:
            recorded = rec[name].to_numpy(dtype="float64", na_value=np.nan)
            missing = np.isnan(recorded)
            if missing.any():  # only older records send us to the grid
                if grid is None:
                    grid = s._probe_columns(
                        ["trial_id", "refresh_index", "alpha", "loss", "is_star"]
                    )
                recorded = np.where(missing, _grid_loss(grid, starts, name), recorded)
            first[name] = recorded
        return first
    ep = s.epochs
    ep = ep[ep["alpha_refreshed"].fillna(False).astype(bool)]
    out = ep.rename(
        columns={
            "probe_loss_v0": "loss_v0",
            "probe_loss_v1": "loss_v1",
            "probe_loss_best": "loss_best",
            "alpha": "alpha_star",
        }
    )
    extra = [c for c in out.columns if c in s.key_columns]
    return out[[*cols[:1], *extra, *cols[1:]]].reset_index(drop=True)


def _grid_loss(pr: pd.DataFrame, starts: np.ndarray, name: str) -> np.ndarray:
    """Per refresh (rows ``starts[i]`` on), ``name`` read off the grid: the loss at
    the grid point nearest α = 0 (``loss_v0``) or α = 1 (``loss_v1``), NaN when
    none lies within half the grid's smallest step; for ``loss_best`` the loss at
    the first point marked α*, else the highest loss."""
    loss = pr["loss"].to_numpy(dtype="float64", na_value=np.nan)
    rows = np.arange(len(loss))
    if name == "loss_best":
        star = pr["is_star"].fillna(False).to_numpy(dtype=bool)
        marked = np.minimum.reduceat(np.where(star, rows, len(rows)), starts)
        highest = np.fmax.reduceat(loss, starts)
        return np.where(marked < len(rows), loss[np.minimum(marked, len(rows) - 1)], highest)
    alpha = pr["alpha"].to_numpy(dtype="float64", na_value=np.nan)
    at = 0.0 if name == "loss_v0" else 1.0
    dist = np.abs(alpha - at)
    dist[np.isnan(dist)] = np.inf
    nearest = np.minimum.reduceat(dist, starts)
    sizes = np.diff(np.append(starts, len(rows)))
    # First row of each refresh at the nearest distance.
    first = np.minimum.reduceat(
        np.where(dist == np.repeat(nearest, sizes), rows, len(rows)), starts
    )
    # Smallest step between neighbouring grid points of a refresh (inf for one point).
    order = np.lexsort((alpha, np.repeat(np.arange(len(starts)), sizes)))
    gaps = np.append(np.diff(alpha[order]), np.inf)
    gaps[starts + sizes - 1] = np.inf  # across a refresh boundary
    step = np.fmin.reduceat(gaps, starts)
    return np.where(nearest <= step / 2 + 1e-9, loss[first], math.nan)


def loss_curves(study: Study | str | Path) -> pd.DataFrame:
    """The saved L(α) curves averaged by epoch: one row per epoch and grid point α
    with ``loss``, the mean over every refresh of that epoch that probed α (all
    trials; missing losses left out), and ``n``, how many losses it averages.
    ``attrs["n_trials"]``: the trials with saved curves. Computed once per Study,
    from three columns of ``.probes``."""
    s = as_study(study)
    return _once(s, ("loss_curves",), lambda: _loss_curves(s))


def _loss_curves(s: Study) -> pd.DataFrame:
    pr = s._probe_columns(["epoch", "alpha", "loss"])
    cols = ["epoch", "alpha", "loss", "n"]
    if pr.empty:
        out = pd.DataFrame(columns=cols)
        out.attrs["n_trials"] = 0
        return out
    values = {c: pr[c].to_numpy(dtype="float64", na_value=np.nan) for c in cols[:3]}
    ok = ~(np.isnan(values["epoch"]) | np.isnan(values["alpha"]) | np.isnan(values["loss"]))
    loss = pd.Series(values["loss"][ok])
    g = loss.groupby([values["epoch"][ok], values["alpha"][ok]], sort=True)
    out = g.agg(["mean", "size"]).rename_axis(["epoch", "alpha"]).reset_index()
    out = out.rename(columns={"mean": "loss", "size": "n"})[cols]
    out.attrs["n_trials"] = int(refresh_losses(s)["trial_id"].nunique())
    return out


def fidelity_table(study: Study | str | Path) -> pd.DataFrame:
    """Proposition 1, counted: per (context, optimizer, k) over all refreshes,
    ``share_v1_gt_v0`` (L(v1) > L(v0)) and ``share_best_gt_v1`` (L(v(α*)) >
    L(v1), i.e. some α ≠ 1 ascends higher than SAM's direction), with
    ``n_refreshes`` and the mean α*."""
    s = as_study(study)
    return _once(s, ("fidelity",), lambda: _fidelity(s))


def _fidelity(s: Study) -> pd.DataFrame:
    rl = refresh_losses(s)
    keys = [*context_keys(s.trials), "optimizer", "steps"]
    cols = [*keys, "n_refreshes", "share_v1_gt_v0", "share_best_gt_v1", "mean_alpha_star"]
    if rl.empty:
        return pd.DataFrame(columns=cols)
    info = s.trials[["trial_id", *[k for k in keys if k in s.trials.columns]]]
    rl = rl[[c for c in rl.columns if c not in keys]].merge(info, on="trial_id")
    keys = [k for k in keys if k in rl.columns]
    rl = rl.assign(
        v1_gt_v0=(rl["loss_v1"] > rl["loss_v0"])
        .astype("float64")
        .where(rl[["loss_v0", "loss_v1"]].notna().all(axis=1)),
        best_gt_v1=(rl["loss_best"] > rl["loss_v1"])
        .astype("float64")
        .where(rl[["loss_best", "loss_v1"]].notna().all(axis=1)),
    )
    g = rl.groupby(keys, observed=True, dropna=False)
    out = g.agg(
        n_refreshes=("trial_id", "size"),
        share_v1_gt_v0=("v1_gt_v0", "mean"),
        share_best_gt_v1=("best_gt_v1", "mean"),
        mean_alpha_star=("alpha_star", "mean"),
    ).reset_index()
    out["n_refreshes"] = out["n_refreshes"].astype("Int64")
    return _sort_optimizers(out[cols], keys)
