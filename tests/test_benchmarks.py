"""Every benchmark keeps running: its `--smoke-test` mode exits 0 and prints its tables.

The numbers themselves are not checked here (timed tests on shared machines
are noise); they live in docs/benchmarks.md.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
BENCHMARKS = sorted(
    p.name for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_")
)


def test_every_benchmark_is_listed() -> None:
    assert {
        "optimizer_overhead.py",
        "loop_overhead.py",
        "epoch_overhead.py",
        "authors_step.py",
        "study_start.py",
    } <= set(BENCHMARKS)


@pytest.mark.slow
@pytest.mark.parametrize("script", BENCHMARKS)
def test_smoke(script: str, tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--smoke-test", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "|---" in done.stdout  # a Markdown table was printed
    assert out.exists() and out.stat().st_size > 0
