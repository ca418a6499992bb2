"""The HTML report: self-contained, complete, and every figure loads in a browser."""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import analysis
from analysis.cli import main

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def report(study_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """The tiny study's report, written once through the CLI: (html, md, stdout)."""
    out = tmp_path_factory.mktemp("report")
    capture = tmp_path_factory.mktemp("stdout") / "out.txt"
    with capture.open("w") as f, contextlib.redirect_stdout(f):
        assert main(["report", str(study_dir), "-o", str(out)]) == 0
    return out / "report.html", out / "report.md", capture.read_text()


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, installed with apt-get where missing; skip if that fails."""
    for name in ("chromium", "chromium-browser"):
        exe = shutil.which(name)
        if exe:
            return exe
    if not shutil.which("apt-get"):
        pytest.skip("chromium is missing and there is no apt-get to install it")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    if sudo and not shutil.which("sudo"):
        pytest.skip("chromium is missing and installing it needs root (no sudo)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [*sudo, "apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    result = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
    if result.returncode != 0:  # stale package lists: refresh once and retry
        subprocess.run([*sudo, "apt-get", "update"], capture_output=True, env=env, timeout=600)
        result = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
    exe = shutil.which("chromium")
    if result.returncode != 0 or exe is None:
        last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        pytest.skip(f"chromium is missing and `apt-get install chromium` failed: {last[0]}")
    return exe


def _dom(chromium: str, page: Path, tmp_path: Path) -> str:
    """The page's DOM after its scripts ran, from headless Chromium."""
    cmd = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        page.as_uri(),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def _check(dom: str) -> tuple[int, int, list[str]]:
    box = re.search(r'<p id="figure-check"[^>]*>', dom)
    assert box, "the report's figure check did not run"
    total = int(re.search(r'data-total="(\d+)"', box.group(0)).group(1))
    loaded = int(re.search(r'data-loaded="(\d+)"', box.group(0)).group(1))
    flags = re.findall(r'<img class="figure"[^>]*data-loaded="(\w+)"', dom)
    return total, loaded, flags


def test_report_is_complete_and_self_contained(
    report: tuple[Path, Path, str], study_dir: Path
) -> None:
    html_path, md_path, stdout = report
    assert stdout.splitlines() == [f"report: {html_path}", f"summary: {md_path}"]
    text = html_path.read_text()
    images = re.findall(
        r'<img class="figure" alt="(\w+) figure" src="data:image/png;base64,([^"]+)"', text
    )
    assert [kind for kind, _ in images] == list(analysis.PLOTS)
    for _, data in images:
        assert base64.b64decode(data).startswith(b"\x89PNG")
    # Nothing is fetched from elsewhere.
    assert not re.search(r'(src|href)="(https?:)?//', text)
    # Tables, the study file, versions and hardware are there.
    layout = analysis.degradation_layout(analysis.degradation_table(study_dir))
    for cell in layout.to_numpy().ravel():
        assert cell in text
    assert (study_dir / "study.yaml").read_text().splitlines()[0] in text
    for needle in (
        "Versions",
        "Hardware",
        "pandas (this report)",
        "ray (study run)",
        "Parameter importances",
        "tinyimagenet is not in data directory",  # the errored trial's DatasetError
        "cpus",
        "host (study driver)",
    ):
        assert needle in text, needle
    md = md_path.read_text()
    assert md.startswith("# tiny") and "| dataset | optimizer | k=– | k=1 | k=2 |" in md
    assert "10 finished, 1 diverged, 1 errored" in md
    assert str(html_path) in md


def test_every_figure_loads_in_chromium(
    report: tuple[Path, Path, str], chromium: str, tmp_path: Path
) -> None:
    html_path = report[0]
    total, loaded, flags = _check(_dom(chromium, html_path, tmp_path))
    assert total == len(analysis.PLOTS) and loaded == total
    assert flags == ["yes"] * len(analysis.PLOTS)
    # The check is not vacuous: a figure with broken data is reported as not loaded.
    broken = tmp_path / "broken.html"
    text = html_path.read_text()
    broken.write_text(text.replace("data:image/png;base64,iVBOR", "data:image/png;base64,AAAA", 1))
    total, loaded, flags = _check(_dom(chromium, broken, tmp_path))
    kinds = len(analysis.PLOTS)
    assert (total, loaded) == (kinds, kinds - 1) and flags.count("no") == 1
