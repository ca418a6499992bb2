"""Where studies live: local paths and URIs (``s3://``, ``gs://``, ``memory://``, …).

A study directory is ``<storage root>/<name>``. Local files are written with
the project's atomic write (``xsam_contract.atomic_write``: readers such as
the analysis of a live study never see half a file); URIs go through pyarrow's
file systems, whose failures (credentials, network, unknown bucket) become
one-line :class:`StudyLaunchError`\\ s. pyarrow is imported only for a URI.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from typing import Any

from study._errors import StudyLaunchError
from xsam_contract import atomic_write

__all__ = [
    "exists",
    "is_uri",
    "join",
    "parent",
    "read_text",
    "storage_root",
    "upload_file",
    "write_text",
]

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(path: str) -> bool:
    """Whether ``path`` is a URI (``scheme://…``) rather than a local path."""
    return bool(_URI.match(path))


def join(root: str, name: str) -> str:
    """``root/name`` for a local path or a URI."""
    return f"{root.rstrip('/')}/{name}" if is_uri(root) else os.path.join(root, name)


def parent(path: str) -> str:
    """The directory holding ``path`` (local path or URI)."""
    return path.rstrip("/").rsplit("/", 1)[0] if is_uri(path) else os.path.dirname(path)


def storage_root(storage: str) -> str:
    """A storage root as the launcher uses it: a URI without trailing slash, or an
    absolute local path (``~`` expanded)."""
    if is_uri(storage):
        return storage.rstrip("/")
    return os.path.abspath(os.path.expanduser(storage))


def exists(path: str) -> bool:
    """Whether a file or directory exists at ``path``."""
    if is_uri(path):
        import pyarrow.fs

        with _remote(path) as (fs, inner):
            return fs.get_file_info(inner).type != pyarrow.fs.FileType.NotFound
    return os.path.exists(path)


def read_text(directory: str, filename: str) -> str | None:
    """The UTF-8 text of ``directory/filename``, or None when there is no such file."""
    if is_uri(directory):
        with _remote(directory) as (fs, path):
            try:
                with fs.open_input_stream(f"{path}/{filename}") as f:
                    return f.read().decode("utf-8")
            except FileNotFoundError:
                return None
    try:
        with open(os.path.join(directory, filename), encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except UnicodeDecodeError as exc:
        raise StudyLaunchError(
            f"{os.path.join(directory, filename)}: damaged, not UTF-8 text (byte {exc.start})"
        ) from None


def write_text(directory: str, filename: str, text: str) -> None:
    """Create or replace ``directory/filename`` (the directory is created)."""
    if is_uri(directory):
        with _remote(directory) as (fs, path):
            fs.create_dir(path, recursive=True)
            with fs.open_output_stream(f"{path}/{filename}") as f:
                f.write(text.encode("utf-8"))
        return
    os.makedirs(directory, exist_ok=True)
    atomic_write(os.path.join(directory, filename), text)


def upload_file(local: str, uri: str) -> None:
    """Copy a local file to a URI (replacing what is there)."""
    with _remote(uri) as (fs, path), open(local, "rb") as src, fs.open_output_stream(path) as dst:
        dst.write(src.read())


@contextlib.contextmanager
def _remote(uri: str) -> Iterator[tuple[Any, str]]:
    """A pyarrow file system and path for a URI; its failures become launch errors."""
    import pyarrow.fs

    try:
        fs, path = pyarrow.fs.FileSystem.from_uri(uri)
        yield fs, path.rstrip("/")
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise StudyLaunchError(f"storage {uri}: {reason}") from None
