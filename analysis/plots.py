"""Figures of a study: one function per kind, each callable from Python.

Every ``plot_<kind>(study, out_dir=None, formats=("png", "svg"))`` draws from a
:class:`~analysis.Study` (or a study directory) and returns the
:class:`matplotlib.figure.Figure` when ``out_dir`` is None, else writes
``<out_dir>/<kind>.<format>`` for each format and returns the paths. Figures
are built on ``matplotlib.figure.Figure`` directly (no pyplot, so no GUI
backend and no global figure state); a panel whose data does not exist yet
(a running study, a study without XSAM trials) says so in words instead of
failing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

import xsam_contract
from analysis._claims import COST_LIMIT_PCT
from analysis._errors import AnalysisError
from analysis._importance import space_types
from analysis._kinds import FORMATS, PLOTS, check_kinds
from analysis._overhead import overhead_estimate
from analysis._results import Study
from analysis._stats import MIN_N
from analysis._style import (
    PERCENT_LIMITS,
    clamp_percent_axis,
    is_accuracy,
    optimizer_style,
)
from analysis._tables import (
    COMPLETE,
    CURVE_METRICS,
    PHASES,
    as_study,
    curve_rows,
    degradation_layout,
    degradation_table,
    fidelity_table,
    importances_once,
    learning_curves,
    loss_curves,
    optimizer_order,
    overhead_ratio_table,
    overhead_table,
    refresh_losses,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "plot",
    "plot_alpha",
    "plot_curves",
    "plot_degradation",
    "plot_fidelity",
    "plot_overhead",
    "plot_sensitivity",
]

_DPI = 110


def plot(
    study: Study | str | Path,
    kinds: str | Iterable[str] = "all",
    out_dir: str | Path | None = None,
    formats: Sequence[str] = FORMATS,
) -> list[Path]:
    """Write several kinds of figure.

    Args:
        study: a Study or a study directory.
        kinds: ``"all"``, one kind, or several (see :data:`analysis.PLOTS`).
        out_dir: where to write (default ``<study>/figures``).
        formats: file formats (``png``, ``svg``, ``pdf``, …).

    Returns:
        The files written.

    Raises:
        AnalysisError: an unknown kind or format.
    """
    from matplotlib.figure import Figure

    s = as_study(study)
    chosen = check_kinds(kinds)
    supported = Figure().canvas.get_supported_filetypes()
    for fmt in formats:
        if fmt not in supported:
            raise AnalysisError(
                f"unknown figure format {fmt!r}; choose from {', '.join(supported)}"
            )
    out = Path(out_dir) if out_dir is not None else s.path / "figures"
    paths: list[Path] = []
    for kind in chosen:
        written = PLOTS.load(kind)(s, out, formats)
        assert isinstance(written, list)  # out_dir given: paths, not a Figure
        paths += written
    return paths


# -- degradation -----------------------------------------------------------


def plot_degradation(
    study: Study | str | Path,
    out_dir: str | Path | None = None,
    formats: Sequence[str] = FORMATS,
    *,
    metric: str = "test_acc",
) -> Figure | list[Path]:
    """Final test accuracy (%) against k per optimizer: every finished trial as a
    dot, the mean over seeds as a line, and its 95 % t-interval only where a
    point has at least 3 seeds (n is written at each point); beside it the
    paper's layout (rows optimizer, columns k, mean ± std (n)) and the paper's
    own multi-step numbers (CIFAR-100/ResNet-18) for reference. The numbers
    are :func:`analysis.degradation_table`'s."""
    s = as_study(study)
    table = degradation_table(s, metric)
    unit = table.attrs["unit"]
    fig = _figure(s, "Multi-step degradation", (13.5, 4.8))
    ax, tab = fig.subplots(1, 2, width_ratios=[1.1, 1])
    if table.empty or table["mean"].isna().all():
        _note(ax, "no finished trials yet")
    else:
        trials = s.trials[s.trials["status"].eq("finished").fillna(False)]
        scale = 100.0 if unit == "%" else 1.0
        values = ("steps", "n", "mean", "std", "low", "high", "interval", "min", "max")
        rows = [c for c in table.columns if c not in values]
        style = optimizer_style(table["optimizer"])
        for key, g in table.groupby(rows, sort=False, dropna=False):
            key = key if isinstance(key, tuple) else (key,)
            label = " / ".join(str(k) for k in key)
            st = style[str(g["optimizer"].iloc[0])]
            flat = g[g["steps"].isna()]
            for _, r in flat.iterrows():  # no ascent steps (sgd): a level across all k
                ax.axhline(
                    r["mean"],
                    color=st["color"],
                    ls="--",
                    lw=1.2,
                    label=f"{label} (no k, n={r['n']})",
                )
                if pd.notna(r["low"]):
                    lo, hi = _clip(r["low"], unit), _clip(r["high"], unit)
                    ax.axhspan(lo, hi, color=st["color"], alpha=0.12, lw=0)
            g = g[g["steps"].notna()]
            if g.empty:
                continue
            x = g["steps"].astype(float).to_numpy()
            ax.plot(x, g["mean"], marker=st["marker"], color=st["color"], label=label, lw=1.5)
            drawn = g["low"].notna().to_numpy()
            if drawn.any():
                low = _clip(g["low"], unit)[drawn]
                high = _clip(g["high"], unit)[drawn]
                mean = g["mean"].to_numpy()[drawn]
                ax.errorbar(
                    x[drawn],
                    mean,
                    yerr=[mean - low, high - mean],
                    fmt="none",
                    ecolor=st["color"],
                    capsize=3,
                )
            for xi, yi, n in zip(x, g["mean"], g["n"], strict=True):
                ax.annotate(
                    f"n={n}",
                    (xi, yi),
                    textcoords="offset points",
                    xytext=(5, 4),
                    fontsize=7,
                    color=st["color"],
                )
            mask = np.ones(len(trials), dtype=bool)
            for col, value in zip(rows, key, strict=True):
                mask &= (trials[col] == value).fillna(False).to_numpy()
            pts = trials[mask]
            ax.scatter(
                pts["steps"].astype(float),
                pts[table.attrs["column"]].astype(float) * scale,
                s=14,
                alpha=0.5,
                color=st["color"],
                marker=st["marker"],
                linewidths=0,
            )
        ks = sorted(float(k) for k in table["steps"].dropna().unique())
        if ks and ks[-1] / max(ks[0], 1e-12) >= 4:
            ax.set_xscale("log")
        ax.set_xticks(ks, [f"{k:g}" for k in ks])
        ax.minorticks_off()
        if len(ks) > 1:
            pad = 0.15 * (np.log(ks[-1] / ks[0]) if ax.get_xscale() == "log" else ks[-1] - ks[0])
            if ax.get_xscale() == "log":
                ax.set_xlim(ks[0] / np.exp(pad), ks[-1] * np.exp(pad))
            else:
                ax.set_xlim(ks[0] - pad, ks[-1] + pad)
        ax.set_xlabel("ascent steps k")
        ax.set_ylabel(f"final {metric}" + (f" ({unit})" if unit else ""))
        few = int((table["n"] < MIN_N).sum())
        ax.set_title(
            f"dots: trials; line: mean over seeds; bars: 95 % t-interval where n ≥ {MIN_N}"
            + (f"\n({few} point(s) with n < {MIN_N}: no interval)" if few else ""),
            fontsize=9,
        )
        if unit == "%":
            clamp_percent_axis(ax)
        ax.legend(title=" / ".join(rows), fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    layout = degradation_layout(table)
    tab.axis("off")
    if not layout.empty:
        labels = [" / ".join(map(str, i)) if isinstance(i, tuple) else str(i) for i in layout.index]
        cells = layout.to_numpy().tolist()
        if unit == "%":  # the paper's multi-step numbers, for reference
            for opt, values in _PAPER_MULTISTEP.items():
                labels.append(f"paper {opt} (CIFAR-100)")
                cells.append([values.get(c, "") for c in layout.columns])
        t = tab.table(
            cellText=cells,
            rowLabels=labels,
            colLabels=list(layout.columns),
            loc="center",
            cellLoc="center",
        )
        t.auto_set_font_size(False)
        t.set_fontsize(8)
        t.scale(1.0, 1.4)
        tab.set_title(
            f"final {metric}{f' ({unit})' if unit else ''}: mean ± std (n seeds)", fontsize=10
        )
    return _finish(fig, "degradation", out_dir, formats)


# The paper's multi-step ablation (CIFAR-100, ResNet-18), by k.
_PAPER_MULTISTEP = {
    "sam": {"k=1": "79.5", "k=2": "79.2", "k=5": "78.8", "k=10": "78.3"},
    "xsam": {"k=1": "80.3", "k=2": "80.5", "k=5": "80.6", "k=10": "80.7"},
}


def _clip(values: Any, unit: str) -> Any:
    """Interval ends inside [0, 100] on a percent axis (a t-interval can pass 100)."""
    if unit != "%":
        return np.asarray(values, dtype=float) if not np.isscalar(values) else float(values)
    arr = np.clip(np.asarray(values, dtype=float), *PERCENT_LIMITS)
    return float(arr) if np.ndim(arr) == 0 else arr


# -- overhead --------------------------------------------------------------


def plot_overhead(
    study: Study | str | Path,
    out_dir: str | Path | None = None,
    formats: Sequence[str] = FORMATS,
) -> Figure | list[Path]:
    """Cost: seconds per epoch of each phase per optimizer and k (mean over epochs,
    n trials under each bar); XSAM's extra cost estimated within each trial
    (probe time against the same epochs' forward/backward time, median and
    IQR over epochs after the first) next to the analytic floor of its extra
    probe forwards and the paper's 3 %; and the XSAM/SAM ratio of epoch times
    of different trials with its spread, where a ratio below 1 beyond the
    spread is marked impossible (trials that shared the machine), not shown
    as a finding. The numbers are :func:`analysis.overhead_table`,
    :func:`analysis.overhead_estimate` and :func:`analysis.overhead_ratio_table`."""
    s = as_study(study)
    table = overhead_table(s)
    est = overhead_estimate(s.trials, s.epochs)
    ratio = overhead_ratio_table(s)
    fig = _figure(s, "Overhead", (17, 5.4))
    ax_stack, ax_est, ax_ratio = fig.subplots(1, 3, width_ratios=[1.4, 1.1, 1])
    if table.empty or table["time_epoch"].isna().all():
        _note(ax_stack, "no timed epochs yet")
    else:
        x = np.arange(len(table))
        bottom = np.zeros(len(table))
        palette = ["#4477AA", "#66CCEE", "#228833", "#CCBB44", "#EE6677", "#AA3377", "#BBBBBB"]
        for color, phase in zip(palette, [*PHASES, "other"], strict=False):
            values = table[f"time_{phase}"].astype(float).fillna(0.0).clip(lower=0.0).to_numpy()
            ax_stack.bar(x, values, bottom=bottom, label=phase, color=color, width=0.7)
            bottom += values
        labels = [
            f"{lab}\nn={n}" for lab, n in zip(_group_labels(table), table["n_trials"], strict=True)
        ]
        ax_stack.set_xticks(x, labels, fontsize=7)
        ax_stack.set_ylabel("seconds per epoch")
        ax_stack.set_ylim(0, max(bottom.max(), 1e-9) * 1.08)
        ax_stack.set_title(
            "time per epoch by phase (mean over epochs; wall time of trials\n"
            "that may have shared the machine: compare phases within a bar)",
            fontsize=9,
        )
        ax_stack.legend(fontsize=7, ncols=2, loc="upper left", bbox_to_anchor=(0, -0.22))
    if est.empty:
        _note(ax_est, "within-trial estimate: needs timed XSAM epochs after the first")
    else:
        x = np.arange(len(est))
        med = est["median"].to_numpy(dtype=float)
        lo = med - est["q25"].to_numpy(dtype=float)
        hi = est["q75"].to_numpy(dtype=float) - med
        ax_est.bar(x - 0.18, med, width=0.36, color="#D55E00", label="measured: median (IQR)")
        ax_est.errorbar(x - 0.18, med, yerr=[lo, hi], fmt="none", ecolor="0.2", capsize=3)
        ax_est.bar(
            x + 0.18,
            est["floor_pct"].astype(float),
            width=0.36,
            color="#BBBBBB",
            label="analytic floor: probe forwards",
        )
        ax_est.axhline(COST_LIMIT_PCT, color="0.3", ls="--", lw=1, label="paper: < 3 %")
        labels = [
            f"k={r['steps']:g}, {r['refresh']}\n{r['steps_per_epoch']:.0f} steps/epoch\n"
            f"n={r['n_trials']} trials, {r['n_epochs']} ep."
            for _, r in est.iterrows()
        ]
        for i, flag in enumerate(est["below_floor"]):
            if flag:
                ax_est.annotate(
                    "below floor:\ntiming suspect", (x[i] - 0.18, med[i]), fontsize=7, color="#b00"
                )
        ax_est.set_xticks(x, labels, fontsize=7)
        ax_est.set_ylabel("% of the trial's own forward/backward time")
        top = max(float(est["q75"].max()), float(est["floor_pct"].max()), COST_LIMIT_PCT)
        ax_est.set_ylim(0, top * 1.25)
        ax_est.set_title("XSAM's extra cost, within each trial", fontsize=10)
        ax_est.legend(fontsize=7, loc="upper left")
    if ratio.empty:
        _note(ax_ratio, "XSAM/SAM epoch-time ratio: needs XSAM and SAM trials with the same k")
    else:
        x = np.arange(len(ratio))
        r = ratio["ratio"].to_numpy(dtype=float)
        r_lo = ratio["ratio_low"].to_numpy(dtype=float)
        r_hi = ratio["ratio_high"].to_numpy(dtype=float)
        # no spread (too few epochs) or an unbounded one: no bar rather than a wrong one
        lo = np.nan_to_num(np.clip(r - r_lo, 0, None), nan=0.0, posinf=0.0)
        hi = np.nan_to_num(np.clip(r_hi - r, 0, None), nan=0.0, posinf=0.0)
        bad = ratio["impossible"].to_numpy(dtype=bool)
        for sel, color, marker, label in (
            (~bad, "#0072B2", "o", "ratio (IQR of epoch times)"),
            (bad, "#b00", "x", "impossible: XSAM < SAM beyond spread"),
        ):
            if sel.any():
                ax_ratio.errorbar(
                    x[sel],
                    r[sel],
                    yerr=[lo[sel], hi[sel]],
                    fmt=marker,
                    color=color,
                    capsize=3,
                    label=label,
                )
        ax_ratio.axhline(1.0, ls="--", color="0.5", lw=1)
        labels = [
            f"k={k:g}\n{ref}" for k, ref in zip(ratio["steps"], ratio["refresh"], strict=True)
        ]
        ax_ratio.set_xticks(x, labels, fontsize=7)
        ax_ratio.set_xlim(-0.6, len(ratio) - 0.4)
        shown = np.concatenate([r, r - lo, r + hi, [1.0]])
        shown = shown[np.isfinite(shown)]
        pad = 0.08 * max(float(shown.max() - shown.min()), 0.1)
        ax_ratio.set_ylim(float(shown.min()) - pad, float(shown.max()) + pad)
        ax_ratio.set_ylabel("XSAM / SAM time per epoch (different trials)")
        note = "\nmarked points cannot be real: the trials shared the machine" if bad.any() else ""
        ax_ratio.set_title(f"epoch-time ratio across trials (not a measurement){note}", fontsize=9)
        ax_ratio.legend(fontsize=7, loc="upper left")
    return _finish(fig, "overhead", out_dir, formats)


def _group_labels(table: pd.DataFrame) -> list[str]:
    keys = [c for c in table.columns if c not in ("n_trials", "n_epochs") and not _is_value(c)]
    labels = []
    for _, row in table.iterrows():
        parts = []
        for k in keys:
            v = row[k]
            if k == "refresh" and v == "n/a":
                continue
            if k == "steps" and pd.isna(v):
                continue
            parts.append(f"k={v}" if k == "steps" else str(v))
        labels.append("\n".join(parts))
    return labels


def _is_value(col: str) -> bool:
    return col.startswith(("time_", "n_"))


# -- sensitivity -----------------------------------------------------------

#: The paper's default point (CIFAR), marked on sensitivity panels.
PAPER_DEFAULTS: dict[str, float] = {
    "rho": 0.15,
    "rho_max": 0.3,
    "alpha_max": 2.0,
    "alpha_delta": 0.1,
    "refresh_every": 1.0,
}
#: Fewer complete trials than this and importances get a warning in the figure.
MIN_IMPORTANCE_TRIALS = 20


def plot_sensitivity(
    study: Study | str | Path,
    out_dir: str | Path | None = None,
    formats: Sequence[str] = FORMATS,
) -> Figure | list[Path]:
    """The study's metric (``objective``: last reported value, finished and
    stopped trials) against each swept parameter, a ρ × ρm heat map (XSAM
    trials when there are any) and Optuna parameter importances
    (:func:`analysis.importances`)."""
    s = as_study(study)
    trials = s.trials
    done = trials[trials["status"].isin(COMPLETE) & trials["objective"].notna()]
    y, unit = _objective(s, done)
    params = [p for p in s.swept if p != "seed"]
    panels = max(1, len(params)) + 2
    ncols = min(3, panels)
    nrows = math.ceil(panels / ncols)
    fig = _figure(s, "Sensitivity", (4.8 * ncols, 3.9 * nrows))
    axes = list(fig.subplots(nrows, ncols, squeeze=False).ravel())
    ylabel = s.metric + (f" ({unit})" if unit else "")
    types = space_types(s)
    if not params:
        _note(axes[0], "no swept parameters")
    for i, p in enumerate(params):
        _param_panel(axes[i], done.assign(_y=y), p, ylabel, types.get(p), legend=i == 0)
    used = max(1, len(params))
    _heatmap_panel(axes[used], done.assign(_y=y), ylabel)
    try:
        imp = importances_once(s)
        axes[used + 1].barh(imp.index[::-1], imp.to_numpy()[::-1], color="C0")
        axes[used + 1].set_xlabel("importance (sums to 1)")
        n = int(imp.attrs["n_trials"])
        few = (
            f"\nonly {n} trials: too few to trust (≥ {MIN_IMPORTANCE_TRIALS})"
            if n < MIN_IMPORTANCE_TRIALS
            else ""
        )
        axes[used + 1].set_title(
            f"Optuna importances ({imp.attrs['evaluator']}, {n} trials, "
            f"from {imp.attrs['source']}){few}",
            fontsize=9,
            color="#b00" if few else "black",
        )
    except AnalysisError as exc:
        _note(axes[used + 1], f"importances: {exc}")
    for ax in axes[used + 2 :]:
        ax.axis("off")
    return _finish(fig, "sensitivity", out_dir, formats)


def _objective(s: Study, done: pd.DataFrame) -> tuple[pd.Series, str]:
    y = done["objective"].astype(float)
    if s.metric in xsam_contract.ACCURACY_COLUMNS:  # a fraction: shown in percent
        return y * 100.0, "%"
    return y, ""


def _param_panel(
    ax: Axes,
    data: pd.DataFrame,
    p: str,
    ylabel: str,
    space_type: tuple[str, bool] | None,
    *,
    legend: bool,
) -> None:
    import seaborn as sns

    cols = list(dict.fromkeys([p, "_y", "optimizer"]))  # p may be "optimizer" itself
    d = _plain(data[cols].dropna(subset=[p, "_y"]))
    if d.empty:
        _note(ax, f"{p}: no complete trials yet")
        return
    hue = "optimizer" if d["optimizer"].nunique() > 1 else None
    colors = _colors(d["optimizer"]) if hue else None
    hue_order = optimizer_order(d["optimizer"]) if hue else None
    numeric = pd.api.types.is_numeric_dtype(d[p]) and not pd.api.types.is_bool_dtype(d[p])
    # the same points, colours and axes for every seaborn call of this panel
    common = dict(data=d, x=p, y="_y", hue=hue, hue_order=hue_order, palette=colors, ax=ax)
    if numeric:
        sns.scatterplot(**common, legend=legend and hue is not None)
        if d[p].nunique() <= 8 and d[p].nunique() < len(d):  # a grid: join the means
            sns.lineplot(
                **common,
                errorbar=None,
                legend=False,
                lw=1,
                alpha=0.7,
                color=None if hue else "0.3",
            )
        lo, hi = float(d[p].min()), float(d[p].max())
        log = space_type is not None and space_type[1]
        if lo > 0 and (log or hi / lo >= 20):
            ax.set_xscale("log")
        values = sorted(d[p].unique())
        if len(values) <= 8 and all(float(v).is_integer() for v in values):
            ax.set_xticks(values, [f"{v:g}" for v in values])  # k, seeds: no 1.25 ticks
            ax.minorticks_off()
    else:
        d[p] = d[p].astype(str)
        order = optimizer_order(d[p]) if p == "optimizer" else sorted(d[p].unique())
        sns.stripplot(**common, order=order, legend=legend and hue is not None)
    if p in PAPER_DEFAULTS and numeric:
        ax.axvline(PAPER_DEFAULTS[p], color="0.3", ls=":", lw=1.2, label="paper's default")
        ax.annotate(
            "paper",
            (PAPER_DEFAULTS[p], 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(2, -10),
            textcoords="offset points",
            fontsize=7,
            color="0.3",
        )
    ax.set_ylabel(ylabel)
    ax.set_xlabel(p)
    ax.set_title(f"{ylabel} vs {p} (n={len(d)} trials)", fontsize=10)
    if legend and ax.get_legend() is not None:
        ax.legend(fontsize=8)


def _heatmap_panel(ax: Axes, data: pd.DataFrame, ylabel: str) -> None:
    import seaborn as sns

    need = ("rho", "rho_max")
    if not all(c in data.columns for c in need):
        _note(ax, "ρ × ρm heat map: the trials have no rho/rho_max setting")
        return
    d = data
    if d["optimizer"].eq("xsam").any():
        d = d[d["optimizer"].eq("xsam").fillna(False)]  # ρm only acts in XSAM
    d = _plain(d[[*need, "_y"]].dropna())
    if d.empty or d["rho"].nunique() < 2 or d["rho_max"].nunique() < 2:
        _note(ax, "ρ × ρm heat map: needs complete trials with ≥ 2 values of both ρ and ρm")
        return
    for c in need:
        d[c] = _bins(d[c])
    grid = d.pivot_table(index="rho_max", columns="rho", values="_y", aggfunc="mean", observed=True)
    grid = grid.sort_index(ascending=False)
    sns.heatmap(grid, annot=True, fmt=".3g", cmap="viridis", ax=ax, cbar_kws={"label": ylabel})
    ax.set_xlabel("ρ (rho)")
    ax.set_ylabel("ρm (rho_max)")
    ax.set_title(f"mean {ylabel} over ρ × ρm", fontsize=10)


def _bins(values: pd.Series, most: int = 5) -> pd.Series:
    """Few distinct values stay as they are; a continuous sweep is cut into quantile bins."""
    if values.nunique() <= most:
        return values.map(lambda v: f"{v:.3g}")
    cut = pd.qcut(values, q=min(most, values.nunique()), duplicates="drop")
    labels = {iv: f"{iv.left:.2g}–{iv.right:.2g}" for iv in cut.cat.categories}
    return cut.map(labels).astype(pd.CategoricalDtype(list(labels.values()), ordered=True))


# -- alpha -----------------------------------------------------------------


def plot_alpha(
    study: Study | str | Path,
    out_dir: str | Path | None = None,
    formats: Sequence[str] = FORMATS,
) -> Figure | list[Path]:
    """α* at every refresh over training, one line per trial (held until the next
    refresh), and ψ, the angle between v0 and v1 (the paper's Figure 2 analogue)."""
    s = as_study(study)
    rl = refresh_losses(s)
    fig = _figure(s, "α* over training", (12, 4.4))
    ax_a, ax_p = fig.subplots(1, 2)
    if rl.empty:
        for ax in (ax_a, ax_p):
            _note(ax, "no α refreshes yet (XSAM trials record α* at each refresh)")
        return _finish(fig, "alpha", out_dir, formats)
    per_epoch = rl.groupby(["trial_id", "epoch"]).size().max()
    x = "epoch" if per_epoch <= 1 else "step"
    hue = _line_hue(s, rl)
    colors, legend = _hue_colors(rl, hue)
    for ax, y, label in ((ax_a, "alpha_star", "α*"), (ax_p, "psi", "ψ (radians)")):
        _trial_steps(ax, rl, x, y, colors)
        ax.set_xlabel(x)
        ax.set_ylabel(label)
    if isinstance(legend, dict):
        from matplotlib.lines import Line2D

        handles = [
            Line2D([], [], color=c, marker="o", mec="w", mew=0.75, label=name)
            for name, c in legend.items()
        ]
        # beside the panel: thousands of markers leave no "best" place inside it
        ax_a.legend(
            handles=handles, title=hue, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1)
        )
    elif legend is not None:  # a numeric setting: a colour scale
        fig.colorbar(legend, ax=ax_p, label=hue)
    ax_a.axhline(1.0, ls=":", color="0.4", lw=1)
    ax_a.set_title("α* at each refresh (dotted: α = 1, SAM's direction)", fontsize=10)
    ax_p.set_title("ψ = ∠(v0, v1) at each refresh", fontsize=10)
    return _finish(fig, "alpha", out_dir, formats)


def _hue_colors(frame: pd.DataFrame, hue: str | None) -> tuple[np.ndarray, Any]:
    """A colour per row of ``frame`` by ``hue``, and what explains them: name → colour
    for categories (k as ``k=1``; missing, e.g. sgd's k, in grey as ``–``), a
    colour-mapped scale for a numeric setting, None without a hue."""
    from matplotlib.colors import Normalize, to_rgba_array

    if hue is None:
        return to_rgba_array(["C0"] * len(frame)), None
    values = frame[hue]
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if numeric and hue != "steps":
        from matplotlib.cm import ScalarMappable

        v = values.to_numpy(dtype="float64", na_value=np.nan)
        scale = ScalarMappable(Normalize(np.nanmin(v), np.nanmax(v)), cmap="viridis")
        rgba = scale.to_rgba(np.nan_to_num(v))
        rgba[np.isnan(v)] = to_rgba_array("0.5")[0]
        return rgba, scale
    codes, uniques = pd.factorize(values, sort=numeric)  # numbers sorted, else as they come
    names = [f"k={u:g}" if hue == "steps" else str(u) for u in uniques]
    palette = [f"C{i % 10}" for i in range(len(names))]
    legend = dict(zip(names, palette, strict=True))
    if (codes < 0).any():
        legend["k=–" if hue == "steps" else "–"] = "0.5"
        palette.append("0.5")
    rgba = to_rgba_array(palette)[codes]  # code -1 (missing): the last entry, grey
    return rgba, legend


def _trial_steps(ax: Axes, frame: pd.DataFrame, x: str, y: str, colors: np.ndarray) -> None:
    """One step line per trial (each value held until the next), a marker at every
    value. Trials of one colour are one line broken between trials, so a study of
    thousands of trials costs a few artists, not thousands (a colour scale: one
    line collection and one scatter)."""
    from matplotlib.collections import LineCollection

    xs = frame[x].to_numpy(dtype="float64", na_value=np.nan)
    ys = frame[y].to_numpy(dtype="float64", na_value=np.nan)
    trial = pd.factorize(frame["trial_id"])[0]
    color_code, palette = _codes(colors)
    order = np.lexsort((xs, trial, color_code))  # by colour, then trial, then x
    xs, ys, trial, color_code = xs[order], ys[order], trial[order], color_code[order]
    if len(palette) <= 20:
        for code in np.unique(color_code):
            sel = slice(*np.searchsorted(color_code, [code, code + 1]))  # rows of one colour
            # NaN between trials: a break, and the last value of a trial has no step on.
            cut = np.flatnonzero(trial[sel][1:] != trial[sel][:-1]) + 1
            ax.plot(
                np.insert(xs[sel], cut, np.nan),
                np.insert(ys[sel], cut, np.nan),
                color=palette[code],
                marker="o",
                ms=5,
                mec="w",
                mew=0.75,
                lw=1.5,
                drawstyle="steps-post",
            )
        return
    same = np.append(trial[1:] == trial[:-1], False)  # the trial goes on after this value
    ends = np.flatnonzero(~same)
    # Steps-post vertices: each value, then (next x, same value) where the trial goes on.
    vx = np.stack([xs, np.where(same, np.roll(xs, -1), np.nan)], axis=1).ravel()
    points = np.column_stack([vx, np.repeat(ys, 2)])
    lines = np.split(points, 2 * (ends[:-1] + 1))
    segs = [seg[~np.isnan(seg[:, 0])] for seg in lines]
    ax.add_collection(LineCollection(segs, colors=palette[color_code[ends]], linewidths=1.5))
    ax.scatter(xs, ys, c=palette[color_code], s=25, edgecolors="w", linewidths=0.75, zorder=3)
    ax.autoscale_view()


def _codes(colors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RGBA rows → an index per row into the distinct colours."""
    palette, codes = np.unique(colors, axis=0, return_inverse=True)
    return codes.ravel(), palette


def _line_hue(s: Study, frame: pd.DataFrame) -> str | None:
    """Colour lines by k when it varies, else by the first other swept setting that does."""
    for c in ["steps", *[p for p in s.swept if p not in ("seed", "optimizer")]]:
        if c in frame.columns and frame[c].nunique() > 1:
            return c
    return None


# -- fidelity --------------------------------------------------------------


def plot_fidelity(
    study: Study | str | Path,
    out_dir: str | Path | None = None,
    formats: Sequence[str] = FORMATS,
) -> Figure | list[Path]:
    """Direction fidelity (Proposition 1) from the losses each α search recorded:
    L(v1) − L(v0) and L(v(α*)) − L(v1) at every refresh (dots) with their
    median per epoch (line); the saved L(α) curves by epoch; and the share of
    refreshes where L(v1) > L(v0) and where L(v(α*)) > L(v1), n refreshes
    under each bar (:func:`analysis.fidelity_table`)."""
    s = as_study(study)
    rl = refresh_losses(s)
    fid = fidelity_table(s)
    fig = _figure(s, "Direction fidelity (Proposition 1)", (16.5, 5.0))
    ax_l, ax_c, ax_s = fig.subplots(1, 3)
    if rl.empty:
        _note(ax_l, "no α refreshes yet")
    else:
        d = _plain(rl)
        diffs = {
            "L(v1) − L(v0)": (d["loss_v1"] - d["loss_v0"], "#0072B2", "o"),
            "L(v(α*)) − L(v1)": (d["loss_best"] - d["loss_v1"], "#D55E00", "D"),
        }
        epoch = d["epoch"].astype(float)
        for label, (y, color, marker) in diffs.items():
            ax_l.scatter(epoch, y, s=10, alpha=0.35, color=color, marker=marker, linewidths=0)
            med = y.groupby(epoch).median()
            ax_l.plot(
                med.index,
                med.to_numpy(),
                color=color,
                marker=marker,
                ms=4,
                label=f"{label} (median over {d['trial_id'].nunique()} trials)",
            )
        ax_l.axhline(0.0, color="0.3", lw=0.8)
        ax_l.set_xlabel("epoch")
        ax_l.set_ylabel("probe-loss difference at ρm")
        ax_l.set_title("recorded probe losses: > 0 is what Proposition 1 says", fontsize=10)
        # not "best": searching for it over every refresh's dots costs seconds
        ax_l.legend(fontsize=7, loc="upper right")
    curves = loss_curves(s)
    if curves.empty:
        _note(ax_c, "no saved L(α) curves yet")
    else:
        from matplotlib.cm import ScalarMappable
        from matplotlib.collections import LineCollection
        from matplotlib.colors import Normalize

        epochs = curves["epoch"].to_numpy(dtype="float64")
        # One line per epoch, coloured by epoch; epochs as a colour bar (a legend of
        # a numeric hue would sit on the curves).
        scale = ScalarMappable(Normalize(epochs.min(), epochs.max()), cmap="viridis")
        starts = np.flatnonzero(np.append(True, epochs[1:] != epochs[:-1]))
        points = curves[["alpha", "loss"]].to_numpy(dtype="float64")
        ax_c.add_collection(
            LineCollection(
                np.split(points, starts[1:]), colors=scale.to_rgba(epochs[starts]), linewidths=1.5
            )
        )
        ax_c.autoscale_view()
        fig.colorbar(scale, ax=ax_c, label="epoch")
        ax_c.axvline(1.0, ls=":", color="0.4", lw=1)
        ax_c.set_xlabel("α")
        ax_c.set_ylabel("mean L(θ0 + ρm·v(α))")
        ax_c.set_title(
            f"L(α) curves by epoch (mean over {curves.attrs['n_trials']} trials)", fontsize=10
        )
    if fid.empty:
        _note(ax_s, "no refreshes to count yet")
    else:
        x = np.arange(len(fid))
        ax_s.bar(
            x - 0.2, 100 * fid["share_v1_gt_v0"], width=0.4, label="L(v1) > L(v0)", color="#0072B2"
        )
        ax_s.bar(
            x + 0.2,
            100 * fid["share_best_gt_v1"],
            width=0.4,
            label="L(v(α*)) > L(v1)",
            color="#D55E00",
        )
        keys = [
            c
            for c in fid.columns
            if c not in ("steps", "n_refreshes") and c[:5] not in ("share", "mean_")
        ]
        labels = [
            " ".join(str(r[c]) for c in keys)
            + ("" if pd.isna(r["steps"]) else f" k={r['steps']}")
            + f"\nn={r['n_refreshes']} refreshes"
            for _, r in fid.iterrows()
        ]
        ax_s.set_xticks(x, labels, fontsize=7)
        ax_s.set_ylim(0, 118)  # room above 100 % for the legend, clear of the bars
        ax_s.set_yticks([0, 25, 50, 75, 100])
        ax_s.set_ylabel("share of refreshes (%)")
        ax_s.set_title("Proposition 1, counted", fontsize=10)
        ax_s.legend(fontsize=7, loc="upper left", ncols=2)
    return _finish(fig, "fidelity", out_dir, formats)


# -- learning curves -------------------------------------------------------


def plot_curves(
    study: Study | str | Path,
    out_dir: str | Path | None = None,
    formats: Sequence[str] = FORMATS,
) -> Figure | list[Path]:
    """Learning curves: train/test loss and accuracy (%) per epoch, by optimizer
    (line style: k). A group of at least 3 trials shows its mean over trials and,
    as a band, the 95 % t-interval of that mean (mean ± t·s/√n, computed once per
    group and epoch: :func:`analysis._tables.learning_curves`, no resampling); a
    smaller one shows each trial (the legend gives n). Diverged trials are left out."""
    s = as_study(study)
    d = curve_rows(s)
    fig = _figure(s, "Learning curves", (12.5, 8.4))
    axes = fig.subplots(2, 2).ravel()
    if d.attrs["diverged"] and not s.epochs.empty:
        fig.suptitle(f"{fig.get_suptitle()}   ({d.attrs['diverged']} diverged left out)")
    if d.empty:
        for ax in axes:
            _note(ax, "no epochs reported yet")
        return _finish(fig, "curves", out_dir, formats)
    stats = learning_curves(s)
    for i, (ax, m) in enumerate(zip(axes, CURVE_METRICS, strict=True)):
        if m not in d.columns or d[m].isna().all():
            _note(ax, f"{m}: not reported")
            continue
        ax.set_ylabel(f"{m} (%)" if is_accuracy(m) else m)
        _lines(ax, d, stats[stats["metric"] == m], "epoch", m, legend=i == 0)
        ax.set_title(f"{m} (%)" if is_accuracy(m) else m, fontsize=10)
        if is_accuracy(m):
            clamp_percent_axis(ax)
    return _finish(fig, "curves", out_dir, formats)


def _lines(ax: Axes, d: pd.DataFrame, stat: pd.DataFrame, x: str, y: str, *, legend: bool) -> None:
    """One line per ``group`` (optimizer and k) coloured by optimizer: the mean and
    95 % t-band of ``stat`` where the group has ≥ MIN_N trials, every trial of
    ``d`` otherwise."""
    style = optimizer_style(d["optimizer"])
    dashes = ["-", "--", ":", "-."]
    ks = {k: dashes[i % len(dashes)] for i, k in enumerate(sorted(d["steps"].dropna().unique()))}
    percent = "%" in ax.get_ylabel() or is_accuracy(y)
    order = sorted(
        d["group"].unique(),
        key=lambda g: (optimizer_order(d["optimizer"]).index(g.split()[0]), g),
    )
    for group in order:
        rows = d[d["group"] == group]
        st = style[str(rows["optimizer"].iloc[0])]
        k = rows["steps"].iloc[0]
        ls = ks.get(k, "-")
        n = rows["trial_id"].nunique()
        g = stat[stat["group"] == group]
        if n >= MIN_N:
            ax.plot(
                g[x],
                g["mean"],
                color=st["color"],
                ls=ls,
                marker=st["marker"],
                ms=3,
                label=f"{group} (mean, n={n})",
            )
            low, high = g["low"].to_numpy(dtype=float), g["high"].to_numpy(dtype=float)
            if percent:
                low, high = np.clip(low, *PERCENT_LIMITS), np.clip(high, *PERCENT_LIMITS)
            ax.fill_between(g[x].astype(float), low, high, color=st["color"], alpha=0.15, lw=0)
        else:
            for j, (_, t) in enumerate(rows.groupby("trial_id", sort=True)):
                ax.plot(
                    t[x],
                    t[y],
                    color=st["color"],
                    ls=ls,
                    marker=st["marker"],
                    ms=3,
                    lw=1,
                    alpha=0.8,
                    label=f"{group} (trials, n={n})" if j == 0 else None,
                )
    ax.set_xlabel(x)
    if legend:
        ax.legend(
            fontsize=7, title=f"band: 95 % t-interval of the mean (n ≥ {MIN_N})", title_fontsize=7
        )


# -- shared helpers --------------------------------------------------------


def _figure(s: Study, title: str, size: tuple[float, float]) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    counts = s.trials["status"].value_counts()
    state = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
    fig.suptitle(f"{s.name}: {title}   [{state or 'no trials'}]", fontsize=12)
    return fig


def _note(ax: Axes, text: str) -> None:
    import textwrap

    ax.axis("off")
    ax.text(
        0.5,
        0.5,
        textwrap.fill(text, 42),  # matplotlib's own wrap ignores constrained layout
        ha="center",
        va="center",
        fontsize=10,
        color="0.35",
        transform=ax.transAxes,
    )


def _colors(optimizers: Iterable[str] | pd.Series) -> dict[str, str]:
    """The fixed colour of each optimizer (:func:`analysis._style.optimizer_style`)."""
    return {name: st["color"] for name, st in optimizer_style(optimizers).items()}


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Nullable extension dtypes → numpy ones (NaN / object) for plotting libraries."""
    out = frame.copy()
    for c in out.columns:
        dtype = out[c].dtype
        if isinstance(dtype, pd.CategoricalDtype):
            continue
        if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_string_dtype(dtype):
            out[c] = out[c].astype(object).where(out[c].notna(), None)
        elif pd.api.types.is_numeric_dtype(dtype):
            out[c] = out[c].astype("float64")
    return out


def _finish(
    fig: Figure, name: str, out_dir: str | Path | None, formats: Sequence[str]
) -> Figure | list[Path]:
    if out_dir is None:
        return fig
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = out / f"{name}.{fmt}"
        # No creation date in the files: the same study gives the same bytes.
        meta = {"Date": None} if fmt in ("svg", "pdf") else {}
        try:
            fig.savefig(path, format=fmt, dpi=_DPI, metadata=meta)
        except ValueError as exc:
            raise AnalysisError(f"cannot write {fmt}: {exc}") from exc
        paths.append(path)
    return paths
