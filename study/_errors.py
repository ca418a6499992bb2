"""Exceptions of the study layer.

Every error a user can cause before a trial starts is a :class:`StudyError`;
the CLI turns one into a single ``xsam-tune: error: …`` line and exit code 2.
"""

from __future__ import annotations

from typing import Any

_UNSET: Any = object()


def show_value(value: Any, limit: int = 80) -> str:
    """Render a value from a study file the way the user wrote it (short).

    Args:
        value: Any YAML value.
        limit: Longest rendering kept before truncating with ``…``.

    Returns:
        A one-line rendering: strings quoted, ``null``/``true``/``false`` as in YAML.
    """
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = repr(value)
    elif isinstance(value, dict):
        text = "{" + ", ".join(f"{k}: {show_value(v, limit)}" for k, v in value.items()) + "}"
    elif isinstance(value, (list, tuple)):
        text = "[" + ", ".join(show_value(v, limit) for v in value) + "]"
    else:
        text = repr(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class StudyError(Exception):
    """Base class of the errors the study layer reports to the user in one line."""


class StudyConfigError(StudyError, ValueError):
    """A study file (or an override) is invalid.

    The message names the field path (``space.steps.grid[2]``), the value found
    and what is allowed, on one line.

    Attributes:
        field: Dotted path of the offending field in the study file.
        value: The value found (``None`` when the field is missing).
        allowed: Human-readable description of the allowed values.
    """

    def __init__(
        self,
        field: str,
        value: Any = _UNSET,
        allowed: str | None = None,
        *,
        problem: str | None = None,
    ) -> None:
        self.field = field
        self.value = None if value is _UNSET else value
        self.allowed = allowed
        parts = []
        if problem:
            parts.append(problem)
        if value is not _UNSET:
            parts.append(f"got {show_value(value)}")
        elif not problem:
            parts.append("missing")
        if allowed:
            parts.append(f"allowed: {allowed}")
        message = f"{field}: " + ", ".join(parts)
        super().__init__(" ".join(message.split()))


class StudyLaunchError(StudyError, RuntimeError):
    """A study cannot be started or resumed (cluster, storage, directory)."""
