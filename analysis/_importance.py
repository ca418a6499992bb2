"""Optuna parameter importances of a study, from its dataframe or its Optuna storage."""

from __future__ import annotations

import contextlib
import math
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from analysis._errors import AnalysisError
from analysis._results import Study
from analysis._tables import COMPLETE, as_study

__all__ = ["importances", "space_specs"]

_EVALUATORS = ("auto", "fanova", "ped-anova")
# PED-ANOVA rates the top 10 % of trials: below this many it rests on a handful.
_FANOVA_UP_TO = 500
# Distribution names a study file may use as the key of a space entry.
_SPEC_KINDS = frozenset(
    {
        "uniform",
        "loguniform",
        "quniform",
        "qloguniform",
        "randint",
        "lograndint",
        "qrandint",
        "choice",
        "grid",
        "grid_search",
        "categorical",
    }
)
# Files an Optuna searcher may have persisted next to the trials.
_STORAGE_FILES = ("optuna.db", "optuna.sqlite3", "optuna.journal", "optuna.log")


def importances(
    study: Study | str | Path,
    *,
    evaluator: str = "auto",
    params: list[str] | None = None,
    storage: str | Path | None = None,
) -> pd.Series:
    """Parameter importances (normalised to sum 1, largest first).

    By default an in-memory Optuna study is rebuilt from ``.trials``: one
    complete trial per finished or stopped trial, its value the ``objective``
    column, its distributions from ``study.json``'s ``space`` (log scale,
    integer, categorical) widened to cover the values seen. With ``storage``
    (an Optuna storage URL, an SQLite file or a journal file), or when the study
    directory holds one of ``optuna.db``, ``optuna.sqlite3``, ``optuna.journal``,
    ``optuna.log`` (the study layer keeps an Optuna search's study in
    ``optuna.journal``), the persisted Optuna study is read instead; when that
    file cannot be read (several studies, a read-only copy) the study is
    rebuilt. ``attrs["source"]`` says which was used.

    Args:
        study: a Study or a study directory.
        evaluator: ``fanova`` (fANOVA, a random forest; good for small
            studies), ``ped-anova`` (PED-ANOVA; fast, wants many trials) or
            ``auto``: fANOVA up to 500 complete trials, PED-ANOVA beyond.
        params: parameters to rate (default: swept ones except ``seed``).
        storage: an Optuna storage to read instead of rebuilding.

    Returns:
        Importance per parameter.

    Raises:
        AnalysisError: fewer than two complete trials, no parameter that takes
            two values, or an unknown evaluator; the message says which.
    """
    import optuna

    if evaluator not in _EVALUATORS:
        raise AnalysisError(f"unknown evaluator {evaluator!r}; choose {', '.join(_EVALUATORS)}")
    s = as_study(study)
    source = "trials"
    ostudy = None
    if storage is not None:
        ostudy, source = _load_persisted(storage), Path(str(storage)).name
    else:
        for name in _STORAGE_FILES:
            if (s.path / name).exists():
                # Unreadable here (several studies, a read-only copy): rebuild instead.
                with contextlib.suppress(AnalysisError):
                    ostudy, source = _load_persisted(s.path / name), name
                break
    if ostudy is None:
        ostudy = _rebuild(s, params)
    complete = [t for t in ostudy.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) < 2:
        raise AnalysisError(f"importances need ≥ 2 complete trials; the study has {len(complete)}")
    varying = [
        p
        for p in dict.fromkeys(k for t in complete for k in t.params)
        if len({repr(t.params.get(p)) for t in complete if p in t.params}) > 1
    ]
    if params is not None:
        varying = [p for p in varying if p in params]
    if not varying:
        raise AnalysisError("importances need a swept parameter that takes ≥ 2 values")
    if evaluator == "auto":
        evaluator = "fanova" if len(complete) <= _FANOVA_UP_TO else "ped-anova"
    ev = (
        optuna.importance.PedAnovaImportanceEvaluator()
        if evaluator == "ped-anova"
        else optuna.importance.FanovaImportanceEvaluator(seed=0)
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PED-ANOVA is marked experimental
            values = optuna.importance.get_param_importances(ostudy, evaluator=ev, params=varying)
    except Exception as exc:  # the evaluators raise bare ValueError/RuntimeError on odd data
        raise AnalysisError(f"{evaluator} failed: {exc}") from exc
    out = pd.Series({k: float(v) for k, v in values.items()}, name="importance", dtype="float64")
    out.index.name = "param"
    out.attrs["evaluator"] = evaluator
    out.attrs["n_trials"] = len(complete)
    out.attrs["source"] = source
    return out.sort_values(ascending=False)


def _rebuild(s: Study, params: list[str] | None) -> Any:
    import optuna

    trials = s.trials
    done = trials[trials["status"].isin(COMPLETE) & trials["objective"].notna()]
    done = done[done["objective"].map(math.isfinite)]
    names = params if params is not None else [p for p in s.swept if p != "seed"]
    names = [n for n in names if n in trials.columns]
    specs = space_specs(s)
    dists = {n: _distribution(trials[n].dropna(), specs.get(n)) for n in names}
    dists = {n: d for n, d in dists.items() if d is not None}
    direction = "maximize" if s.mode == "max" else "minimize"
    # an in-memory study rebuilt for the computation: Optuna's "created" notice is noise
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ostudy = optuna.create_study(direction=direction, study_name=s.name)
    for _, row in done.iterrows():
        values = {n: _plain(row[n]) for n in dists if not pd.isna(row[n])}
        ostudy.add_trial(
            optuna.trial.create_trial(
                params=values,
                distributions={n: dists[n] for n in values},
                value=float(row["objective"]),
            )
        )
    return ostudy


def _load_persisted(storage: str | Path) -> Any:
    import optuna

    text = str(storage)
    if "://" not in text and not Path(text).exists():
        raise AnalysisError(f"Optuna storage not found: {text}")
    try:
        if "://" in text:
            storage_obj: Any = text
        elif Path(text).suffix in (".journal", ".log"):
            from optuna.storages.journal import JournalFileBackend

            storage_obj = optuna.storages.JournalStorage(JournalFileBackend(text))
        else:
            storage_obj = f"sqlite:///{Path(text).resolve()}"
        names = optuna.get_all_study_names(storage=storage_obj)
        if len(names) != 1:
            raise AnalysisError(f"{text} holds {len(names)} Optuna studies; expected one")
        return optuna.load_study(study_name=names[0], storage=storage_obj)
    except AnalysisError:
        raise
    except Exception as exc:  # storage backends raise their own error types
        raise AnalysisError(f"cannot read Optuna storage {text}: {exc}") from exc


def space_specs(study: Study | str | Path) -> dict[str, dict[str, Any]]:
    """What ``study.json``'s (else ``study.yaml``'s) ``space`` says of each swept
    column: ``{"kind": "float"|"int"|"categorical"|None, "log": bool}``.

    Understood spellings of one entry: ``{"loguniform": [lo, hi]}``,
    ``{"uniform": …}``, ``{"randint": …}``, ``{"lograndint": …}``,
    ``{"choice": [...]}``, ``{"grid": [...]}``, ``{"type": "float", "low": …,
    "high": …, "log": true}``, a bare list (grid) or a scalar. Anything else is
    read from the values themselves.
    """
    s = as_study(study)
    space = s.info.get("space")
    if not isinstance(space, Mapping) and s.spec_text:
        space = _yaml_space(s.spec_text)
    out: dict[str, dict[str, Any]] = {}
    if not isinstance(space, Mapping):
        return out
    for key, spec in space.items():
        col = s.column_for(str(key))
        if col is not None:
            out[col] = _spec_hint(spec)
    return out


def _yaml_space(text: str) -> Any:
    try:
        import yaml

        doc = yaml.safe_load(text)
    except Exception:  # a study file this reader cannot parse: no hints
        return None
    stack = [doc]
    while stack:  # the first mapping called "space", wherever it sits
        node = stack.pop(0)
        if isinstance(node, Mapping):
            if isinstance(node.get("space"), Mapping):
                return node["space"]
            stack.extend(node.values())
    return None


def _spec_hint(spec: Any) -> dict[str, Any]:
    if isinstance(spec, (list, tuple)):
        return {"kind": "categorical" if _has_text(spec) else None, "log": False}
    if not isinstance(spec, Mapping):
        return {"kind": None, "log": False}
    kind = str(spec.get("type") or spec.get("kind") or spec.get("distribution") or "")
    if not kind:  # {"loguniform": [lo, hi], "when": {...}}: the distribution's own key
        kind = next((str(k) for k in spec if str(k).lower() in _SPEC_KINDS), "")
    key = kind
    kind = kind.lower()
    log = bool(spec.get("log")) or kind.startswith(("log", "qlog"))
    if kind in ("choice", "grid", "grid_search", "categorical"):
        values = spec.get(key) if isinstance(spec.get(key), (list, tuple)) else spec.get("values")
        return {"kind": "categorical" if _has_text(values) else None, "log": False}
    if re.search(r"int", kind):
        return {"kind": "int", "log": log}
    if re.search(r"uniform|float|normal|real", kind):
        return {"kind": "float", "log": log}
    return {"kind": None, "log": log}


def _has_text(values: Any) -> bool:
    return isinstance(values, (list, tuple)) and any(isinstance(v, (str, bool)) for v in values)


def _distribution(values: pd.Series, hint: dict[str, Any] | None) -> Any:
    """An Optuna distribution that holds every value seen."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    if values.empty:
        return None
    hint = hint or {"kind": None, "log": False}
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if hint["kind"] == "categorical" or not numeric:
        return CategoricalDistribution(sorted({_plain(v) for v in values}, key=repr))
    lo, hi = float(values.min()), float(values.max())
    log = bool(hint["log"]) and lo > 0
    integral = bool((values.astype("float64") % 1 == 0).all())
    if integral and (pd.api.types.is_integer_dtype(values) or hint["kind"] == "int"):
        return IntDistribution(int(lo), int(hi), log=log)
    return FloatDistribution(lo, hi, log=log)


def _plain(value: Any) -> Any:
    """numpy/pandas scalars → Python ones (Optuna checks types)."""
    return value.item() if hasattr(value, "item") else value
