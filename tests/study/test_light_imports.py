"""Validating study files and starting the CLI import no heavy library.

Each check runs in a fresh interpreter: this test process has long imported
torch and Ray through other tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "ray", "pandas", "seaborn", "scipy", "optuna", "matplotlib")
STUDY_FILES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs").rglob("*.yaml"))


def _run(code: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_every_config_file_validates_without_heavy_imports() -> None:
    assert any("/paper/" in f for f in STUDY_FILES), "configs/paper/ holds study files"
    code = f"""
import json, sys
import study
from study.space import describe_space, count_trials
names = []
for path in {STUDY_FILES!r}:
    cfg = study.load_study(path)
    describe_space(cfg)
    count_trials(cfg)
    names.append(cfg.name)
print(json.dumps({{"names": names, "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""
    result = _run(code)
    assert len(result["names"]) == len(STUDY_FILES)
    assert result["heavy"] == []


@pytest.mark.parametrize(
    "argv", [["--help"], ["run", "configs/quickstart.yaml", "--dry-run"], ["last-study"]]
)
def test_cli_verbs_without_heavy_work_import_nothing_heavy(argv: list[str]) -> None:
    code = f"""
import contextlib, io, json, sys
from study.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    main({argv!r})
print(json.dumps({{"heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""
    assert _run(code)["heavy"] == []
