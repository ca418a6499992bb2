"""Ray's temporary directory for an embedded instance: private to the user, kept tidy.

Ray puts its sockets, logs and a ``ray_current_cluster`` file under its temp
directory. A directory others can write (the old ``xsam-ray-<uid>`` was mode
0777 without the sticky bit) lets anyone plant files there that break or
redirect every run, so the directory is created mode 0700 and checked on
every start: a directory, not a link, owned by this user, no access for
group or others. Old ``session_*`` directories (one per Ray start, with
every log) are removed once no file in their ``logs`` changed for
:data:`KEEP_SESSIONS_S`.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time

from study._errors import StudyLaunchError

__all__ = ["KEEP_SESSIONS_S", "clean_old_sessions", "private_temp_dir"]

#: A session whose logs have been quiet this long is over (Ray writes its logs while it runs).
KEEP_SESSIONS_S = 2 * 24 * 3600


def private_temp_dir() -> str:
    """The user's private Ray temp directory (``$XSAM_TUNE_RAY_TMP`` wins), made and checked.

    Raises:
        StudyLaunchError: The directory exists but is not private to this user
            (another owner, a link, or a file); it is left alone.
    """
    uid = os.getuid() if hasattr(os, "getuid") else 0
    # Short on purpose: Ray puts Unix sockets under it (108-byte path limit).
    path = os.environ.get("XSAM_TUNE_RAY_TMP") or os.path.join(
        tempfile.gettempdir(), f"xsam-ray-{uid}"
    )
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise StudyLaunchError(f"Ray temp directory {path}: {exc.strerror}") from None
    info = os.lstat(path)
    fix = "remove it, or set XSAM_TUNE_RAY_TMP to a directory of your own"
    if not stat.S_ISDIR(info.st_mode):
        raise StudyLaunchError(f"Ray temp directory {path} is not a directory (a link?): {fix}")
    if info.st_uid != uid:
        raise StudyLaunchError(
            f"Ray temp directory {path} belongs to user id {info.st_uid}, not you ({uid}): {fix}"
        )
    if stat.S_IMODE(info.st_mode) & 0o077:
        # Ours but open to others (made by an older version): close it, and drop
        # what others may have planted at its top (Ray recreates what it needs).
        os.chmod(path, 0o700)
        _remove(os.path.join(path, "ray_current_cluster"))
    clean_old_sessions(path)
    return path


def clean_old_sessions(path: str, now: float | None = None) -> list[str]:
    """Remove the ``session_*`` directories under ``path`` whose logs are older than
    :data:`KEEP_SESSIONS_S` (never the one ``session_latest`` points to).

    Returns:
        The directories removed.
    """
    now = time.time() if now is None else now
    latest = os.path.realpath(os.path.join(path, "session_latest"))
    removed = []
    try:
        names = os.listdir(path)
    except OSError:
        return removed
    for name in names:
        session = os.path.join(path, name)
        if not name.startswith("session_") or name == "session_latest":
            continue
        if os.path.islink(session) or os.path.realpath(session) == latest:
            continue
        if now - _last_change(session) > KEEP_SESSIONS_S:
            shutil.rmtree(session, ignore_errors=True)
            removed.append(session)
    return removed


def _last_change(session: str) -> float:
    """The newest modification time of a session directory and its log files."""
    newest = 0.0
    for directory in (session, os.path.join(session, "logs")):
        try:
            newest = max(newest, os.stat(directory).st_mtime)
            with os.scandir(directory) as entries:
                for entry in entries:
                    newest = max(newest, entry.stat(follow_symlinks=False).st_mtime)
        except OSError:
            continue
    return newest


def _remove(path: str) -> None:
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass
