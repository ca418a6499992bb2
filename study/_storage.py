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
    "check_reachable",
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


def check_reachable(uri: str, timeout: float) -> None:
    """Refuse a storage URI whose bucket (or root) cannot be reached within ``timeout`` s.

    One request, no write: S3 asks for the bucket (``HeadBucket``) with short
    connect/request timeouts and one attempt (the SDK's default retries an
    unreachable endpoint for many seconds); other file systems ask for the
    root's file info under a wall-clock limit.

    Raises:
        StudyLaunchError: Unknown bucket, access refused (no credentials found,
            or the ones found lack access), endpoint unreachable, or no answer.
    """
    import threading

    outcome: list[Any] = []

    def probe() -> None:
        try:
            outcome.append(_probe(uri, timeout))
        except BaseException as exc:  # handed to the caller's thread
            outcome.append(exc)

    worker = threading.Thread(target=probe, name="xsam-storage-probe", daemon=True)
    worker.start()
    worker.join(timeout + 1.0)
    if not outcome:
        raise StudyLaunchError(f"storage {uri}: no answer within {timeout:g} s")
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    if outcome[0] is not None:
        raise StudyLaunchError(f"storage {uri}: {outcome[0]}")


def _probe(uri: str, timeout: float) -> str | None:
    """What is wrong with ``uri``'s bucket or root (None: reachable)."""
    import pyarrow.fs

    with _remote(uri) as (fs, path):
        pass
    if isinstance(fs, pyarrow.fs.S3FileSystem):
        # Same options as the URI gave (endpoint, region, credentials), but fail fast.
        options = dict(fs.__reduce__()[1][0])
        options.update(
            connect_timeout=min(timeout, 3.0),
            request_timeout=timeout,
            retry_strategy=pyarrow.fs.AwsStandardS3RetryStrategy(max_attempts=1),
        )
        fs = pyarrow.fs.S3FileSystem(**options)
        target = path.split("/", 1)[0]
    else:
        target = path
    try:
        info = fs.get_file_info(target)
    except OSError as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        if isinstance(fs, pyarrow.fs.S3FileSystem) and not _aws_credentials_configured():
            return (
                "no AWS credentials found (AWS_ACCESS_KEY_ID, AWS_PROFILE, "
                "AWS_SHARED_CREDENTIALS_FILE, ~/.aws/credentials) and anonymous "
                f"access failed: {reason}"
            )
        return reason
    if isinstance(fs, pyarrow.fs.S3FileSystem) and info.type == pyarrow.fs.FileType.NotFound:
        return f"bucket {target!r} does not exist"
    return None


def _aws_credentials_configured() -> bool:
    """Whether the usual places name AWS credentials (environment, shared files,
    web identity, container role). Instance-metadata credentials are not
    visible from here: this only words an access error, it refuses nothing."""
    env = os.environ
    names = ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE")
    names += ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI")
    if any(env.get(n) for n in names):
        return True
    files = (
        env.get("AWS_SHARED_CREDENTIALS_FILE") or os.path.expanduser("~/.aws/credentials"),
        env.get("AWS_CONFIG_FILE") or os.path.expanduser("~/.aws/config"),
    )
    return any(os.path.isfile(f) and os.path.getsize(f) > 0 for f in files)


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
