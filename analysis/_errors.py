"""The one exception type the analysis layer raises for bad input."""

from __future__ import annotations

__all__ = ["AnalysisError"]


class AnalysisError(ValueError):
    """Bad input to the analysis layer (missing directory, unknown column, bad query, …).

    The CLI prints the message as one line and exits with code 2.
    """
