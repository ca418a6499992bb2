"""How a study file's values compare: YAML's ``true`` is not ``1``, ``1`` is ``1.0``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["is_int", "is_number", "member", "same"]


def is_int(v: Any) -> bool:
    """An integer, not a boolean."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    """An int or a float, not a boolean."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def same(a: Any, b: Any) -> bool:
    """Equal as a study file means it (True == 1 in Python, not in a study file)."""
    return (type(a) is type(b) and a == b) or (is_number(a) and is_number(b) and a == b)


def member(value: Any, values: Iterable[Any]) -> bool:
    """Whether ``value`` is :func:`same` as one of ``values``."""
    return any(same(value, v) for v in values)
