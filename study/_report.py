"""Plain-text tables for the terminal: the dry run and the closing table of a run."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from study._errors import show_value
from study._trial import trial_defaults
from study.config import StudyConfig
from study.space import count_trials, describe_space
from xsam_contract import ACCURACY_COLUMNS, STATUSES


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Left-aligned text table; missing cells show as ``-``.

    Args:
        rows: One mapping per row.
        columns: Column names, in order.

    Returns:
        The table, header first, without a trailing newline.
    """
    cells = [[format_metric(c, row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def describe_study(cfg: StudyConfig) -> str:
    """What ``xsam-tune run --dry-run`` prints: the settings, then the trials
    when the search algorithm lists them beforehand (grid), else the search
    space (random, optuna)."""
    search = cfg.search
    objective = ", ".join(f"{m.name} ({m.mode})" for m in cfg.metrics)
    lines = [
        f"study {cfg.name}: {count_trials(cfg)} trials ({search.describe()})",
        f"  objective: {objective}",
        f"  scheduler: {cfg.scheduler.describe()}",
        f"  resources per trial: cpu {cfg.resources.cpu}, gpu {cfg.resources.gpu}"
        + (
            f"; at most {cfg.effective_concurrency()} at once"
            if cfg.effective_concurrency()
            else ""
        ),
        f"  storage: {cfg.storage}",
        "  fixed: "
        + (", ".join(f"{k}={_cell(v)}" for k, v in cfg.trial_settings().items()) or "(defaults)"),
        "",
    ]
    trials = search.listed_trials(cfg)
    if trials is not None:
        columns = ["#", *(p.name for p in cfg.space)]
        lines.append(format_table([{"#": i, **t} for i, t in enumerate(trials)], columns))
    else:
        lines.append(format_table(describe_space(cfg), ["parameter", "distribution", "when"]))
        for i, point in enumerate(search.points_to_evaluate):
            first = "points_to_evaluate:" if i == 0 else " " * 19
            lines.append(f"{first} {', '.join(f'{k}={_cell(v)}' for k, v in point.items())}")
    return "\n".join(lines)


def status_of(last: Mapping[str, Any], epochs: int, *, errored: bool) -> str:
    """The label (``xsam_contract.STATUSES``) of a trial that ended.

    Args:
        last: Its last reported row.
        epochs: The epochs it was configured for.
        errored: It raised and its retries are spent.
    """
    if errored:
        return "errored"
    if last.get("diverged") is True:
        return "diverged"
    done = int(last.get("training_iteration") or 0)
    return "finished" if done >= epochs else "stopped"


def trial_status(
    result: Any, epochs: int, *, label: str | None = None, started: bool = False
) -> str:
    """The label (a key of ``xsam_contract.STATUSES``) of one trial of a ``ResultGrid``.

    Args:
        result: The trial's ``ray.tune.Result``.
        epochs: The epochs the trial was configured for.
        label: What the console saw the trial end as, if it did.
        started: The console saw the trial start in this run.

    Returns:
        ``finished``, ``stopped``, ``diverged``, ``errored``, ``interrupted``
        (started, not ended: Ctrl-C) or ``pending`` (never started).
    """
    if label is not None and label != "pending":
        return label
    if result.error:
        return "errored"
    metrics = result.metrics or {}
    if has_ended(metrics, epochs):
        return status_of(metrics, epochs, errored=False)
    return "interrupted" if started or metrics.get("training_iteration") else "pending"


def has_ended(metrics: Mapping[str, Any], epochs: int) -> bool:
    """Whether a trial's last result is its end: Ray's ``done``, or the trial
    diverged or reported its last configured epoch.

    Ray sets ``done`` on a returned trial's last result in memory only: a
    driver killed right after a trial returned leaves it saved ``TERMINATED``
    with ``done`` false (Ray 2.60), and the resume must not call it
    interrupted (tests/study/test_cluster_s3.py).
    """
    if metrics.get("done") or metrics.get("diverged") is True:
        return True
    epoch = metrics.get("epoch")
    return isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= epochs


def trial_epochs(cfg: StudyConfig) -> int:
    """Epochs of a trial of ``cfg`` whose config does not set them (the study's value)."""
    return int(cfg.trial_settings().get("epochs") or trial_defaults()["epochs"])


def trial_rows(
    results: Any,
    cfg: StudyConfig,
    labels: Mapping[str, str] | None = None,
    started: frozenset[str] = frozenset(),
) -> list[dict[str, Any]]:
    """One row per trial of a run, best first: ``trial``, ``status`` (a key of
    ``xsam_contract.STATUSES``), ``epochs`` (``done/configured``), the metrics
    and the swept values; ``pareto`` (``*`` or empty) with several objectives.

    Args:
        results: A Ray Tune ``ResultGrid``.
        cfg: The study.
        labels: Ray trial id → the label the console saw the trial end with.
        started: Ray trial ids the console saw start in this run.
    """
    names = [m.name for m in cfg.metrics]
    swept = [p.name for p in cfg.space]
    default_epochs = trial_epochs(cfg)
    labels = labels or {}
    rows = []
    for result in results:
        metrics = result.metrics or {}
        config = result.config or {}
        trial = str(metrics.get("trial_id") or _trial_id(result))
        epochs = config.get("epochs")
        epochs = epochs if isinstance(epochs, int) else default_epochs
        status = trial_status(result, epochs, label=labels.get(trial), started=trial in started)
        rows.append(
            {
                "trial": trial,
                "status": status,
                "epochs": f"{metrics.get('training_iteration') or 0}/{epochs}",
                **{n: metrics.get(n) for n in names},
                **{s: config.get(s) for s in swept},
            }
        )
    first = cfg.metrics[0]
    sign = -1 if first.mode == "max" else 1

    def key(row: Mapping[str, Any]) -> tuple[int, float]:
        v = row.get(first.name)
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        return (0, sign * v) if ok else (1, 0.0)

    rows.sort(key=key)
    if cfg.multi_objective:
        front = _pareto(rows, cfg)
        for i, row in enumerate(rows):
            row["pareto"] = "*" if i in front else ""
    return rows


def best_trials(
    results: Any,
    cfg: StudyConfig,
    top: int | None = None,
    labels: Mapping[str, str] | None = None,
    started: frozenset[str] = frozenset(),
) -> str:
    """The closing table of a run: every trial (or the ``top`` best) with its
    real status, epochs, metrics and swept values (:func:`trial_rows`).

    Sorted by the (first) metric; with several objectives the trials on the
    Pareto front are marked ``*``.

    Args:
        results: A Ray Tune ``ResultGrid``.
        cfg: The study.
        top: Rows shown at most (None: every trial).
        labels: Ray trial id → the label the console saw the trial end with.
        started: Ray trial ids the console saw start in this run.

    Returns:
        The table under a title that counts the trials by status, or
        ``no trials``.
    """
    rows = trial_rows(results, cfg, labels, started)
    if not rows:
        return "no trials"
    first = cfg.metrics[0]
    columns = [
        "trial",
        "status",
        "epochs",
        *(m.name for m in cfg.metrics),
        *(p.name for p in cfg.space),
    ]
    if cfg.multi_objective:
        columns.insert(0, "pareto")
    shown = rows[:top] if top else rows
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    tally = ", ".join(f"{counts[s]} {s}" for s in STATUSES if s in counts)
    title = f"best {len(shown)} of {len(rows)} trials by {first.name} ({first.mode}): {tally}"
    return title + "\n" + format_table(shown, columns)


def _pareto(rows: Sequence[Mapping[str, Any]], cfg: StudyConfig) -> set[int]:
    def vec(row: Mapping[str, Any]) -> list[float] | None:
        out = []
        for m in cfg.metrics:
            v = row.get(m.name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                return None
            out.append(-v if m.mode == "max" else v)  # lower is better
        return out

    vecs = [vec(r) for r in rows]
    front = set()
    for i, a in enumerate(vecs):
        if a is None:
            continue
        dominated = any(
            b is not None
            and all(x <= y for x, y in zip(b, a, strict=True))
            and any(x < y for x, y in zip(b, a, strict=True))
            for b in vecs
        )
        if not dominated:
            front.add(i)
    return front


def _trial_id(result: Any) -> str:
    # A trial that never reported: its folder is named "<trial id>_<swept values>"
    # (study._searchers.TrialDirname); Ray's trial ids are "<5 hex>_<5 digits>"
    # (its variant generator) or 8 hex digits (a searcher's trials).
    path = str(getattr(result, "path", "") or "")
    name = path.rstrip("/").rsplit("/", 1)[-1] if path else "?"
    match = re.match(r"(?:[0-9a-f]{5}_\d{5}|[0-9a-f]{8})(?=_|$)", name)
    return match.group(0) if match else name


def format_metric(name: str, value: Any) -> str:
    """A value as a person reads it: accuracies (fractions in rows) in percent."""
    if name in ACCURACY_COLUMNS and isinstance(value, float) and math.isfinite(value):
        return f"{100 * value:.2f}%"
    return _cell(value)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, str):
        return value
    return show_value(value, limit=40)
