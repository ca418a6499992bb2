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
"""

from __future__ import annotations

from analysis._errors import AnalysisError
from analysis._importance import importances
from analysis._report import write_report
from analysis._results import Study, load
from analysis._schema import STATUSES
from analysis._tables import (
    degradation_layout,
    degradation_table,
    fidelity_table,
    overhead_ratio_table,
    overhead_table,
    refresh_losses,
)
from analysis.plots import (
    KINDS,
    plot,
    plot_alpha,
    plot_curves,
    plot_degradation,
    plot_fidelity,
    plot_overhead,
    plot_sensitivity,
)

__all__ = [
    "KINDS",
    "STATUSES",
    "AnalysisError",
    "Study",
    "degradation_layout",
    "degradation_table",
    "fidelity_table",
    "importances",
    "load",
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
