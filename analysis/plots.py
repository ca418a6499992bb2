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
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

import xsam_contract
from analysis._errors import AnalysisError
from analysis._importance import importances, space_types
from analysis._kinds import FORMATS, PLOTS, check_kinds
from analysis._results import Study
from analysis._style import optimizer_style
from analysis._tables import (
    COMPLETE,
    PHASES,
    as_study,
    degradation_layout,
    degradation_table,
    fidelity_table,
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
_BOOT = {"errorbar": ("ci", 95), "n_boot": 200, "seed": 0}  # seeded: same figure every run


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
    """Final test accuracy against k per optimizer (mean and 95 % t-interval over
    seeds, finished trials), with the paper's table (rows optimizer, columns k,
    mean ± std) beside it. The numbers are :func:`analysis.degradation_table`'s."""
    s = as_study(study)
    table = degradation_table(s, metric)
    unit = table.attrs["unit"]
    fig = _figure(s, "Multi-step degradation", (12.5, 4.6))
    ax, tab = fig.subplots(1, 2, width_ratios=[1.15, 1])
    if table.empty or table["mean"].isna().all():
        _note(ax, "no finished trials yet")
    else:
        trials = s.trials[s.trials["status"].eq("finished").fillna(False)]
        scale = 100.0 if unit == "%" else 1.0
        rows = [c for c in table.columns if c not in ("steps", "mean", "std", "n", "ci95")]
        colors = _colors(table["optimizer"])
        for key, g in table.groupby(rows, sort=False, dropna=False):
            key = key if isinstance(key, tuple) else (key,)
            label = " / ".join(str(k) for k in key)
            color = colors.get(str(g["optimizer"].iloc[0]))
            flat = g[g["steps"].isna()]
            for _, r in flat.iterrows():  # no ascent steps (sgd): a level across all k
                ax.axhline(r["mean"], color=color, ls="--", lw=1.2, label=f"{label} (no k)")
                ci = 0.0 if pd.isna(r["ci95"]) else r["ci95"]
                ax.axhspan(r["mean"] - ci, r["mean"] + ci, color=color, alpha=0.12, lw=0)
            g = g[g["steps"].notna()]
            if g.empty:
                continue
            ax.errorbar(
                g["steps"].astype(float),
                g["mean"],
                yerr=g["ci95"].fillna(0.0),
                marker="o",
                capsize=3,
                label=label,
                color=color,
            )
            mask = np.ones(len(trials), dtype=bool)
            for col, value in zip(rows, key, strict=True):
                mask &= (trials[col] == value).fillna(False).to_numpy()
            pts = trials[mask]
            ax.scatter(
                pts["steps"].astype(float),
                pts[table.attrs["column"]].astype(float) * scale,
                s=12,
                alpha=0.45,
                color=color,
            )
        ks = sorted(float(k) for k in table["steps"].dropna().unique())
        if ks and ks[-1] / max(ks[0], 1e-12) >= 4:
            ax.set_xscale("log")
        ax.set_xticks(ks, [f"{k:g}" for k in ks])
        ax.minorticks_off()
        ax.set_xlabel("ascent steps k")
        ax.set_ylabel(f"final {metric}" + (f" ({unit})" if unit else ""))
        ax.set_title("mean and 95 % t-interval over seeds (dots: trials)", fontsize=10)
        ax.legend(title=" / ".join(rows), fontsize=8)
    layout = degradation_layout(table)
    tab.axis("off")
    if not layout.empty:
        labels = [" / ".join(map(str, i)) if isinstance(i, tuple) else str(i) for i in layout.index]
        t = tab.table(
            cellText=layout.to_numpy(),
            rowLabels=labels,
            colLabels=list(layout.columns),
            loc="center",
            cellLoc="center",
        )
        t.auto_set_font_size(False)
        t.set_fontsize(9)
        t.scale(1.0, 1.5)
        tab.set_title(
            f"final {metric}{f' ({unit})' if unit else ''}: mean ± std over seeds", fontsize=10
        )
    return _finish(fig, "degradation", out_dir, formats)


# -- overhead --------------------------------------------------------------


def plot_overhead(
    study: Study | str | Path,
    out_dir: str | Path | None = None,
    formats: Sequence[str] = FORMATS,
) -> Figure | list[Path]:
    """Cost: stacked seconds per epoch of each phase per optimizer and k; the
    XSAM/SAM time ratio against the refresh frequency; XSAM's measured extra
    cost next to the floor its extra probe forwards impose. The numbers are
    :func:`analysis.overhead_table` and :func:`analysis.overhead_ratio_table`."""
    import seaborn as sns

    s = as_study(study)
    table = overhead_table(s)
    ratio = overhead_ratio_table(s)
    fig = _figure(s, "Overhead", (16, 5))
    ax_stack, ax_ratio, ax_floor = fig.subplots(1, 3, width_ratios=[1.5, 1, 1])
    if table.empty or table["time_epoch"].isna().all():
        _note(ax_stack, "no timed epochs yet")
    else:
        x = np.arange(len(table))
        bottom = np.zeros(len(table))
        palette = sns.color_palette("tab10", len(PHASES) + 1)
        for color, phase in zip(palette, [*PHASES, "other"], strict=True):
            values = table[f"time_{phase}"].astype(float).fillna(0.0).clip(lower=0.0).to_numpy()
            ax_stack.bar(x, values, bottom=bottom, label=phase, color=color, width=0.7)
            bottom += values
        ax_stack.set_xticks(x, _group_labels(table), fontsize=8)
        ax_stack.set_ylabel("seconds per epoch")
        ax_stack.set_title("time per epoch by phase (mean over epochs)", fontsize=10)
        ax_stack.legend(fontsize=8, ncols=2)
    if ratio.empty:
        _note(ax_ratio, "XSAM/SAM ratio: needs XSAM and SAM trials with the same k")
        _note(ax_floor, "extra cost vs floor: needs XSAM and SAM trials with the same k")
    else:
        order = (
            ratio.groupby("refresh", sort=False)["refreshes_per_epoch"].mean().sort_values().index
        )
        pos = {r: i for i, r in enumerate(order)}
        rpe = ratio.groupby("refresh")["refreshes_per_epoch"].mean()
        for steps, g in ratio.groupby("steps", sort=True):
            g = g.assign(_x=g["refresh"].map(pos)).sort_values("_x")
            ax_ratio.plot(g["_x"], g["ratio"], marker="o", label=f"k={steps}")
        ax_ratio.axhline(1.0, ls="--", color="0.5", lw=1)
        ax_ratio.set_xticks(
            range(len(order)), [f"{r}\n{rpe[r]:.2g}/epoch" for r in order], fontsize=8
        )
        ax_ratio.set_xlabel("α refresh setting (measured refreshes per epoch)")
        ax_ratio.set_ylabel("XSAM / SAM time per epoch")
        ax_ratio.set_title("XSAM/SAM time ratio vs refresh frequency", fontsize=10)
        ax_ratio.legend(fontsize=8)
        x = np.arange(len(ratio))
        ax_floor.bar(x - 0.2, ratio["extra_pct"], width=0.4, label="measured extra")
        ax_floor.bar(x + 0.2, ratio["floor_pct"], width=0.4, label="floor: probe forwards")
        ax_floor.axhline(0.0, color="0.3", lw=0.8)
        labels = [f"k={k}\n{r}" for k, r in zip(ratio["steps"], ratio["refresh"], strict=True)]
        ax_floor.set_xticks(x, labels, fontsize=8)
        ax_floor.set_ylabel("% of SAM's time per epoch")
        ax_floor.set_title("XSAM's extra cost vs the extra-forward floor", fontsize=10)
        ax_floor.legend(fontsize=8)
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
        imp = importances(s)
        axes[used + 1].barh(imp.index[::-1], imp.to_numpy()[::-1], color="C0")
        axes[used + 1].set_xlabel("importance (sums to 1)")
        axes[used + 1].set_title(
            f"Optuna importances ({imp.attrs['evaluator']}, {imp.attrs['n_trials']} trials, "
            f"from {imp.attrs['source']})",
            fontsize=10,
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
    if numeric:
        sns.scatterplot(
            data=d,
            x=p,
            y="_y",
            hue=hue,
            hue_order=hue_order,
            palette=colors,
            ax=ax,
            legend=legend and hue is not None,
        )
        if d[p].nunique() <= 8 and d[p].nunique() < len(d):  # a grid: join the means
            sns.lineplot(
                data=d,
                x=p,
                y="_y",
                hue=hue,
                hue_order=hue_order,
                palette=colors,
                errorbar=None,
                ax=ax,
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
        sns.stripplot(
            data=d,
            x=p,
            order=order,
            y="_y",
            hue=hue,
            hue_order=hue_order,
            palette=colors,
            ax=ax,
            legend=legend and hue is not None,
        )
    ax.set_ylabel(ylabel)
    ax.set_xlabel(p)
    ax.set_title(f"{ylabel} vs {p}", fontsize=10)
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
    import seaborn as sns

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
    d = _plain(rl)
    if hue == "steps":  # k is discrete: one colour per k, not a colour scale
        d["steps"] = d["steps"].map(lambda k: f"k={k:g}" if pd.notna(k) else "k=–")
    for ax, y, label in ((ax_a, "alpha_star", "α*"), (ax_p, "psi", "ψ (radians)")):
        sns.lineplot(
            data=d,
            x=x,
            y=y,
            hue=hue,
            units="trial_id",
            estimator=None,
            marker="o",
            drawstyle="steps-post",
            ax=ax,
            legend=ax is ax_a and hue is not None,
            palette="viridis" if hue and pd.api.types.is_numeric_dtype(d[hue]) else None,
            hue_order=sorted(d[hue].unique()) if hue == "steps" else None,
        )
        ax.set_xlabel(x)
        ax.set_ylabel(label)
    ax_a.axhline(1.0, ls=":", color="0.4", lw=1)
    ax_a.set_title("α* at each refresh (dotted: α = 1, SAM's direction)", fontsize=10)
    ax_p.set_title("ψ = ∠(v0, v1) at each refresh", fontsize=10)
    return _finish(fig, "alpha", out_dir, formats)


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
    """Direction fidelity: probe losses along v0, v1 and v(α*) over training
    (mean and 95 % interval over trials), the saved L(α) curves by epoch, and
    the share of refreshes where L(v1) > L(v0) and where L(v(α*)) > L(v1)
    (Proposition 1; :func:`analysis.fidelity_table`)."""
    import seaborn as sns

    s = as_study(study)
    rl = refresh_losses(s)
    fid = fidelity_table(s)
    fig = _figure(s, "Direction fidelity (Proposition 1)", (16, 4.6))
    ax_l, ax_c, ax_s = fig.subplots(1, 3)
    if rl.empty:
        _note(ax_l, "no α refreshes yet")
    else:
        names = {"loss_v0": "v0 (α = 0)", "loss_v1": "v1 (α = 1, SAM)", "loss_best": "v(α*)"}
        long = _plain(rl).melt(
            id_vars=["trial_id", "epoch"],
            value_vars=list(names),
            var_name="direction",
            value_name="loss",
        )
        long["direction"] = long["direction"].map(names)
        sns.lineplot(
            data=long,
            x="epoch",
            y="loss",
            hue="direction",
            hue_order=list(names.values()),
            marker="o",
            ax=ax_l,
            **_BOOT,
        )
        ax_l.set_ylabel("L(θ0 + ρm·v)")
        ax_l.set_title("probe loss along each direction", fontsize=10)
    pr = s.probes
    if pr.empty:
        _note(ax_c, "no saved L(α) curves yet")
    else:
        d = _plain(pr[["trial_id", "epoch", "alpha", "loss"]])
        sns.lineplot(
            data=d, x="alpha", y="loss", hue="epoch", palette="viridis", errorbar=None, ax=ax_c
        )
        ax_c.axvline(1.0, ls=":", color="0.4", lw=1)
        ax_c.set_xlabel("α")
        ax_c.set_ylabel("mean L(θ0 + ρm·v(α))")
        ax_c.set_title("L(α) curves by epoch (mean over trials)", fontsize=10)
    if fid.empty:
        _note(ax_s, "no refreshes to count yet")
    else:
        x = np.arange(len(fid))
        ax_s.bar(x - 0.2, fid["share_v1_gt_v0"], width=0.4, label="L(v1) > L(v0)")
        ax_s.bar(x + 0.2, fid["share_best_gt_v1"], width=0.4, label="L(v(α*)) > L(v1)")
        keys = [
            c
            for c in fid.columns
            if c not in ("steps", "n_refreshes") and c[:5] not in ("share", "mean_")
        ]
        labels = [
            " ".join(str(r[c]) for c in keys) + f" k={r['steps']}\n{r['n_refreshes']} refreshes"
            for _, r in fid.iterrows()
        ]
        ax_s.set_xticks(x, labels, fontsize=8)
        ax_s.set_ylim(0, 1.05)
        ax_s.set_ylabel("share of refreshes")
        ax_s.set_title("Proposition 1, counted", fontsize=10)
        ax_s.legend(fontsize=8)
    return _finish(fig, "fidelity", out_dir, formats)


# -- learning curves -------------------------------------------------------


def plot_curves(
    study: Study | str | Path,
    out_dir: str | Path | None = None,
    formats: Sequence[str] = FORMATS,
) -> Figure | list[Path]:
    """Learning curves: train/test loss and accuracy per epoch, by optimizer
    (line style: k), mean and 95 % interval over the trials of each group."""
    import seaborn as sns

    s = as_study(study)
    ep = s.epochs
    fig = _figure(s, "Learning curves", (12, 8))
    axes = fig.subplots(2, 2).ravel()
    metrics = ("train_loss", "test_loss", "train_acc", "test_acc")
    if not ep.empty:
        diverged = s.trials.loc[s.trials["status"].eq("diverged").fillna(False), "trial_id"]
        # A diverged trial's NaN/chance-level epochs would drag its group's mean down.
        ep = ep[~ep["trial_id"].isin(diverged)]
        if len(diverged):
            fig.suptitle(f"{fig.get_suptitle()}   ({len(diverged)} diverged left out)")
    if ep.empty:
        for ax in axes:
            _note(ax, "no epochs reported yet")
        return _finish(fig, "curves", out_dir, formats)
    d = _plain(ep[["trial_id", "epoch", "optimizer", "steps", *metrics]])
    d[list(metrics)] = d[list(metrics)].replace([np.inf, -np.inf], np.nan)
    style = "steps" if d["steps"].nunique() > 1 else None
    if style:
        d["steps"] = d["steps"].map(lambda k: f"k={k:g}" if pd.notna(k) else "k=–")
    for i, (ax, m) in enumerate(zip(axes, metrics, strict=True)):
        if d[m].isna().all():
            _note(ax, f"{m}: not reported")
            continue
        sns.lineplot(
            data=d,
            x="epoch",
            y=m,
            hue="optimizer",
            hue_order=optimizer_order(d["optimizer"]),
            palette=_colors(d["optimizer"]),
            style=style,
            marker="o",
            ax=ax,
            legend=i == 0,
            **_BOOT,
        )
        ax.set_title(m, fontsize=10)
    return _finish(fig, "curves", out_dir, formats)


# -- shared helpers --------------------------------------------------------


def _figure(s: Study, title: str, size: tuple[float, float]) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    counts = s.trials["status"].value_counts()
    state = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
    fig.suptitle(f"{s.name}: {title}   [{state or 'no trials'}]", fontsize=12)
    return fig


def _note(ax: Axes, text: str) -> None:
    ax.axis("off")
    ax.text(
        0.5,
        0.5,
        text,
        ha="center",
        va="center",
        wrap=True,
        fontsize=10,
        color="0.35",
        transform=ax.transAxes,
    )


def _colors(optimizers: Iterable[str] | pd.Series) -> dict[str, str]:
    """A fixed colour per optimizer, whatever subset a figure shows (:mod:`analysis._style`)."""
    return {name: style["color"] for name, style in optimizer_style(optimizers).items()}


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
