"""CLI start-up (issue 8): wall time of `xsam-tune` commands that do no study work.

Each command runs as a fresh process (the `xsam-tune` script of this
interpreter's environment, as a user types it) `--repeat` times, interleaved
(one run of each command per round, so a change of machine load hits every
command alike); the table shows the median, min and max wall time against
the issue's target. The load average before and after is printed and saved:
on a shared machine the numbers move with whatever else runs.

Commands:

1. `xsam-tune --help` (target 0.5 s): parser only, analysis verbs registered;
2. `xsam-tune run configs/quickstart.yaml --dry-run` (target 1.0 s): read and
   validate the study file, print its trials; no Ray, no torch;
3. `xsam-tune results DIR` (target 1.0 s) on a study directory given with
   `--study` (default: `xsam-tune last-study`); skipped when there is none.
   Timed warm: the warm-up run is the study's first `results` after any
   change, which reads the JSON files with pandas and writes the analysis
   cache with its pandas-free summary (`<study>/.cache/analysis/`); the timed
   runs print the trials table from that summary. The warm-up's own time is
   printed too (the cold figure, when the cache was not fresh before), and
   whether the summary is there (without it every run takes the pandas path).
4. `xsam-tune results DIR --format csv` (no target): the same study through
   the pandas path (the summary serves the text table only), for the ratio.

Beside the seconds, each row's median as a multiple of `--help`'s, measured
in the same rounds: on a loaded machine the seconds grow, the ratios much less.

Usage::

    python benchmarks/cli_startup.py [--repeat 5] [--study DIR] [--out FILE]
    python benchmarks/cli_startup.py --smoke-test      # one round, for the tests
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import REPO_ROOT, loadavg, markdown_table, median, write_json


def _xsam_tune() -> list[str]:
    """The `xsam-tune` script next to this interpreter, else `python -m study.cli`."""
    script = Path(sys.executable).parent / "xsam-tune"
    if script.exists():
        return [str(script)]
    found = shutil.which("xsam-tune")
    return [found] if found else [sys.executable, "-m", "study.cli"]


def _last_study(cli: list[str]) -> str | None:
    done = subprocess.run([*cli, "last-study"], capture_output=True, text=True, cwd=REPO_ROOT)
    path = done.stdout.strip()
    return path if done.returncode == 0 and path and os.path.isdir(path) else None


def _time(argv: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO_ROOT)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return elapsed


def _summaries(study: str) -> list[str]:
    """The study's cached trials-table summaries (analysis/_summary.py)."""
    return sorted(p.name for p in (Path(study) / ".cache" / "analysis").glob("summary-*.json"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs of each command (5)")
    parser.add_argument("--study", help="study directory for `results` (default: last-study)")
    parser.add_argument("--out", default="cli_startup.json", help="JSON results file")
    parser.add_argument("--smoke-test", action="store_true", help="one run of each command")
    args = parser.parse_args()
    repeat = 1 if args.smoke_test else args.repeat

    cli = _xsam_tune()
    quickstart = str(REPO_ROOT / "configs" / "quickstart.yaml")
    commands: list[tuple[str, list[str], float | None]] = [
        ("xsam-tune --help", [*cli, "--help"], 0.5),
        (
            "xsam-tune run configs/quickstart.yaml --dry-run",
            [*cli, "run", quickstart, "--dry-run"],
            1.0,
        ),
    ]
    study = args.study or _last_study(cli)
    if study:
        commands.append(("xsam-tune results DIR", [*cli, "results", study], 1.0))
        csv = [*cli, "results", study, "--format", "csv"]
        commands.append(("xsam-tune results DIR --format csv", csv, None))

    load_before = loadavg()
    summaries_before = _summaries(study) if study else []
    first: dict[str, float] = {}
    for name, argv, _ in commands:  # warm the file cache: the first run reads .pyc files from disk
        first[name] = _time(argv)
    summaries = _summaries(study) if study else []
    times: dict[str, list[float]] = {name: [] for name, _, _ in commands}
    for _ in range(repeat):
        for name, argv, _ in commands:
            times[name].append(_time(argv))
    load_after = loadavg()

    rows = []
    help_median = median(times["xsam-tune --help"])
    for name, _, target in commands:
        m = median(times[name])
        rows.append(
            [
                f"`{name}`",
                f"{m:.3f}",
                f"{min(times[name]):.3f}",
                f"{max(times[name]):.3f}",
                f"{m / help_median:.2f}",
                "–" if target is None else f"{target:.1f}",
                "–" if target is None else "yes" if m <= target else "no",
            ]
        )
    print(f"runs per command: {repeat} (interleaved, after one warm-up run each)")
    print(f"load average before: {load_before}")
    print(f"load average after:  {load_after}")
    if not study:
        print("`xsam-tune results DIR` skipped: no study directory (pass --study DIR)")
    else:
        print(f"study for `results`: {study}")
        fresh = "was fresh" if summaries and summaries == summaries_before else "was written"
        print(
            f"`results` warm-up (first) run: {first['xsam-tune results DIR']:.3f} s; "
            f"analysis cache summary {fresh}: {', '.join(summaries) or 'none'}"
        )
        if not summaries:
            print("WARNING: no summary: the timed `results` runs took the pandas path")
    print()
    print(
        markdown_table(
            ["command", "median s", "min s", "max s", "× --help", "target s", "within target"],
            rows,
        )
    )
    write_json(
        args.out,
        {
            "repeat": repeat,
            "load_before": load_before,
            "load_after": load_after,
            "study": study,
            "first_run_s": first,
            "summary_before": summaries_before,
            "summary_after": summaries,
            "commands": {
                name: {"argv": argv, "seconds": times[name], "target_s": target}
                for name, argv, target in commands
            },
        },
    )


if __name__ == "__main__":
    main()
