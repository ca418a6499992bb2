"""Study start-up (issue 14): a small study through `xsam-tune run` against a plain loop.

Shows what a study's fixed cost (imports, Ray's start, the first worker,
teardown) adds to four one-epoch MNIST-1D trials (1-D CNN, batch 128, one
torch thread; sgd and xsam k = 1, seeds 0 and 1; `resources: {cpu: 1}`, so
two trials run side by side on 2 cores). Each run is a fresh process, timed
from its start to its exit, imports included:

1. plain: a Python process that loads the study file and runs its four trial
   configs (`study.space.expand_grid`) one after another through
   `trainables.loop.Trial`, no Ray;
2. cold: `xsam-tune run STUDY -q`, which starts its own Ray instance (the
   default);
3. warm: the same command while a Ray instance kept by `xsam-tune ray start`
   runs (started once before the rounds, its start timed apart, stopped at
   the end); the run joins it and leaves it running.

The runs are interleaved (one of each per round, the order rotated each
round, so a change of machine load hits every kind alike); the verdict is
the median over rounds of each round's study/plain ratio (target: at most
1.5). The study runs write a timing record (`$XSAM_TUNE_TIMING`,
:mod:`study._timing`) that splits their wall time: process start → Ray up
(imports, `ray.init`), → the Tuner's start (Ray Tune's import, the study
record, the Tuner), → the first trial started (its actor up in a worker that
has the trial's imports: the time to the first trial), → its first row (its
data and one epoch, the row's way to the driver), → the last row, → exit
(teardown: the Tuner's last writes, `ray.shutdown`, the closing table).
The dataset is generated once before the rounds, so every run reads it
from disk. Cold and warm runs use
separate private Ray temp directories (`$XSAM_TUNE_RAY_TMP`), so a cold run
never finds the kept instance; the kept instance idles (a few percent of a
core) while the plain and cold runs of the rounds run. The load average
before and after is printed and saved.

    python benchmarks/study_start.py                  # 3 rounds, the verdict table
    python benchmarks/study_start.py --repeat 5 --out study_start.json
    python benchmarks/study_start.py --smoke-test     # 2 trials, 1 round, for the tests
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import REPO_ROOT, loadavg, markdown_table, median, write_json

TARGET_RATIO = 1.5
#: Phases of the timing record, in order (study._timing), and their labels.
PHASES = (
    ("ray_up", "Ray up"),
    ("fit", "Tuner start"),
    ("first_trial", "first trial started"),
    ("first_row", "first trial's first row"),
    ("last_row", "last row"),
)
#: The plain loop: the study's trial configs through trainables.loop.Trial, imports included.
PLAIN = """\
import sys
from study.config import load_study
from study.space import expand_grid
from trainables.loop import Trial

for config in expand_grid(load_study(sys.argv[1])):
    for _row in Trial(config).rows():
        pass
"""


def _study(data_dir: Path, storage: Path, trials: int) -> dict[str, Any]:
    return {
        "name": "start",
        "trial": {
            "dataset": "mnist1d",
            "model": "cnn1d",
            "epochs": 1,
            "batch_size": 128,
            "lr": 0.05,
            "rho_max": 0.05,
            "threads": 1,
            "data_dir": str(data_dir),
        },
        "space": {
            "optimizer": {"grid": ["sgd", "xsam"] if trials >= 4 else ["sgd"]},
            "seed": {"grid": [0, 1]},
        },
        "search": {"algorithm": "grid"},
        "metric": {"name": "test_acc", "mode": "max"},
        "scheduler": {"name": "none"},
        "resources": {"cpu": 1, "gpu": 0},
        "storage": str(storage),
    }


def _xsam_tune() -> list[str]:
    """The `xsam-tune` script next to this interpreter, else `python -m study.cli`."""
    script = Path(sys.executable).parent / "xsam-tune"
    return [str(script)] if script.exists() else [sys.executable, "-m", "study.cli"]


def _run(argv: list[str], env: dict[str, str], what: str) -> float:
    """Wall seconds of one process, from its start to its exit; exits on failure."""
    start = time.time()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=REPO_ROOT)
    elapsed = time.time() - start
    if done.returncode != 0:
        raise SystemExit(f"{what} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return elapsed


def _study_run(cli: list[str], study: Path, env: dict[str, str], name: str, base: Path) -> dict:
    """One `xsam-tune run`: its wall time and phases (seconds from the process start)."""
    record = base / f"timing-{name}.jsonl"
    env = {**env, "XSAM_TUNE_TIMING": str(record)}
    start = time.time()
    wall = _run([*cli, "run", str(study), "-q", "--name", name], env, f"xsam-tune run ({name})")
    marks: dict[str, Any] = {}
    for line in record.read_text().splitlines():
        entry = json.loads(line)
        marks[entry["phase"]] = entry
    missing = [p for p, _ in PHASES if p not in marks]
    if missing:
        raise SystemExit(f"{name}: the timing record lacks {missing}")
    phases = {p: marks[p]["time"] - start for p, _ in PHASES}
    phases["exit"] = wall
    return {"wall": wall, "phases": phases, "how": marks["ray_up"].get("how")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="rounds (3)")
    parser.add_argument("--modes", default="cold,warm", help="study runs to time (cold,warm)")
    parser.add_argument("--out", default="study_start.json", help="JSON results file")
    parser.add_argument("--smoke-test", action="store_true", help="2 trials, 1 round")
    args = parser.parse_args()
    repeat = 1 if args.smoke_test else args.repeat
    trials = 2 if args.smoke_test else 4
    modes = [m for m in args.modes.split(",") if m]
    if not set(modes) <= {"cold", "warm"}:
        raise SystemExit(f"--modes: got {args.modes!r}, allowed: cold, warm (comma-separated)")

    # Short: Ray puts Unix sockets under the temp dirs (108-byte path limit).
    base = Path(tempfile.mkdtemp(prefix="xss-", dir="/tmp"))
    cli = _xsam_tune()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])))
    envs = {"plain": env}
    for mode in ("cold", "warm"):
        envs[mode] = {**env, "XSAM_TUNE_RAY_TMP": str(base / f"ray-{mode}")}
    data_dir, study = base / "data", base / "study.yaml"
    study.write_text(json.dumps(_study(data_dir, base / "studies", trials)))  # JSON is YAML
    kept_start = None
    try:
        # The dataset once, before any timing: every run reads it from disk.
        _run(
            [
                sys.executable,
                "-c",
                f"from trainables.data import load_dataset; "
                f"load_dataset({{'dataset': 'mnist1d', 'data_dir': {str(data_dir)!r}}})",
            ],
            env,
            "generating mnist1d",
        )
        if "warm" in modes:
            kept_start = _run([*cli, "ray", "start"], envs["warm"], "xsam-tune ray start")
        load_before = loadavg()
        kinds = ["plain", *modes]
        walls: dict[str, list[float]] = {k: [] for k in kinds}
        runs: dict[str, list[dict]] = {m: [] for m in modes}
        for i in range(repeat):
            order = kinds[i % len(kinds) :] + kinds[: i % len(kinds)]
            for kind in order:
                if kind == "plain":
                    argv = [sys.executable, "-c", PLAIN, str(study)]
                    walls[kind].append(_run(argv, envs["plain"], "plain loop"))
                else:
                    run = _study_run(cli, study, envs[kind], f"{kind}{i}", base)
                    if run["how"] != ("kept" if kind == "warm" else "started"):
                        raise SystemExit(f"{kind} run {i}: Ray was {run['how']!r}")
                    runs[kind].append(run)
                    walls[kind].append(run["wall"])
                print(f"round {i + 1}/{repeat} {kind}: {walls[kind][-1]:.2f} s", flush=True)
        load_after = loadavg()
    finally:
        if kept_start is not None:
            subprocess.run([*cli, "ray", "stop"], env=envs["warm"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)

    print(f"\n{trials} one-epoch MNIST-1D trials, {repeat} interleaved round(s)")
    print(f"load average before: {load_before}")
    print(f"load average after:  {load_after}")
    if kept_start is not None:
        print(f"`xsam-tune ray start` (once, before the rounds): {kept_start:.2f} s")
    print()
    rows = [["plain loop", f"{median(walls['plain']):.2f}", _spread(walls["plain"]), "", ""]]
    verdict: dict[str, Any] = {}
    for mode in modes:
        ratios = [s / p for s, p in zip(walls[mode], walls["plain"], strict=True)]
        ratio = median(ratios)
        verdict[mode] = {"ratio": ratio, "ratios": ratios, "met": ratio <= TARGET_RATIO}
        rows.append(
            [
                f"`xsam-tune run`, {mode} ({'own Ray' if mode == 'cold' else 'kept Ray'})",
                f"{median(walls[mode]):.2f}",
                _spread(walls[mode]),
                f"{ratio:.2f}",
                "yes" if ratio <= TARGET_RATIO else "no",
            ]
        )
    print(
        markdown_table(
            ["run", "median wall s", "min–max s", "ratio to plain (median)", f"≤ {TARGET_RATIO}"],
            rows,
        )
    )
    print()
    phase_rows = []
    for mode in modes:
        cells = [mode]
        prev = [0.0] * len(runs[mode])
        for phase, _ in (*PHASES, ("exit", "exit")):
            at = [r["phases"][phase] for r in runs[mode]]
            step = [a - b for a, b in zip(at, prev, strict=True)]
            cells.append(f"{median(at):.2f} (+{median(step):.2f})")
            prev = at
        phase_rows.append(cells)
    print("study phases, seconds from the process start (median; + the step from the previous):")
    print(
        markdown_table(
            ["run", *[label for _, label in PHASES], "exit (teardown = + step)"], phase_rows
        )
    )
    write_json(
        args.out,
        {
            "trials": trials,
            "repeat": repeat,
            "load_before": load_before,
            "load_after": load_after,
            "kept_start_s": kept_start,
            "walls": walls,
            "runs": runs,
            "verdict": verdict,
            "target_ratio": TARGET_RATIO,
        },
    )


def _spread(values: list[float]) -> str:
    return f"{min(values):.2f}–{max(values):.2f}"


if __name__ == "__main__":
    main()
