"""Study directories that a full disk cannot damage, and resumes that replay no row (issue 9).

Ray Tune copies its run state, each trial's rows and the checkpoints into the
study directory by rewriting the files in place (``pyarrow.fs.copy_files``),
every file again at every sync, in no fixed order. A full disk (seen with a
1 MB tmpfs as storage) then leaves its run state, searcher state,
``result.json`` files and checkpoints cut, and the resume is refused. For a
local study directory, the study layer gives Ray a file system of its own
(:func:`storage_filesystem`, Ray's public ``RunConfig(storage_filesystem=…)``
setting, used by the driver and by every worker) that keeps four rules:

1. **Every file whole.** Each file goes to a temporary file beside it, which
   replaces the old one only once complete (and flushed to disk): a full disk
   leaves the previous version, never a cut one. An unchanged file is not
   rewritten.
2. **The run state is never ahead of the rows.** Ray's run state
   (``experiment_state-*``) and its searcher's state are held back, written
   but not in place, until every one of them of that sync is written *and*
   every trial's ``result.json`` holds the row that reported the checkpoint
   the run state would restart the trial from; then they are put in place
   together. A sync that a full disk stops halfway leaves the last run state
   whose rows are all there.
3. **A checkpoint the run state in place names is kept**: Ray deletes a
   trial's older checkpoints as new ones come; such a deletion waits until a
   run state written after it is in place.
4. **Each row once** (:func:`before_trial_start`, by the :class:`DurableRows`
   callback when a trial starts): a trial restarted from a checkpoint (a
   retry or a resume) reports the epochs after it again, so the rows its
   ``result.json`` (and ``progress.csv``) holds after that checkpoint are cut
   first, after storing the rows Ray's local copy had that the last sync had
   not; one starting from its first epoch starts with no rows.

So after a full disk the study directory holds a consistent state with every
row written before the fault, and ``xsam-tune resume`` continues it, every
trial and epoch exactly once. This was chosen over keeping copies of Ray's
files (a second full set of writes, and copies taken between Ray's in-place
writes can still mix versions) and over rebuilding Ray's pickled run state
from the trial directories (Ray's private format). Remote (URI) storage is
left to its object store, whose uploads are whole objects.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import itertools
import json
import os
import re
import threading
from collections.abc import Iterable
from typing import Any

import pyarrow.fs as pafs
from ray.tune import Callback

__all__ = [
    "RUN_STATE_KINDS",
    "AtomicLocalHandler",
    "DurableRows",
    "before_trial_start",
    "cut_rows_after",
    "drop_held_back",
    "full_disk_error",
    "resume_filesystem",
    "storage_filesystem",
]

#: File-name prefixes of Ray's run state: the trials, then each searcher's state.
RUN_STATE_KINDS = {
    "native": ("experiment_state-", "basic-variant-state-"),
    # study._searchers.StudySearchGenerator (list and Optuna searches) and its searcher
    "searcher": ("experiment_state-", "search_gen_state-", "searcher-state-"),
}
_TRIALS = "experiment_state-"
# pyarrow's errors may carry only the text of ENOSPC
_FULL_TEXT = "No space left on device"
_RESULT = "result.json"
_PROGRESS = "progress.csv"
_CHECKPOINT = "checkpoint_"
_CHECKPOINT_NAME = re.compile(rb"checkpoint_\d{6}")
# Temporary names: hidden, per process and write (threads write side by side).
_COUNTER = itertools.count()
_TMP = re.compile(r"^\..+\.\d+\.\d+\.tmp$")


def storage_filesystem(search: str, study_dir: str) -> pafs.FileSystem | None:
    """The file system Ray writes a local study directory through (module docstring);
    None for a URI (Ray's own file system of the object store).

    What a former run in this process held back for ``study_dir`` is dropped
    (a run state never put in place, deletions of checkpoints it may name).

    Args:
        search: ``TuneSpace.kind`` (:mod:`study.space`): ``native`` (Ray's grid
            generator), ``list`` or ``optuna`` (the project's searchers), which
            decides the run-state files Ray writes.
        study_dir: The study directory Ray writes into.
    """
    if "://" in study_dir:
        return None
    with _LEDGER.lock:
        _LEDGER.pending.pop(study_dir, None)
        for table in (_LEDGER.needs, _LEDGER.deletions, _LEDGER.state_seq):
            table.pop(study_dir, None)
        _LEDGER.full = [f for f in _LEDGER.full if not _inside(f[0], study_dir)]
        # temporaries a former run left (killed, or its run state never put in place)
        for pattern in (".*.tmp", "*/.*.tmp", f"*/{_CHECKPOINT}*/.*.tmp"):
            for tmp in glob.glob(os.path.join(glob.escape(study_dir), pattern)):
                if _TMP.match(os.path.basename(tmp)):
                    _unlink(tmp)
    kinds = RUN_STATE_KINDS["native" if search == "native" else "searcher"]
    return pafs.PyFileSystem(AtomicLocalHandler(kinds))


def drop_held_back(study_dir: str) -> None:
    """At the end of a run: a run state still held back for ``study_dir`` will never be
    put in place (the one in place stays the last whose rows are all there), so its
    temporary files go; a later resume would remove them anyway."""
    with _LEDGER.lock:
        for tmp, _ in _LEDGER.pending.pop(study_dir, {}).values():
            _unlink(tmp)


def resume_filesystem(study_dir: str) -> pafs.FileSystem | None:
    """:func:`storage_filesystem` for a study directory Ray wrote before (the
    searcher's state file there says which kind)."""
    native = any(n.startswith(RUN_STATE_KINDS["native"][1]) for n in _listdir(study_dir))
    return storage_filesystem("native" if native else "list", study_dir)


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _inside(path: str, folder: str) -> bool:
    return path.startswith(folder.rstrip("/") + "/")


class _Ledger:
    """What every handler of this process shares (Ray unpickles one per checkpoint)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        # study directory -> kind -> (temporary, target); the run state held back
        self.pending: dict[str, dict[str, tuple[str, str]]] = {}
        # study directory -> {result.json: rows the held-back run state says it has}
        self.needs: dict[str, dict[str, bytes]] = {}
        # study directory -> [(write number, checkpoint directory)]; deletions held back
        self.deletions: dict[str, list[tuple[int, str]]] = {}
        # study directory -> write number of the held-back run state
        self.state_seq: dict[str, int] = {}
        self.seq = itertools.count()
        # (file, error) of each write a full disk stopped in this process
        self.full: list[tuple[str, BaseException]] = []


_LEDGER = _Ledger()


def _is_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def _holds(path: str, marker: bytes) -> bool:
    """Whether a file holds ``marker`` (False when missing)."""
    try:
        with open(path, "rb") as f:
            return marker in f.read()
    except FileNotFoundError:
        return False


class _AtomicFile:
    """A file written to a temporary beside ``target``, put in place by ``close``
    (or, for the run state, handed to the ledger); any error leaves ``target`` as it was."""

    def __init__(self, handler: AtomicLocalHandler, target: str) -> None:
        self.handler = handler
        self.target = target
        self.tmp = os.path.join(
            os.path.dirname(target),
            f".{os.path.basename(target)}.{os.getpid()}.{next(_COUNTER)}.tmp",
        )
        self._fh = open(self.tmp, "xb")  # noqa: SIM115 (closed in close/abort)
        self.closed = False
        self._failed = False

    def write(self, data: Any) -> int:
        if self._failed:
            raise OSError(errno.EIO, f"an earlier write to {self.target} failed")
        try:
            return self._fh.write(data)
        except BaseException as exc:
            self._fail(exc)
            self._abort()  # now: the caller may never close a stream that failed
            raise

    def flush(self) -> None:
        self._fh.flush()

    def tell(self) -> int:
        return self._fh.tell()

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._failed:
            self._abort()
            return
        try:
            self._fh.flush()
            # same bytes: keep the old file and its time stamp (not the run state:
            # each of its files must be written again for it to be put in place)
            if self.handler._kind(os.path.basename(self.target)) is None and self._unchanged():
                self._abort()
                return
            os.fsync(self._fh.fileno())
            self._fh.close()
        except BaseException as exc:
            self._fail(exc)
            self._abort()
            raise
        self.handler._written(self.tmp, self.target)

    def _unchanged(self) -> bool:
        size = self._fh.tell()
        try:
            if os.path.getsize(self.target) != size or size > 1 << 24:
                return False
            with open(self.target, "rb") as old, open(self.tmp, "rb") as new:
                return old.read() == new.read()
        except OSError:
            return False

    def _fail(self, exc: BaseException) -> None:
        self._failed = True
        if _is_full(exc):
            with _LEDGER.lock:
                _LEDGER.full.append((self.target, exc))

    def _abort(self) -> None:
        with contextlib.suppress(OSError):
            self._fh.close()
        with contextlib.suppress(OSError):
            os.unlink(self.tmp)

    def __del__(self) -> None:  # a stream dropped unclosed (a failed copy) leaves nothing
        if not self.closed:
            self.closed = True
            self._abort()


class AtomicLocalHandler(pafs.FileSystemHandler):
    """A local ``pyarrow`` file system whose writes follow the module's rules.

    Args:
        state_kinds: File-name prefixes of the run-state files Ray writes at
            each sync (:data:`RUN_STATE_KINDS`); they are put in place together.
    """

    def __init__(self, state_kinds: Iterable[str]) -> None:
        self.state_kinds = tuple(state_kinds)
        self._local = pafs.LocalFileSystem()

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.state_kinds,))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AtomicLocalHandler) and other.state_kinds == self.state_kinds

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash(self.state_kinds)

    def get_type_name(self) -> str:
        return "local"

    def normalize_path(self, path: str) -> str:
        return self._local.normalize_path(path)

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        return self._local.get_file_info(paths)

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        return self._local.get_file_info(selector)

    def create_dir(self, path: str, recursive: bool) -> None:
        self._local.create_dir(path, recursive=recursive)

    def delete_dir(self, path: str) -> None:
        if os.path.basename(path.rstrip("/")).startswith(_CHECKPOINT):
            study_dir = os.path.dirname(os.path.dirname(path.rstrip("/")))
            with _LEDGER.lock:
                if study_dir in _LEDGER.state_seq or study_dir in _LEDGER.pending:
                    # rule 3: the run state in place may still name it
                    _LEDGER.deletions.setdefault(study_dir, []).append((next(_LEDGER.seq), path))
                    return
        self._local.delete_dir(path)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self._local.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self) -> None:
        raise OSError(errno.EPERM, "refusing to empty the root directory")

    def delete_file(self, path: str) -> None:
        self._local.delete_file(path)

    def move(self, src: str, dest: str) -> None:
        self._local.move(src, dest)

    def copy_file(self, src: str, dest: str) -> None:
        with self._local.open_input_stream(src) as source:
            stream = self.open_output_stream(dest, None)
            try:
                while chunk := source.read(1 << 20):
                    stream.write(chunk)
            finally:
                stream.close()

    def open_input_stream(self, path: str) -> Any:
        return self._local.open_input_stream(path)

    def open_input_file(self, path: str) -> Any:
        return self._local.open_input_file(path)

    def open_output_stream(self, path: str, metadata: Any) -> Any:
        import pyarrow

        try:
            return pyarrow.PythonFile(_AtomicFile(self, path), mode="w")
        except OSError as exc:
            if _is_full(exc):
                with _LEDGER.lock:
                    _LEDGER.full.append((path, exc))
            raise

    def open_append_stream(self, path: str, metadata: Any) -> Any:
        return self._local.open_append_stream(path, metadata=metadata)

    # ---------------------------------------------------------------- ledger
    def _kind(self, name: str) -> str | None:
        return next((k for k in self.state_kinds if name.startswith(k)), None)

    def _written(self, tmp: str, target: str) -> None:
        """A whole file is written at ``tmp``: put it in place, or hold it back."""
        study_dir, name = os.path.split(target)
        kind = self._kind(name)
        with _LEDGER.lock:
            if kind is None:
                os.replace(tmp, target)
                if name == _RESULT:  # study_dir is the trial's: its parent may be waiting
                    self._commit(os.path.dirname(study_dir))
                return
            pending = _LEDGER.pending.setdefault(study_dir, {})
            old = pending.pop(kind, None)
            if old is not None:
                _unlink(old[0])
            pending[kind] = (tmp, target)
            if kind == _TRIALS:
                _LEDGER.state_seq[study_dir] = next(_LEDGER.seq)
                _LEDGER.needs[study_dir] = _rows_needed(study_dir, tmp)
            self._commit(study_dir)

    def _commit(self, study_dir: str) -> None:
        """Put the held-back run state in place once it is whole and its rows are there."""
        pending = _LEDGER.pending.get(study_dir)
        if not pending or any(k not in pending for k in self.state_kinds):
            return
        needs = _LEDGER.needs.get(study_dir, {})
        for path, marker in list(needs.items()):
            if not _holds(path, marker):
                return
            del needs[path]
        # searchers first: a run state in place always has its searcher's state beside it
        for kind in sorted(pending, key=lambda k: k == _TRIALS):
            tmp, target = pending[kind]
            os.replace(tmp, target)
        del _LEDGER.pending[study_dir]
        seq = _LEDGER.state_seq.get(study_dir, -1)
        waiting = _LEDGER.deletions.get(study_dir, [])
        for _, path in [d for d in waiting if d[0] < seq]:
            with contextlib.suppress(OSError):
                self._local.delete_dir(path)
        _LEDGER.deletions[study_dir] = [d for d in waiting if d[0] >= seq]


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _rows_needed(study_dir: str, state_file: str) -> dict[str, bytes]:
    """Each trial's ``result.json`` with the row it must hold for the run state to
    go in place: the row that reported the trial's newest checkpoint there.

    The checkpoint names are read as bytes out of Ray's pickled checkpoint
    manager (never unpickled); a trial without one restarts from its first
    epoch, whatever its rows.
    """
    try:
        with open(state_file, "rb") as f:
            state = json.loads(f.read().decode("utf-8"))
        needs = {}
        for entry in state["trial_data"]:
            trial, meta = json.loads(entry[0]), json.loads(entry[1])
            manager = meta.get("checkpoint_manager")
            blob = manager.get("value") if isinstance(manager, dict) else None
            names = _CHECKPOINT_NAME.findall(bytes.fromhex(blob)) if isinstance(blob, str) else []
            if names:
                row = b'"checkpoint_dir_name": "' + max(names) + b'"'
                needs[os.path.join(study_dir, trial["relative_logdir"], _RESULT)] = row
        return needs
    except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError):
        return {}  # not Ray's format as known: the rule does not apply


def before_trial_start(trial: Any) -> None:
    """Leave a starting trial exactly the rows it will not report again.

    Called before Ray's loggers open the trial's rows to append to them (they
    come after the study's callbacks). A trial restarted from a checkpoint
    (a retry, or a resume) gets the stored rows back, replacing Ray's local
    copy: when that local copy is further along (the last sync had not
    stored its newest rows yet), it is stored first, so no row is lost; then
    the rows after the checkpoint are cut (:func:`cut_rows_after`). A trial
    starting from its first epoch appends to Ray's local copy, which holds the
    rows of an earlier start when the study is resumed in the same Ray
    session: it is removed.

    Args:
        trial: Ray Tune's ``Trial``.
    """
    checkpoint = trial.checkpoint
    if checkpoint is None:
        for name in (_RESULT, _PROGRESS):
            _unlink(os.path.join(trial.local_path, name))
        return
    trial_dir = trial.storage.trial_fs_path
    if "://" in trial_dir or not os.path.isdir(trial_dir):
        return
    from xsam_contract import atomic_write

    try:
        for name in (_RESULT, _PROGRESS):
            local = _read(os.path.join(trial.local_path, name))
            stored = _read(os.path.join(trial_dir, name))
            if (
                local is not None
                and local.startswith(stored or b"")
                and len(local) > len(stored or b"")
            ):
                atomic_write(os.path.join(trial_dir, name), local[: local.rfind(b"\n") + 1])
        cut_rows_after(trial_dir, os.path.basename(checkpoint.path.rstrip("/")))
    except OSError:
        pass  # a full disk: Ray restores what is stored, as it would without this


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _lines(path: str) -> list[bytes] | None:
    """A file's lines with their ends, or None where it does not exist."""
    try:
        with open(path, "rb") as f:
            return f.read().splitlines(keepends=True)
    except FileNotFoundError:
        return None


def cut_rows_after(trial_dir: str, checkpoint: str) -> bool:
    """Cut the rows a trial's ``result.json`` and ``progress.csv`` hold after the row
    that reported ``checkpoint`` (the trial restarts from there and reports them again).

    Args:
        trial_dir: The trial's directory (local).
        checkpoint: The checkpoint's directory name (``checkpoint_000003``).

    Returns:
        Whether anything was cut (written atomically).
    """
    from xsam_contract import atomic_write

    path = os.path.join(trial_dir, _RESULT)
    lines = _lines(path)
    if lines is None:
        return False
    keep = None
    for i, line in enumerate(lines):
        try:
            if json.loads(line).get("checkpoint_dir_name") == checkpoint:
                keep = i + 1
        except (ValueError, AttributeError):
            break
    if keep is None or keep == len(lines):
        return False
    atomic_write(path, b"".join(lines[:keep]))
    progress = os.path.join(trial_dir, _PROGRESS)
    rows = _lines(progress)
    if rows is None:
        return True
    if len(rows) > keep + 1:  # a header line, then one line per row
        atomic_write(progress, b"".join(rows[: keep + 1]))
    return True


class DurableRows(Callback):
    """Ray Tune callback of every run and resume of a local study: rows exactly once
    when a trial starts (:func:`before_trial_start`), and no retry for a trial that
    the full storage stopped.

    A retry would fail the same way; the queued one is made its last, as
    :class:`study._faults.NoRetryOnBadInput` does for bad input. The run then
    ends in one line (:func:`full_disk_error`).
    """

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """Rows of a starting trial: those it will not report again."""
        before_trial_start(trial)

    def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """The trial failed and is queued for a retry: its last, if the storage was full."""
        from study._faults import trial_exception

        exc = trial_exception(trial)
        cause = getattr(exc, "cause", None) or exc
        if cause is not None and (_is_full(cause) or _FULL_TEXT in str(cause)):
            trial.max_failures = 0


def full_disk_error(results: Any, study_dir: str) -> OSError | None:
    """The error to end a run with when the storage was full during it (a trial's
    checkpoint or Ray's sync failed with ENOSPC/EDQUOT), else None."""
    with _LEDGER.lock:
        found = next((exc for path, exc in _LEDGER.full if _inside(path, study_dir)), None)
    for error in getattr(results, "errors", None) or []:
        cause = getattr(error, "cause", None) or error
        if found is None and (_is_full(cause) or _FULL_TEXT in str(cause)):
            found = cause
    if found is None:
        return None
    reason = " ".join(str(getattr(found, "strerror", None) or found).split())[:120]
    return OSError(
        errno.ENOSPC,
        f"the study stopped, {study_dir} is full ({reason}); every row and checkpoint "
        "written before is kept",
    )
