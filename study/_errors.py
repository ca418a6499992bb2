"""Exceptions of the study layer.

Every error a user can cause before a trial starts is a :class:`StudyError`;
the CLI turns one into a single ``xsam-tune: error: …`` line and exit code 2.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

_UNSET: Any = object()


def show_value(value: Any, limit: int = 80) -> str:
    """Render a value from a study file the way the user wrote it (short).

    The rendering stops once it is longer than ``limit``: a YAML alias bomb
    (a few lines that expand to 10**9 nested items) renders as fast as a number.

    Args:
        value: Any YAML value.
        limit: Longest rendering kept before truncating with ``…``.

    Returns:
        A one-line rendering: strings quoted, ``null``/``true``/``false`` as in YAML.
    """
    parts: list[str] = []
    room = [limit + 1]  # characters still wanted

    def emit(text: str) -> None:
        parts.append(text)
        room[0] -= len(text)

    def walk(v: Any) -> None:
        if room[0] <= 0:
            return
        if v is None:
            emit("null")
        elif isinstance(v, bool):
            emit("true" if v else "false")
        elif isinstance(v, str):
            emit(repr(v[: room[0] + 1]))
        elif isinstance(v, dict):
            emit("{")
            for i, (k, x) in enumerate(v.items()):
                if room[0] <= 0:
                    return
                emit(f"{', ' if i else ''}{str(k)[: room[0] + 1]}: ")
                walk(x)
            emit("}")
        elif isinstance(v, (list, tuple)):
            emit("[")
            for i, x in enumerate(v):
                if room[0] <= 0:
                    return
                if i:
                    emit(", ")
                walk(x)
            emit("]")
        elif isinstance(v, int) and v.bit_length() > 4 * limit:
            # str() of a huge int is slow, and refused beyond 4300 digits
            emit(f"an integer of about {int(v.bit_length() * 0.30103)} digits")
        else:
            emit(repr(v))

    walk(value)
    text = " ".join("".join(parts).split())
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


def plain(value: Any) -> str:
    """A value in a message: strings bare, anything else as :func:`show_value` renders it."""
    return value if isinstance(value, str) else show_value(value)


def one_of(values: Iterable[Any]) -> str:
    """``one of a, b, c``: what is allowed, in a message."""
    return "one of " + ", ".join(plain(v) for v in values)


def did_you_mean(key: Any, allowed: Iterable[str]) -> str:
    """`` (did you mean X?)`` for the allowed name closest to ``key``, else empty."""
    import difflib  # only an invalid study file needs it

    close = difflib.get_close_matches(str(key), list(allowed), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def unknown_key(
    where: str, key: Any, allowed: Iterable[str], *, what: str = "key"
) -> StudyConfigError:
    """The error for a key that is not one of ``allowed``.

    Args:
        where: Dotted path of the key (``search.smaples``).
        key: The key found.
        allowed: The keys allowed there.
        what: What kind of key, in the message (``trial key``, ``key for scheduler asha``).
    """
    names = list(allowed)
    return StudyConfigError(
        where, problem=f"unknown {what}" + did_you_mean(key, names), allowed=one_of(names)
    )


def check_keys(
    mapping: Mapping[Any, Any], where: str, allowed: Iterable[str], *, what: str = "key"
) -> None:
    """Raise :func:`unknown_key` for the first key of ``mapping`` not in ``allowed``.

    Args:
        mapping: A section of the study file.
        where: Dotted path of the section (empty at the top level).
        allowed: The keys the section may hold.
        what: What kind of key, in the message.
    """
    names = tuple(allowed)
    for key in mapping:
        if key not in names:
            raise unknown_key(f"{where}.{key}" if where else str(key), key, names, what=what)
