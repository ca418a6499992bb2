"""Study directories in object storage (``s3://``, ``gs://``, any pyarrow URI), read locally.

:func:`local_copy` lists the study once (one recursive listing: no object
is opened to find the trials) and downloads only the files the reader uses
into a local mirror:

* ``study.json``, ``study.yaml``, ``optuna.journal`` and the newest
  ``experiment_state-*.json`` of the study;
* each trial folder's ``params.json``, ``result.json`` and error files.

Checkpoints, event files, pickles and ``progress.csv`` stay in the bucket.
A file already mirrored with the same size and modification time is not
downloaded again, so following a running study re-reads only what changed.
Each mirrored file (and trial folder) keeps the remote modification time:
the reader's "is the study still running" test and its parquet cache work on
the mirror as on the study itself.

The mirror lives under :func:`cache_root`:
``$XSAM_TUNE_REMOTE_CACHE`` if set, else
``${XDG_CACHE_HOME:-~/.cache}/xsam-tune/remote``, then
``<scheme>/<bucket>/<path>``. Deleting it is always safe.

Credentials and endpoint come from where pyarrow looks for them (for S3:
the environment, ``~/.aws``, ``AWS_ENDPOINT_URL`` or ``?endpoint_override=``
in the URI for S3-compatible services).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import xsam_contract
from analysis._errors import AnalysisError

__all__ = ["CACHE_ENV", "Fetched", "cache_root", "is_uri", "local_copy"]

#: Environment variable naming the mirror's root directory.
CACHE_ENV = "XSAM_TUNE_REMOTE_CACHE"

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# What the reader opens at the top of a study and inside each trial folder.
_STUDY_FILES = tuple(xsam_contract.STUDY_FILES[k] for k in ("record", "spec", "optuna_journal"))
_STATE = re.compile(r"^experiment_state-.*\.json$")
_TRIAL_FILES = ("params.json", "result.json", "error.txt", "error.pkl")
# Parallel downloads: object stores answer each GET with some latency.
_WORKERS = 8


@dataclass(frozen=True)
class Fetched:
    """What :func:`local_copy` did.

    Attributes:
        path: The local mirror of the study directory.
        listed: Objects under the study (one listing).
        wanted: Of those, the files the reader uses.
        downloaded: Files downloaded this time (the others were up to date).
        bytes_read: Bytes downloaded this time.
    """

    path: Path
    listed: int
    wanted: int
    downloaded: int
    bytes_read: int


def is_uri(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a URI (``scheme://…``) rather than a local path."""
    return bool(_URI.match(str(path)))


def cache_root() -> Path:
    """Root of the local mirrors of remote studies (see the module docstring)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "xsam-tune" / "remote"


def local_copy(uri: str) -> Fetched:
    """Mirror what the reader needs of the study at ``uri``; returns where and how much.

    Raises:
        AnalysisError: The URI cannot be opened (unknown scheme, credentials,
            network) or nothing is stored under it.
    """
    import pyarrow.fs

    uri = uri.rstrip("/")
    try:
        fs, base = pyarrow.fs.FileSystem.from_uri(uri)
        base = base.rstrip("/")
        infos = fs.get_file_info(pyarrow.fs.FileSelector(base, recursive=True))
    except FileNotFoundError:
        raise AnalysisError(f"study directory not found: {uri}") from None
    except (OSError, ValueError) as exc:
        raise AnalysisError(f"cannot read {uri}: {' '.join(str(exc).split())}") from None
    files = {
        info.path[len(base) + 1 :]: info
        for info in infos
        if info.type == pyarrow.fs.FileType.File and info.path.startswith(base + "/")
    }
    if not files:
        raise AnalysisError(f"study directory not found: {uri}")
    wanted = _wanted(files)
    local = _mirror_dir(uri)
    _drop_stale(local, set(wanted))
    todo = [rel for rel in wanted if not _up_to_date(local / rel, files[rel])]
    with ThreadPoolExecutor(_WORKERS) as pool:
        sizes = list(pool.map(lambda rel: _download(fs, files[rel], local / rel), todo))
    _stamp_folders(local, {rel: files[rel] for rel in wanted})
    return Fetched(local, len(files), len(wanted), len(todo), sum(sizes))


def _wanted(files: dict[str, Any]) -> list[str]:
    """The relative paths the reader opens, of those stored."""
    out = [name for name in _STUDY_FILES if name in files]
    states = sorted(rel for rel in files if "/" not in rel and _STATE.match(rel))
    out += states[-1:]  # the name carries the session time: the newest is last
    for rel in files:
        parts = rel.split("/")
        if len(parts) == 2 and parts[1] in _TRIAL_FILES:
            out.append(rel)
    return sorted(out)


def _mirror_dir(uri: str) -> Path:
    parts = urlsplit(uri)
    # the query (endpoint_override=…) selects a service, not a folder: keep it apart
    where = Path(parts.scheme) / (parts.netloc or "_") / parts.path.strip("/")
    if parts.query:
        digest = hashlib.blake2b(parts.query.encode(), digest_size=4).hexdigest()
        where = Path(f"{where}@{digest}")
    return cache_root() / where


def _up_to_date(path: Path, info: Any) -> bool:
    try:
        st = path.stat()
    except OSError:
        return False
    return st.st_size == info.size and info.mtime_ns is not None and st.st_mtime_ns == info.mtime_ns


def _download(fs: Any, info: Any, dest: Path) -> int:
    """Copy one object to ``dest`` (through a temporary name) with its mtime; bytes read."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    try:
        with fs.open_input_stream(info.path) as src, open(tmp, "wb") as out:
            data = src.read()
            out.write(data)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise AnalysisError(f"cannot read {info.path}: {' '.join(str(exc).split())}") from None
    os.replace(tmp, dest)
    if info.mtime_ns is not None:
        os.utime(dest, ns=(info.mtime_ns, info.mtime_ns))
    return len(data)


def _drop_stale(local: Path, wanted: set[str]) -> None:
    """Remove mirrored study files the bucket no longer has (an older run state,
    a trial folder that is gone); the reader's own outputs are left alone."""
    if not local.is_dir():
        return
    for entry in local.iterdir():
        if entry.is_file() and (entry.name in _STUDY_FILES or _STATE.match(entry.name)):
            if entry.name not in wanted:
                entry.unlink()
        elif entry.is_dir() and not entry.name.startswith("."):
            names = [p.name for p in entry.iterdir()]
            if any(n in _TRIAL_FILES for n in names) and not any(
                f"{entry.name}/{n}" in wanted for n in _TRIAL_FILES
            ):
                shutil.rmtree(entry)
            else:
                for n in names:
                    if n in _TRIAL_FILES and f"{entry.name}/{n}" not in wanted:
                        (entry / n).unlink()


def _stamp_folders(local: Path, infos: dict[str, Any]) -> None:
    """Give each trial folder the newest modification time of its files."""
    newest: dict[str, int] = {}
    for rel, info in infos.items():
        if "/" in rel and info.mtime_ns is not None:
            folder = rel.split("/", 1)[0]
            newest[folder] = max(newest.get(folder, 0), info.mtime_ns)
    for folder, ns in newest.items():
        os.utime(local / folder, ns=(ns, ns))
