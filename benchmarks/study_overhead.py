"""Study overhead (issue 4): the quickstart's trials through Ray Tune against a plain loop.

Shows what running a study through the study layer costs over running the
same trials by hand. The trials are those of `configs/quickstart.yaml`
(`study.config.load_study` + `study.space.expand_grid`, overrides applied),
run three ways:

1. plain: every trial config, one after another in this process, through
   `trainables.loop.Trial` (construction, data, all epochs), each timed with
   a wall clock; no Ray, no reports, no checkpoints;
2. Tune, one at a time: the same study through `study.launch.run_study` with
   `max_concurrent_trials=1`, so each trial has the machine to itself as in
   the plain loop: the like-for-like per-trial comparison;
3. Tune, as configured: the study as the quickstart runs it (two one-CPU
   trials side by side on 2 cores): the wall-time comparison.

Each Tune run goes into a temporary storage through an embedded Ray instance
(`run_study` without an address); the study's time is the wall time of the
whole `run_study` call, Ray start to Ray stop. A Tune trial is timed two ways:
its `time_total_s` (Ray's clock: the trial function's run time inside the
worker, data, model, epochs, reports and checkpoints, but not the time it
waits for the driver after each report, when the function is blocked and
Ray's clock stands still) and its wall time in the worker (a clock read
around `trainables.tune.train_trial`, which does include those waits; the
benchmark runs `train_trial` through that thin wrapper).

Per trial, overhead = (Tune time - plain wall) / plain wall, trials paired by
their swept values, for both Tune times; the verdict takes the larger of the
two medians over the trials of the one-at-a-time run (target: under 15%).
Each trial's CPU time is measured too (this process's `time.process_time()`
around a plain trial, the Ray worker's around a Tune trial, Ray's own threads
in that worker included): unlike wall time it hardly moves when other
processes compete for the cores, so the CPU-time overhead is what Tune costs
the trial itself, and the rest of a wall-time overhead is contention (Ray's
driver, raylet and GCS, and whatever else runs on the machine). The totals
split `time_total_s` into epochs (the sum of `time_epoch`) and the rest (set-up,
imports in a fresh worker, reports, checkpoints). The study's wall time is
compared with the plain loop's sequential total and with the 2-minute target
for the quickstart on 2 cores. The load average is recorded before and after:
on a shared machine the numbers move with whatever else runs.

    python benchmarks/study_overhead.py --out study_overhead.json
    python benchmarks/study_overhead.py --smoke-test    # 1 one-epoch trial, for CI
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import machine_info, markdown_table, write_json
from study.config import StudyConfig, load_study
from study.space import expand_grid

QUICKSTART = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"
#: A tiny version of the quickstart for CI: one one-epoch XSAM trial (the α search
#: included), run through Tune once (as configured it would run as one at a time);
#: every table and verdict is printed all the same.
SMOKE_OVERRIDES = (
    "trial.epochs=1",
    "space.optimizer.grid=[xsam]",
    "space.steps.grid=[1]",
    "space.seed.grid=[0]",
)
TARGET_OVERHEAD = 0.15
TARGET_TOTAL_S = 120.0
#: File the trial wrapper appends its wall times to (inherited by Ray's workers).
TIMES_ENV = "STUDY_OVERHEAD_TIMES"


def timed_train_trial(config: dict[str, Any]) -> None:
    """`trainables.tune.train_trial` with a wall clock around it (Ray pickles
    this function by value: it lives in `__main__`)."""
    # before the imports: a fresh worker pays for them
    start, cpu = time.time(), time.process_time()
    import json

    import ray.tune

    from trainables.tune import train_trial

    train_trial(config)
    wall, cpu = time.time() - start, time.process_time() - cpu
    trial_id = ray.tune.get_context().get_trial_id()
    with open(os.environ[TIMES_ENV], "a", encoding="utf-8") as f:
        f.write(json.dumps({"trial_id": trial_id, "wall": wall, "cpu": cpu}) + "\n")


def trial_key(cfg: StudyConfig, config: dict[str, Any]) -> tuple:
    """The swept values of a trial config, in the study's parameter order."""
    return tuple(config.get(p.name) for p in cfg.space)


def label(cfg: StudyConfig, key: tuple) -> str:
    """``optimizer=xsam steps=3 seed=1`` for a trial key (unset parameters left out)."""
    return " ".join(f"{p.name}={v}" for p, v in zip(cfg.space, key, strict=True) if v is not None)


def run_plain(configs: Sequence[dict[str, Any]]) -> list[dict[str, float]]:
    """Each trial run to its end in this process, one after another: its wall
    time, this process's CPU time and the sum of its epochs' `time_epoch`."""
    from trainables.loop import Trial

    out = []
    for i, config in enumerate(configs):
        start, cpu = time.perf_counter(), time.process_time()
        trial = Trial(config)
        epochs = sum(row["time_epoch"] for row in trial.rows())
        wall = time.perf_counter() - start
        out.append({"total": wall, "cpu": time.process_time() - cpu, "epochs": epochs})
        print(f"  plain {i + 1}/{len(configs)}: {wall:.1f} s", flush=True)
    return out


def run_tune(
    cfg: StudyConfig, storage: str, name: str
) -> tuple[float, dict[tuple, dict[str, float]]]:
    """Wall time of `run_study` and, per trial key, the trial's `time_total_s`,
    the sum of its `time_epoch` and its epochs."""
    import json

    from study.launch import run_study

    times = Path(storage) / f"{name}-times.jsonl"
    os.environ[TIMES_ENV] = str(times)
    start = time.perf_counter()
    results = run_study(
        cfg, storage=storage, name=name, trainable=timed_train_trial, verbose=0, command=sys.argv
    )
    wall = time.perf_counter() - start
    clocks = {}
    for line in times.read_text().splitlines():
        entry = json.loads(line)
        clocks[entry["trial_id"]] = entry  # a retried trial: its last run
    if results.errors:
        raise SystemExit(f"{len(results.errors)} trial(s) failed: {results.errors[0]}")
    out = {}
    for r in results:
        frame = r.metrics_dataframe
        out[trial_key(cfg, r.config)] = {
            "total": float(r.metrics["time_total_s"]),
            "epochs": float(frame["time_epoch"].sum()),
            "n_epochs": int(r.metrics["epoch"]),
            "wall": clocks[r.metrics["trial_id"]]["wall"],
            "cpu": clocks[r.metrics["trial_id"]]["cpu"],
        }
    return wall, out


def summarise(rows: list[dict[str, Any]], way: str) -> dict[str, float]:
    """Median, max and of-the-sums overhead of one Tune run against plain, by
    ``time_total_s`` and by the wall time in the worker."""
    plain = sum(r["plain_total"] for r in rows)
    out: dict[str, float] = {}
    plain_cpu = sum(r["plain_cpu"] for r in rows)
    for measure, suffix in (("total", ""), ("wall", "wall_"), ("cpu", "cpu_")):
        overheads = [r[f"{way}_{suffix}overhead"] for r in rows]
        tune = sum(r[f"{way}_{measure}"] for r in rows)
        base = plain_cpu if measure == "cpu" else plain
        out[f"{suffix}overhead_median"] = statistics.median(overheads)
        out[f"{suffix}overhead_max"] = max(overheads)
        out[f"{suffix}overhead_of_sums"] = (tune - base) / base
        out[f"sum_{measure}_s"] = tune
    out["sum_outside_epochs_s"] = sum(r[f"{way}_total"] - r[f"{way}_epochs"] for r in rows)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run the three ways, print the tables and the verdict, optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=QUICKSTART, help="study file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    parser.add_argument("--smoke-test", action="store_true", help="1 one-epoch trial")
    parser.add_argument("--out", type=Path, help="write the numbers as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the study directories")
    args = parser.parse_args(argv)

    from trainables.data import resolve_data_dir

    overrides = [*(SMOKE_OVERRIDES if args.smoke_test else ()), *args.overrides]
    # Trials find the data where they always do (pinned, since the cache moves next).
    data_dir = resolve_data_dir(load_study(args.config, overrides).trial_settings())
    overrides.append(f"trial.data_dir={data_dir}")
    cfg = load_study(args.config, overrides)
    one_at_a_time = load_study(args.config, [*overrides, "max_concurrent_trials=1"])
    tmp = Path(tempfile.mkdtemp(prefix="study-overhead-"))
    # run_study records its study as this machine's last one: not in the user's cache
    os.environ["XDG_CACHE_HOME"] = str(tmp / "cache")
    configs = expand_grid(cfg)
    keys = [trial_key(cfg, c) for c in configs]
    print(f"{len(configs)} trials of {args.config.name} (overrides: {overrides})")

    load_before = os.getloadavg()
    try:
        print("plain loop:", flush=True)
        start = time.perf_counter()
        plain = run_plain(configs)
        plain_wall = time.perf_counter() - start
        print("Ray Tune, one trial at a time:", flush=True)
        seq_wall, seq = run_tune(one_at_a_time, str(tmp / "studies"), "one-at-a-time")
        if args.smoke_test:  # one trial: as configured, it runs as it did one at a time
            print("Ray Tune, as configured: the same run (smoke test: one trial)", flush=True)
            par_wall, par = seq_wall, seq
        else:
            print("Ray Tune, as configured:", flush=True)
            par_wall, par = run_tune(cfg, str(tmp / "studies"), "as-configured")
    finally:
        load_after = os.getloadavg()
        if args.keep:
            print(f"study directories kept in {tmp / 'studies'}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    rows = []
    for key, p in zip(keys, plain, strict=True):
        row: dict[str, Any] = {
            "trial": label(cfg, key),
            "epochs": seq[key]["n_epochs"],
            "plain_total": p["total"],
            "plain_cpu": p["cpu"],
            "plain_epochs": p["epochs"],
        }
        for way, found in (("seq", seq), ("par", par)):
            row[f"{way}_total"] = found[key]["total"]
            row[f"{way}_epochs"] = found[key]["epochs"]
            row[f"{way}_wall"] = found[key]["wall"]
            row[f"{way}_overhead"] = (found[key]["total"] - p["total"]) / p["total"]
            row[f"{way}_wall_overhead"] = (found[key]["wall"] - p["total"]) / p["total"]
            row[f"{way}_cpu"] = found[key]["cpu"]
            row[f"{way}_cpu_overhead"] = (found[key]["cpu"] - p["cpu"]) / p["cpu"]
        rows.append(row)
    parallel = min(
        cfg.effective_concurrency() or len(rows),
        int((os.cpu_count() or 1) // max(cfg.resources.cpu, 1e-9)),
    )
    summary = {
        "trials": len(rows),
        "parallel_trials": parallel,
        "plain_wall_s": plain_wall,
        "plain_outside_epochs_s": sum(r["plain_total"] - r["plain_epochs"] for r in rows),
        "tune_one_at_a_time": {"wall_s": seq_wall, **summarise(rows, "seq")},
        "tune_as_configured": {"wall_s": par_wall, **summarise(rows, "par")},
        "load_before": load_before,
        "load_after": load_after,
    }
    s_seq, s_par = summary["tune_one_at_a_time"], summary["tune_as_configured"]

    print()
    print(
        markdown_table(
            [
                "trial",
                "epochs",
                "plain: wall s (CPU s)",
                "Tune 1 at a time: time_total_s",
                "wall in worker s (CPU s)",
                "overhead: wall / CPU",
                f"Tune {parallel} at a time: time_total_s",
                "wall in worker s (CPU s)",
                "overhead: wall / CPU",
            ],
            [
                [
                    r["trial"],
                    r["epochs"],
                    f"{r['plain_total']:.2f} ({r['plain_cpu']:.2f})",
                    f"{r['seq_total']:.2f}",
                    f"{r['seq_wall']:.2f} ({r['seq_cpu']:.2f})",
                    f"{r['seq_wall_overhead']:+.1%} / {r['seq_cpu_overhead']:+.1%}",
                    f"{r['par_total']:.2f}",
                    f"{r['par_wall']:.2f} ({r['par_cpu']:.2f})",
                    f"{r['par_wall_overhead']:+.1%} / {r['par_cpu_overhead']:+.1%}",
                ]
                for r in rows
            ],
        )
    )

    def overheads(s: dict[str, float], prefix: str) -> str:
        return (
            f"{s[prefix + 'overhead_median']:+.1%} / {s[prefix + 'overhead_max']:+.1%} / "
            f"{s[prefix + 'overhead_of_sums']:+.1%}"
        )

    print()
    print(
        markdown_table(
            ["", "plain loop", "Tune, 1 at a time", f"Tune, {parallel} at a time"],
            [
                ["study wall (s)", f"{plain_wall:.1f}", f"{seq_wall:.1f}", f"{par_wall:.1f}"],
                [
                    "sum of trial times (s): wall / time_total_s",
                    f"{sum(r['plain_total'] for r in rows):.1f}",
                    f"{s_seq['sum_total_s']:.1f}",
                    f"{s_par['sum_total_s']:.1f}",
                ],
                [
                    "of which outside epochs (s)",
                    f"{summary['plain_outside_epochs_s']:.1f}",
                    f"{s_seq['sum_outside_epochs_s']:.1f}",
                    f"{s_par['sum_outside_epochs_s']:.1f}",
                ],
                [
                    "sum of trial walls in the worker (s)",
                    "-",
                    f"{s_seq['sum_wall_s']:.1f}",
                    f"{s_par['sum_wall_s']:.1f}",
                ],
                [
                    "sum of trial CPU times (s)",
                    f"{sum(r['plain_cpu'] for r in rows):.1f}",
                    f"{s_seq['sum_cpu_s']:.1f}",
                    f"{s_par['sum_cpu_s']:.1f}",
                ],
                [
                    "per-trial overhead by time_total_s: median / max / of the sums",
                    "-",
                    overheads(s_seq, ""),
                    overheads(s_par, ""),
                ],
                [
                    "per-trial overhead by wall in worker: median / max / of the sums",
                    "-",
                    overheads(s_seq, "wall_"),
                    overheads(s_par, "wall_"),
                ],
                [
                    "per-trial overhead by CPU time: median / max / of the sums",
                    "-",
                    overheads(s_seq, "cpu_"),
                    overheads(s_par, "cpu_"),
                ],
            ],
        )
    )
    partial = args.smoke_test or bool(args.overrides)
    print()
    worst = max(s_seq["overhead_median"], s_seq["wall_overhead_median"])
    print(
        f"per-trial overhead (Tune one at a time vs plain, median): "
        f"{s_seq['overhead_median']:+.1%} by time_total_s, "
        f"{s_seq['wall_overhead_median']:+.1%} by wall in the worker "
        f"({s_seq['cpu_overhead_median']:+.1%} by CPU time); "
        f"target < {TARGET_OVERHEAD:.0%}: " + ("met" if worst < TARGET_OVERHEAD else "NOT met")
    )
    print(
        f"study wall as configured: {par_wall:.1f} s (plain sequential {plain_wall:.1f} s), "
        f"target < {TARGET_TOTAL_S:.0f} s"
        + (" (a target for the full quickstart)" if partial else "")
        + ": "
        + ("met" if par_wall < TARGET_TOTAL_S else "NOT met")
    )
    print(
        f"load average (1, 5, 15 min) before {tuple(round(x, 2) for x in load_before)}, "
        f"after {tuple(round(x, 2) for x in load_after)}, on {os.cpu_count()} CPUs"
    )
    if args.out:
        write_json(
            args.out,
            {
                "benchmark": "study_overhead",
                "config": str(args.config),
                "overrides": overrides,
                "machine": machine_info(torch.device("cpu")),
                "summary": summary,
                "trials": rows,
            },
        )
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
