"""Study results from a study directory alone: dataframes, figures, reports.

Reads the files Ray Tune and the driver write (``params.json``, ``result.json``,
``error.txt``, ``experiment_state-*.json``, ``study.json``, ``study.yaml``);
never imports torch or the trainables and never starts Ray, so it works while a
study runs, after a crash, or on a copy of the directory elsewhere.

    >>> import analysis
    >>> s = analysis.load("studies/quickstart")
    >>> done = s.trials.query("status == 'finished'")
    >>> done.groupby(["optimizer", "steps"])["final_test_acc"].mean()
    >>> analysis.plot(s, "all")            # studies/quickstart/figures/*.png, *.svg
    >>> analysis.write_report(s)           # studies/quickstart/report/report.html

Column names, dtypes and the status rules are in ``analysis/README.md``.

Names are imported on first use: ``import analysis`` (and the CLI's parser)
stays free of pandas, matplotlib, seaborn, scipy and Optuna, which only the
verbs that read a study or draw a figure pay for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from analysis._errors import AnalysisError
from analysis._kinds import PLOTS
from analysis._schema import STATUSES

if TYPE_CHECKING:
    from analysis._claims import claims, format_claims
    from analysis._importance import importances
    from analysis._overhead import overhead_estimate
    from analysis._report import write_report
    from analysis._results import Study, load
    from analysis._tables import (
        degradation_layout,
        degradation_table,
        fidelity_table,
        overhead_ratio_table,
        overhead_table,
        refresh_losses,
    )
    from analysis.plots import (
        plot,
        plot_alpha,
        plot_curves,
        plot_degradation,
        plot_fidelity,
        plot_overhead,
        plot_sensitivity,
    )

__all__ = [
    "PLOTS",
    "STATUSES",
    "AnalysisError",
    "Study",
    "claims",
    "degradation_layout",
    "degradation_table",
    "fidelity_table",
    "format_claims",
    "importances",
    "load",
    "overhead_estimate",
    "overhead_ratio_table",
    "overhead_table",
    "plot",
    "plot_alpha",
    "plot_curves",
    "plot_degradation",
    "plot_fidelity",
    "plot_overhead",
    "plot_sensitivity",
    "refresh_losses",
    "write_report",
]

# Public name → the module that defines it (imported by __getattr__ on first use).
_LAZY = {
    "claims": "analysis._claims",
    "format_claims": "analysis._claims",
    "overhead_estimate": "analysis._overhead",
    "importances": "analysis._importance",
    "write_report": "analysis._report",
    "Study": "analysis._results",
    "load": "analysis._results",
    **dict.fromkeys(
        (
            "degradation_layout",
            "degradation_table",
            "fidelity_table",
            "overhead_ratio_table",
            "overhead_table",
            "refresh_losses",
        ),
        "analysis._tables",
    ),
    **dict.fromkeys(
        (
            "plot",
            "plot_alpha",
            "plot_curves",
            "plot_degradation",
            "plot_fidelity",
            "plot_overhead",
            "plot_sensitivity",
        ),
        "analysis.plots",
    ),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'analysis' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
