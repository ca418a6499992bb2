"""Per-user state of the study layer: the most recent study run from this machine."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/xsam-tune`` (default ``~/.cache/xsam-tune``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "xsam-tune"


def record_last_study(path: str) -> None:
    """Remember a study directory (local path or URI) as the most recent one.

    Best effort: a read-only home must not stop a study.
    """
    from xsam_contract import atomic_write  # the CLI's start-up needs no contract

    target = cache_dir() / "last-study"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, path + "\n")
    except OSError:
        pass


def last_study() -> str | None:
    """The most recent study directory recorded on this machine, if any."""
    try:
        text = (cache_dir() / "last-study").read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return text or None
