"""Ray's temp directory for an embedded instance: private (0700, checked) and tidy."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from study import StudyLaunchError
from study._cluster import ray_temp_dir
from study._ray_tmp import KEEP_SESSIONS_S, clean_old_sessions, private_temp_dir


@pytest.fixture
def tmp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("XSAM_TUNE_RAY_TMP", raising=False)
    monkeypatch.setattr("tempfile.gettempdir", lambda: str(tmp_path))
    return tmp_path


def _mode(path: str | Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_the_launcher_uses_a_new_private_directory(tmp_root: Path) -> None:
    path = ray_temp_dir()
    assert path == str(tmp_root / f"xsam-ray-{os.getuid()}")
    assert _mode(path) == 0o700 and os.lstat(path).st_uid == os.getuid()


def test_an_open_directory_of_ours_is_closed_and_its_planted_file_dropped(tmp_root: Path) -> None:
    path = tmp_root / f"xsam-ray-{os.getuid()}"
    path.mkdir()
    os.chmod(path, 0o777)  # as an older version left it
    (path / "ray_current_cluster").write_text("10.0.0.66:6379")
    assert private_temp_dir() == str(path)
    assert _mode(path) == 0o700 and not (path / "ray_current_cluster").exists()


def test_a_directory_of_another_user_is_refused(tmp_root: Path, monkeypatch) -> None:
    path = tmp_root / f"xsam-ray-{os.getuid() + 1}"
    path.mkdir()
    monkeypatch.setattr(os, "getuid", lambda: os.lstat(path).st_uid + 1)
    with pytest.raises(StudyLaunchError, match=f"{path} belongs to user id"):
        private_temp_dir()


def test_a_link_is_refused(tmp_root: Path) -> None:
    target = tmp_root / "elsewhere"
    target.mkdir()
    (tmp_root / f"xsam-ray-{os.getuid()}").symlink_to(target)
    with pytest.raises(StudyLaunchError, match="not a directory"):
        private_temp_dir()


def test_the_environment_variable_wins_and_is_checked_too(tmp_path: Path, monkeypatch) -> None:
    mine = tmp_path / "mine"
    monkeypatch.setenv("XSAM_TUNE_RAY_TMP", str(mine))
    assert private_temp_dir() == str(mine) and _mode(mine) == 0o700


def test_old_sessions_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    now = 1_000_000_000.0
    old_time = now - KEEP_SESSIONS_S - 60
    sessions = {}
    for name in ("session_old", "session_recent_log", "session_latest_target"):
        logs = tmp_path / name / "logs"
        logs.mkdir(parents=True)
        (logs / "raylet.out").write_text("x")
        for p in (logs / "raylet.out", logs, tmp_path / name):
            os.utime(p, (old_time, old_time))
        sessions[name] = tmp_path / name
    os.utime(sessions["session_recent_log"] / "logs" / "raylet.out", (now, now))
    (tmp_path / "session_latest").symlink_to(sessions["session_latest_target"])
    removed = clean_old_sessions(str(tmp_path), now=now)
    assert removed == [str(sessions["session_old"])]
    assert not sessions["session_old"].exists()
    assert sessions["session_recent_log"].exists() and sessions["session_latest_target"].exists()
