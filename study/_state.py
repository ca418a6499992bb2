"""Per-user state of the study layer: the most recent study of each storage root.

``xsam-tune last-study`` is a convenience for people at a terminal. It is
written when a study finishes or is interrupted (never when one starts, so a
study still running does not replace the last one that ended), and kept per
storage root: ``last-study --storage PATH`` names the last study that ended
there; without ``--storage``, the last one that ended anywhere. Scripts
should not read it (another study may end in between): ``xsam-tune run
--print-dir-to FILE`` gives a script the directory of its own run.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["cache_dir", "last_study", "record_last_study"]

_LAST = "last-study"
# One file per storage root, named by a digest of the root.
_BY_STORAGE = "last-study.d"


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/xsam-tune`` (default ``~/.cache/xsam-tune``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "xsam-tune"


def record_last_study(path: str) -> None:
    """Remember a study directory (local path or URI) that just ended.

    Best effort: a read-only home must not stop a study.

    Args:
        path: The study directory, ``<storage root>/<name>``.
    """
    from study._storage import parent
    from xsam_contract import atomic_write  # the CLI's start-up needs no contract

    storage = parent(path)
    base = cache_dir()
    try:
        (base / _BY_STORAGE).mkdir(parents=True, exist_ok=True)
        atomic_write(base / _BY_STORAGE / _key(storage), path + "\n")
        atomic_write(base / _LAST, path + "\n")
    except OSError:
        pass


def last_study(storage: str | None = None) -> str | None:
    """The last study directory that ended (under ``storage``, if given), if any.

    Args:
        storage: A storage root (as :func:`study._storage.storage_root` gives it).
    """
    base = cache_dir()
    target = base / _LAST if storage is None else base / _BY_STORAGE / _key(storage)
    try:
        text = target.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return text or None


def _key(storage: str) -> str:
    return hashlib.sha256(storage.encode("utf-8")).hexdigest()[:32]
