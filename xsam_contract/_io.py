"""One atomic write for the whole project: a reader sees the old file or the new one, never half.

Local paths only (URIs go through the study layer's storage module). Torch-free.

The data goes to a temporary file in the target's own directory (``os.replace``
is atomic only within one filesystem), is flushed and fsynced, then replaces
the target. On any error the temporary file is removed and the target is left
as it was.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "atomic_write_with"]

# Distinguishes temporary files of one process (threads may write side by side).
_COUNTER = itertools.count()


def atomic_write_with(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> None:
    """Create or replace ``path`` atomically with what ``write`` writes to a binary file.

    Args:
        path: Local file to create or replace; its directory must exist.
        write: Called once with a binary file object open for writing (for
            example ``lambda fh: torch.save(state, fh)``).
    """
    target = Path(path)
    # O_EXCL: never reuse a file another writer has open. Not tempfile.mkstemp:
    # its 0600 mode would stick to the target, and importing tempfile (random,
    # shutil) slows every CLI start.
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{next(_COUNTER)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        # The target is untouched; do not leave the half-written temporary behind.
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Create or replace ``path`` atomically with ``data`` (``str`` is written as UTF-8).

    Args:
        path: Local file to create or replace; its directory must exist.
        data: The whole new content.
    """
    payload = data.encode("utf-8") if isinstance(data, str) else data
    atomic_write_with(path, lambda fh: fh.write(payload))
