"""``last-study`` is for people, kept per storage root; study directories are claimed
atomically, so two studies started at once into one storage get two directories."""

from __future__ import annotations

from pathlib import Path

import pytest

from study._errors import StudyLaunchError
from study._record import claim_run_name
from study._state import last_study, record_last_study
from study.cli import main


def test_last_study_per_storage(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    record_last_study(str(a / "s1"))
    record_last_study(str(b / "s2"))
    assert last_study() == str(b / "s2")  # the last one that ended, anywhere
    assert last_study(str(a)) == str(a / "s1")
    assert last_study(str(tmp_path / "c")) is None
    assert main(["last-study", "--storage", str(a)]) == 0
    assert capsys.readouterr().out == f"{a / 's1'}\n"
    assert main(["last-study", "--storage", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"xsam-tune: error: no study has been run from this machine under {tmp_path / 'c'} yet"
    ]


def test_claimed_run_names_differ(tmp_path: Path) -> None:
    root = str(tmp_path / "studies")
    first = claim_run_name(root, None, "demo")
    second = claim_run_name(root, None, "demo")  # "demo" is taken now: a dated name
    third = claim_run_name(root, None, "demo")  # the same second: a numbered one
    assert first == "demo" and second.startswith("demo-") and third != second
    assert all((tmp_path / "studies" / n).is_dir() for n in (first, second, third))
    with pytest.raises(StudyLaunchError, match="exists already"):
        claim_run_name(root, "demo", "demo")
