"""``xsam-tune results`` without pandas: the cached summary prints what the pandas path prints.

Every test runs on a copy of the session's tiny study (12 trials: finished,
diverged, errored; missing values, text, categories, dates). The pandas path
is forced by turning the summary path off (``_results_from_summary`` → False);
the fast path is proven taken by making ``analysis._results.load`` raise.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

import analysis
import analysis._results
import analysis.cli
from analysis._cache import CACHE_DIR
from analysis._summary import read_summary
from analysis.cli import main

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[2]

# Option sets the fast path serves (the study directory comes first).
OPTION_SETS = [
    [],
    ["--sort", "objective"],
    ["--sort=-objective,seed"],
    ["--sort", "optimizer,steps", "--desc"],
    ["--sort", "status"],
    ["--sort", "best_epoch", "--desc"],
    ["--sort", "error,-last_update"],
    ["--sort", "diagnostics,seed", "--columns", "trial_id", "diagnostics", "seed"],
    ["--columns", "trial_id", "error", "final_test_acc", "refresh", "lr"],
    ["--columns", "trial_id,status,rho", "--sort=-rho"],
    ["--stale-after", "5"],
]


def _copy(study_dir: Path, dst: Path) -> Path:
    """A copy of the study (modification times kept), its cache warmed by a first call."""
    shutil.copytree(study_dir, dst)
    shutil.rmtree(dst / CACHE_DIR, ignore_errors=True)
    assert main(["results", str(dst)]) == 0  # cold: pandas, writes the cache
    return dst


def _summary_files(study: Path) -> list[Path]:
    return sorted((study / CACHE_DIR).glob("summary-*.json"))


@pytest.fixture(scope="module")
def warm(study_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _copy(study_dir, tmp_path_factory.mktemp("summary") / "tiny")


def _no_load(*args: object, **kwargs: object) -> None:
    raise AssertionError("the pandas path was taken")


Run = Callable[..., str]


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Run:
    """``run(argv, path, study=None)``: stdout and stderr of ``results`` through
    ``path``: ``fast`` (pandas' loader raises if called), ``pandas`` (summary
    off; ``study``: what the loader returns) or ``either`` (as a user runs it)."""

    def call(argv: list[str], path: str, study: analysis.Study | None = None) -> str:
        capsys.readouterr()
        with monkeypatch.context() as m:
            if path == "fast":
                m.setattr(analysis._results, "load", _no_load)
            elif path == "pandas":
                m.setattr(analysis.cli, "_results_from_summary", lambda args: False)
                if study is not None:
                    m.setattr(analysis._results, "load", lambda *a, **k: study)
            assert main(["results", *argv]) == 0
        got = capsys.readouterr()
        return got.out + "\n--stderr--\n" + got.err

    return call


@pytest.mark.parametrize("options", OPTION_SETS, ids=lambda o: " ".join(o) or "default")
def test_fast_path_prints_what_pandas_prints(options: list[str], warm: Path, run: Run) -> None:
    argv = [str(warm), *options]
    fast, slow = run(argv, "fast"), run(argv, "pandas")
    assert fast == slow
    assert len(slow.split("\n--stderr--\n")[0].splitlines()) == 1 + 12  # header + trials


def test_fast_path_writes_the_same_file(warm: Path, tmp_path: Path, run: Run) -> None:
    out = tmp_path / "deep" / "table.txt"
    run([str(warm), "--sort=-time_total_s", "-o", str(out)], "fast")
    fast = out.read_bytes()
    out.unlink()
    run([str(warm), "--sort=-time_total_s", "-o", str(out)], "pandas")
    assert fast == out.read_bytes() and fast.count(b"\n") == 13


def test_every_column_sorts_and_shows_as_pandas_does(warm: Path, run: Run) -> None:
    """Each column alone, both directions: every dtype, ties, missing values, percent."""
    study = analysis.load(warm)  # read once for the pandas side
    columns = list(study.trials.columns)
    assert {"status", "last_update", "error", "best_test_acc", "augment"} <= set(columns)
    for col in columns:
        for sort in (col, f"-{col}"):
            shown = dict.fromkeys(["trial_id", col])  # each once
            argv = [str(warm), f"--sort={sort}", "--columns", *shown]
            assert run(argv, "fast") == run(argv, "pandas", study), sort


def test_fast_path_imports_no_pandas(warm: Path, run: Run) -> None:
    script = textwrap.dedent(
        f"""
        import json, sys
        from study.cli import main
        code = main(["results", {str(warm)!r}])
        heavy = sorted(m for m in ("pandas", "numpy", "pyarrow") if m in sys.modules)
        print(json.dumps({{"code": code, "heavy": heavy}}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, check=True
    )
    *table, last = done.stdout.splitlines()
    assert json.loads(last) == {"code": 0, "heavy": []}
    slow = run([str(warm)], "pandas").split("\n--stderr--\n")[0]
    assert "\n".join(table) + "\n" == slow


def _new_row(study: Path) -> str:
    """Append one more epoch to a finished trial (its objective changes)."""
    trial = next(d for d in sorted(study.iterdir()) if (d / "result.json").is_file())
    lines = (trial / "result.json").read_text().splitlines()
    row = json.loads(lines[-1])
    row["epoch"] += 1
    row["training_iteration"] += 1
    row["test_acc"] = 0.123456
    with (trial / "result.json").open("a") as fh:
        fh.write(json.dumps(row) + "\n")
    return str(row["trial_id"])


def _new_trial(study: Path) -> str:
    """A 13th trial: a finished trial's folder copied under a new trial id."""
    src = next(d for d in sorted(study.iterdir()) if (d / "params.json").is_file())
    old = json.loads((src / "result.json").read_text().splitlines()[-1])["trial_id"]
    dst = study / "fffffff0_copy"
    dst.mkdir()
    shutil.copy2(src / "params.json", dst / "params.json")
    text = (src / "result.json").read_text().replace(f'"{old}"', '"fffffff0"')
    (dst / "result.json").write_text(text)
    return "fffffff0"


@pytest.mark.parametrize("change", [_new_row, _new_trial], ids=["new row", "new trial"])
def test_changed_study_is_not_read_from_the_old_summary(
    change: Callable[[Path], str],
    study_dir: Path,
    tmp_path: Path,
    run: Run,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    study = _copy(study_dir, tmp_path / "tiny")
    before = run([str(study)], "fast")
    (old,) = _summary_files(study)
    trial_id = change(study)
    loads = []
    real_load = analysis._results.load
    monkeypatch.setattr(
        analysis._results, "load", lambda *a, **k: loads.append(a) or real_load(*a, **k)
    )
    capsys_out = run([str(study)], "either")
    monkeypatch.undo()
    assert len(loads) == 1  # the old summary did not answer
    assert capsys_out != before and trial_id in capsys_out
    assert capsys_out == run([str(study)], "pandas")
    (new,) = _summary_files(study)  # rewritten under the new fingerprint, the old one gone
    assert new != old
    assert run([str(study)], "fast") == capsys_out


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text[: len(text) // 2],  # torn
        lambda text: "not json",
        lambda text: text.replace('"format": 1', '"format": 99'),
        lambda text: text.replace('"rows": 12', '"rows": 11'),
        lambda text: text.replace("finished", "finished!", 1),  # a line of another width
        lambda text: json.dumps({**json.loads(text), "keys": {}}),
    ],
    ids=["torn", "garbage", "format", "rows", "width", "no keys"],
)
def test_damaged_summary_falls_back_to_pandas(
    damage: Callable[[str], str],
    study_dir: Path,
    tmp_path: Path,
    run: Run,
) -> None:
    study = _copy(study_dir, tmp_path / "tiny")
    want = run([str(study), "--sort", "objective"], "pandas")
    (path,) = _summary_files(study)
    text = path.read_text()
    path.write_text(damage(text))
    assert read_summary(study, path.stem.split("-", 1)[1]) is None
    with pytest.raises(AssertionError, match="pandas path was taken"):
        run([str(study), "--sort", "objective"], "fast")
    assert run([str(study), "--sort", "objective"], "either") == want
    assert path.read_text() == text  # the pandas path wrote it again
    assert run([str(study), "--sort", "objective"], "fast") == want


def test_study_without_trials(study_dir: Path, tmp_path: Path, run: Run) -> None:
    study = tmp_path / "empty"
    study.mkdir()
    shutil.copy2(study_dir / "study.json", study / "study.json")
    assert run([str(study)], "pandas") == "(no rows)\n\n--stderr--\n"
    assert run([str(study)], "fast") == "(no rows)\n\n--stderr--\n"
