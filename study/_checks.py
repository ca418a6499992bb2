"""Checks of a study file's numbers, shared by the validator and the scheduler classes."""

from __future__ import annotations

from typing import Any

from study._errors import StudyConfigError
from study._values import is_int

__all__ = ["MAX_EPOCHS", "MAX_TRIALS", "check_int", "check_optional_int"]

# Upper bounds of the settings that reach Ray, NumPy or the OS: beyond them a
# study waits forever or crashes in a library.
MAX_TRIALS = 1_000_000
MAX_EPOCHS = 1_000_000


def check_int(value: Any, where: str, *, minimum: int, maximum: int) -> int:
    """``value`` if it is an integer in ``[minimum, maximum]``, else the error naming ``where``."""
    if not is_int(value) or not minimum <= value <= maximum:
        raise StudyConfigError(where, value, f"an integer in [{minimum}, {maximum}]")
    return value


def check_optional_int(value: Any, where: str, minimum: int, maximum: int) -> int | None:
    """As :func:`check_int`, and null (None) is allowed too."""
    if value is None:
        return None
    if not is_int(value) or not minimum <= value <= maximum:
        raise StudyConfigError(where, value, f"null or an integer in [{minimum}, {maximum}]")
    return value
