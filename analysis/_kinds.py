"""The plot kinds: a registry, name → ``"module:function"``, imported only when drawn.

Light on purpose (no pandas, matplotlib or seaborn): the CLI derives its
``--kind`` help from :data:`PLOTS` when it builds its parser. A plot function
takes ``(study, out_dir=None, formats=FORMATS)`` and returns the Figure when
``out_dir`` is None, else the paths it wrote (see ``analysis/plots.py``).
"""

from __future__ import annotations

from collections.abc import Iterable

from analysis._errors import AnalysisError
from xsam_contract import Registry, RegistryError

__all__ = ["ALL", "FORMATS", "PLOTS", "check_kinds"]

#: Plot kinds, in the order ``plot(..., "all")`` and the report draw them.
PLOTS = Registry(
    "plot kind",
    {
        "degradation": "analysis.plots:plot_degradation",
        "overhead": "analysis.plots:plot_overhead",
        "sensitivity": "analysis.plots:plot_sensitivity",
        "alpha": "analysis.plots:plot_alpha",
        "fidelity": "analysis.plots:plot_fidelity",
        "curves": "analysis.plots:plot_curves",
    },
)
#: The word that selects every registered kind.
ALL = "all"
#: Figure formats written by default.
FORMATS: tuple[str, ...] = ("png", "svg")


def check_kinds(kinds: str | Iterable[str]) -> list[str]:
    """Kinds as a list (comma-separated items split, ``all`` expanded).

    Raises:
        AnalysisError: an unknown kind; the message names the allowed ones.
    """
    items = [kinds] if isinstance(kinds, str) else list(kinds)
    items = [k.strip() for item in items for k in item.split(",") if k.strip()]
    if not items or ALL in items:
        return list(PLOTS)
    for kind in items:
        try:
            PLOTS.check(kind)
        except RegistryError as exc:
            raise AnalysisError(f"{exc} or {ALL}") from None
    return list(dict.fromkeys(items))
