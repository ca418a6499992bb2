"""Optuna parameter importances of a study, from its dataframe or its Optuna storage."""

from __future__ import annotations

import contextlib
import math
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

import xsam_contract
from analysis._errors import AnalysisError
from analysis._results import Study
from analysis._tables import COMPLETE, as_study

__all__ = ["importances", "space_types"]

_EVALUATORS = ("auto", "fanova", "ped-anova")
# PED-ANOVA rates the top 10 % of trials: below this many it rests on a handful.
_FANOVA_UP_TO = 500


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
    column, its distributions of the type and scale ``study.json``'s ``space``
    gives (:func:`space_types`) over the values seen. With ``storage`` (an
    Optuna storage URL or a journal file), or when the study directory holds
    the Optuna journal an Optuna search writes (``optuna.journal``), the
    persisted Optuna study named like the study is read instead; when the
    journal in the directory cannot be read (a read-only copy) the study is
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
    journal = s.path / xsam_contract.STUDY_FILES["optuna_journal"]
    if storage is not None:
        ostudy, source = _load_persisted(storage, s.name), Path(str(storage)).name
    elif journal.exists():
        # Unreadable here (a read-only copy): rebuild instead.
        with contextlib.suppress(AnalysisError):
            ostudy, source = _load_persisted(journal, s.name), journal.name
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
    types = space_types(s)
    dists = {n: _distribution(trials[n].dropna(), types.get(n)) for n in names}
    dists = {n: d for n, d in dists.items() if d is not None}
    direction = "maximize" if s.mode == "max" else "minimize"
    # an in-memory study rebuilt for the computation: Optuna's "created" notice is noise
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ostudy = optuna.create_study(direction=direction, study_name=s.name)
    for _, row in done.iterrows():
        # Through the distribution's own representation: 2.0 of a float column
        # becomes the int 2 of an int distribution.
        values = {
            n: d.to_external_repr(d.to_internal_repr(_plain(row[n])))
            for n, d in dists.items()
            if not pd.isna(row[n])
        }
        ostudy.add_trial(
            optuna.trial.create_trial(
                params=values,
                distributions={n: dists[n] for n in values},
                value=float(row["objective"]),
            )
        )
    return ostudy


def _load_persisted(storage: str | Path, name: str) -> Any:
    """Optuna study ``name`` from a storage URL or a journal file."""
    import optuna

    text = str(storage)
    if "://" not in text and not Path(text).exists():
        raise AnalysisError(f"Optuna storage not found: {text}")
    try:
        if "://" in text:
            storage_obj: Any = text
        else:
            from optuna.storages.journal import JournalFileBackend

            storage_obj = optuna.storages.JournalStorage(JournalFileBackend(text))
        names = optuna.get_all_study_names(storage=storage_obj)
        if name not in names:
            raise AnalysisError(
                f"{text} holds no Optuna study {name!r} (it holds {', '.join(names) or 'none'})"
            )
        return optuna.load_study(study_name=name, storage=storage_obj)
    except AnalysisError:
        raise
    except Exception as exc:  # storage backends raise their own error types
        raise AnalysisError(f"cannot read Optuna storage {text}: {exc}") from exc


def space_types(study: Study | str | Path) -> dict[str, tuple[str, bool]]:
    """Swept column → (value type, log scale) of its ``study.json`` ``space`` entry.

    The value type is ``categorical``, ``int`` or ``float``
    (``Distribution.value_type`` of the study layer's distribution classes).

    Raises:
        AnalysisError: a ``space`` entry the study layer cannot read.
    """
    from study._distributions import parse_distribution
    from study._errors import StudyConfigError

    s = as_study(study)
    out: dict[str, tuple[str, bool]] = {}
    for key, spec in (s.info.get("space") or {}).items():
        try:
            dist, _ = parse_distribution(spec, f"study.json space.{key}")
        except StudyConfigError as exc:
            raise AnalysisError(str(exc)) from exc
        if key in s.trials.columns:
            out[key] = (dist.value_type(), dist.log)
    return out


def _distribution(values: pd.Series, hint: tuple[str, bool] | None) -> Any:
    """An Optuna distribution of the hinted type that holds every value seen.

    Without a hint (a bare Ray directory) the type is the column's own.
    """
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    if values.empty:
        return None
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    integral = pd.api.types.is_integer_dtype(values)
    kind, log = hint or ("int" if integral else "float" if numeric else "categorical", False)
    if kind == "categorical" or not numeric:
        return CategoricalDistribution(sorted({_plain(v) for v in values}, key=repr))
    lo, hi = float(values.min()), float(values.max())
    log = log and lo > 0
    if kind == "int":
        return IntDistribution(int(lo), int(hi), log=log)
    return FloatDistribution(lo, hi, log=log)


def _plain(value: Any) -> Any:
    """numpy/pandas scalars → Python ones (Optuna checks types)."""
    return value.item() if hasattr(value, "item") else value
