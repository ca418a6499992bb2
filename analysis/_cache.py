"""Parquet cache of a study's frames, inside the study: ``<study>/.cache/analysis/``.

A study that no longer runs is read from its JSON files once; its three frames
are then written here as parquet (each file atomically, with
:func:`xsam_contract.atomic_write_with`), so the next ``results``, ``plot`` or
``report`` reads columns instead of JSON lines. The files are named by a
fingerprint of everything the frames are built from: each trial folder's
``params.json``, ``result.json`` and error files (name, size, modification
time), ``study.json``, the newest ``experiment_state-*.json`` and the reader's
own source and schema. Any change gives another fingerprint, so a stale cache
is never read; it is replaced on the next write. Beside the frames goes the
trials table as text (:mod:`analysis._summary`), under the same fingerprint,
from which ``xsam-tune results`` prints without importing pandas.

Importing this module imports no pandas (the fast path of ``results`` takes
the fingerprint here); reading and writing the frames does.

The cache is an optimisation only: a study directory that cannot be written
(read-only storage, a full disk) is read from JSON every time, silently.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import xsam_contract
from analysis._schema import PROBE_COLUMNS, TRIAL_COLUMNS, epoch_columns

if TYPE_CHECKING:
    import pandas as pd

    from analysis._results import Study

__all__ = ["CACHE_DIR", "Frames", "fingerprint", "open_frames", "write_frames"]

#: Where the cache lives, relative to the study directory.
CACHE_DIR = Path(".cache") / "analysis"
# Bump when the frames change meaning without a change to the files hashed below.
_FORMAT = "1"
_KINDS = ("trials", "epochs", "probes")
# Every file name of the cache starts with one of these, then "-<stamp>".
_PREFIXES = ("meta", "summary", *_KINDS)
# Trials per batch when writing .epochs and .probes: bounds the memory of the write.
_BATCH = 200
# The summary is pandas' text of the frames: its code and the percent rule count too.
_SOURCES = ("_results.py", "_studydir.py", "_cache.py", "_schema.py", "_summary.py", "_style.py")
_log = logging.getLogger("analysis")


@dataclass(frozen=True)
class Frames:
    """A valid cache: the frames' files and what the Study needs besides them."""

    dir: Path
    stamp: str
    names: dict[str, str]
    problems: list[str]

    def read(self, kind: str, columns: list[str] | None = None) -> pd.DataFrame:
        """One frame (``columns``: only these), with the dtypes it was written with.

        Arrow's buffers are released column by column as pandas takes them
        (``self_destruct``), and the pool's free memory handed back after: a
        plain ``pd.read_parquet`` holds both copies at once (1.0 GB against
        0.8 GB peak for the 0.4 GB ``.probes`` of a 1,000 x 200 study).
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = self.dir / f"{kind}-{self.stamp}.parquet"
        table = pq.read_table(path, columns=columns, pre_buffer=False)
        frame = table.to_pandas(self_destruct=True, split_blocks=True)
        del table
        pa.default_memory_pool().release_unused()
        return frame


def fingerprint(root: Path, trial_dirs: list[str], states: list[Path]) -> tuple[str, float]:
    """A digest of every file the frames depend on, and the newest modification
    time among the run state, the trial folders and their ``result.json``
    (what tells whether the study still writes)."""
    h = hashlib.blake2b(digest_size=12)
    h.update(_code_signature().encode())
    newest = 0.0
    study_files = [root / xsam_contract.STUDY_FILES["record"], *states[-1:]]
    for f in study_files:
        h.update(_stat_line(f, f.name).encode())
    for s in states:
        newest = max(newest, _mtime(s))
    for name in trial_dirs:
        d = root / name
        newest = max(newest, _mtime(d))
        for f in ("params.json", "result.json", "error.txt", "error.pkl"):
            h.update(_stat_line(d / f, f"{name}/{f}").encode())
        newest = max(newest, _mtime(d / "result.json"))
    return h.hexdigest(), newest


def open_frames(root: Path, stamp: str) -> Frames | None:
    """The cached frames of fingerprint ``stamp``, or None."""
    d = root / CACHE_DIR
    try:
        meta = json.loads((d / f"meta-{stamp}.json").read_bytes())
        if not all((d / f"{k}-{stamp}.parquet").is_file() for k in _KINDS):
            return None
        import pyarrow  # noqa: F401 - pandas reads parquet with it
    except (OSError, ValueError, ImportError):
        return None
    return Frames(d, stamp, dict(meta["names"]), list(meta["problems"]))


def write_frames(study: Study, stamp: str) -> None:
    """Write ``study``'s frames under fingerprint ``stamp`` and let the Study read
    them from there (its in-memory rows are released); no-op when the directory
    cannot be written."""
    d = study.path / CACHE_DIR
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq

        d.mkdir(parents=True, exist_ok=True)
        trials = study.trials
        xsam_contract.atomic_write_with(
            d / f"trials-{stamp}.parquet", lambda fh: trials.to_parquet(fh, index=False)
        )
        for kind in ("epochs", "probes"):
            xsam_contract.atomic_write_with(
                d / f"{kind}-{stamp}.parquet", _streamed(study._batches(_BATCH, kind), pa, pq)
            )
        meta = {"format": _FORMAT, "names": study._names, "problems": study.problems}
        xsam_contract.atomic_write(d / f"meta-{stamp}.json", json.dumps(meta))
    except (OSError, ImportError, ValueError, TypeError) as exc:
        _log.debug("analysis cache not written in %s: %s", d, exc)
        return
    write_summary_quietly(study, stamp)
    for old in d.iterdir():
        if stamp not in old.name and old.name.split("-", 1)[0] in _PREFIXES:
            old.unlink(missing_ok=True)
    study._cached = Frames(d, stamp, dict(study._names), list(study.problems))
    study._raw = []


def write_summary_quietly(study: Study, stamp: str) -> None:
    """Write the summary of ``study`` (:mod:`analysis._summary`); a failure only
    costs the next ``results`` its fast path, so it is logged at debug level."""
    from analysis._summary import write_summary

    try:
        write_summary(study, stamp)
    except (OSError, ValueError, TypeError) as exc:
        _log.debug("analysis summary not written in %s: %s", study.path / CACHE_DIR, exc)


def _streamed(frames: Iterable[pd.DataFrame], pa: Any, pq: Any) -> Callable[[IO[bytes]], None]:
    """A writer of one parquet file from frames of one schema (one row group each)."""

    def write(fh: IO[bytes]) -> None:
        import pandas as pd

        writer = None
        first: pd.DataFrame | None = None
        for frame in frames:
            if first is None:
                first = frame
            if frame.empty and writer is not None:
                continue
            if writer is None:
                table = pa.Table.from_pandas(frame, preserve_index=False)
                writer = pq.ParquetWriter(fh, table.schema)
            else:
                table = pa.Table.from_pandas(frame, schema=writer.schema, preserve_index=False)
            writer.write_table(table)
        if writer is None:  # a study without trials
            (first if first is not None else pd.DataFrame()).to_parquet(fh, index=False)
        else:
            writer.close()

    return write


def _code_signature() -> str:
    """What the frames also depend on: the reader's code and the schema it reads.

    The schema is read from the contract on every call (its dtypes and
    statuses are the frames', and a changed one must give another
    fingerprint); only the files and the pandas version, fixed for the
    process, are read once.
    """
    schema = {
        "format": _FORMAT,
        "code": _source_digest(),
        "trials": TRIAL_COLUMNS,
        "epochs": epoch_columns(),
        "probes": PROBE_COLUMNS,
        "keys": {k: v.dtype for k, v in xsam_contract.TRIAL_KEYS.items()},
        "statuses": list(xsam_contract.STATUSES),
    }
    h = hashlib.blake2b(digest_size=12)
    h.update(json.dumps(schema, sort_keys=True, default=str).encode())
    return h.hexdigest()


@functools.cache
def _source_digest() -> str:
    """The reader's source files and the pandas version, hashed once per process."""
    here = Path(__file__).parent
    h = hashlib.blake2b(digest_size=12)
    for name in _SOURCES:
        h.update((here / name).read_bytes())
    h.update(_package_version("pandas").encode())
    return h.hexdigest()


def _package_version(name: str) -> str:
    """An installed package's version without importing it: the name of the
    ``<name>-<version>.dist-info`` folder beside it (PEP 427). Not
    ``importlib.metadata``, whose import alone costs about 0.1 s of a CLI start;
    it answers only where no such folder is found."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return "-"
    site = Path(next(iter(spec.submodule_search_locations))).parent
    prefix = f"{name}-"
    try:
        found = [
            e.name[len(prefix) : -len(".dist-info")]
            for e in os.scandir(site)
            if e.name.startswith(prefix) and e.name.endswith(".dist-info")
        ]
    except OSError:
        found = []
    if len(found) == 1:
        return found[0]
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "-"


def _stat_line(path: Path, name: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return f"{name}:-\n"
    return f"{name}:{st.st_size}:{st.st_mtime_ns}\n"


def _mtime(path: Path) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0
