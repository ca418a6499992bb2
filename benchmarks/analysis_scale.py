"""Analysis at scale (issue 14): a synthetic study of N trials x E epochs made from a
real small study, then the peak memory and wall time of reading and reporting it.

``make`` writes the synthetic study: trial i copies template trial i mod T of the
source study (its config with ``seed`` = i // T and ``epochs`` = E, its rows
repeated up to epoch E with the epoch, step, time and accuracy moved along, its
α probe records, Ray's per-row ``config`` copy and bookkeeping, ``error.txt`` of
an errored template, one ``experiment_state`` entry per trial with the
template's run-time record). A template that diverged still stops after its
first epoch, and one that raised still has no rows, so the study holds every
label the source holds. ``study.json`` marks it finished.

``measure`` runs each command as a fresh process under ``/usr/bin/time -v``
(peak resident memory, wall time) with the load average before and after:

- ``load``: ``analysis.load(DIR).trials`` (first read: JSON; writes the cache),
- ``load-cached``: the same again (reads the parquet cache),
- ``report``: ``xsam-tune report DIR`` (first read, figures and tables),
- ``report-cached``: the same again.

and ends with a verdict per command against issue 14's targets (:data:`TARGETS`:
1.5 GB peak; 30 s wall for a report, with the user CPU seconds beside it).

``split`` times a report's parts in one process: reading, the tables, each figure.

Usage::

    python benchmarks/analysis_scale.py make SOURCE_STUDY OUT_DIR --trials 1000 --epochs 200
    python benchmarks/analysis_scale.py measure OUT_DIR [--only load,report] [--json FILE]
    python benchmarks/analysis_scale.py split OUT_DIR      # the report's time by part
    python benchmarks/analysis_scale.py --smoke-test [--source DIR] [--out FILE]
        # 24 x 4 from DIR (default: a toy source study written on the spot), for the tests
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import REPO_ROOT, loadavg

_STUDY_FILES = ("study.json", "study.yaml")


# -- make -----------------------------------------------------------------------


def _templates(source: Path) -> list[dict[str, Any]]:
    """Each trial folder of the source study: params, rows, error text."""
    out = []
    for d in sorted(p for p in source.iterdir() if (p / "params.json").is_file()):
        rows = []
        if (d / "result.json").is_file():
            rows = [json.loads(x) for x in (d / "result.json").read_text().splitlines() if x]
        error = (d / "error.txt").read_text() if (d / "error.txt").is_file() else None
        params = json.loads((d / "params.json").read_text())
        out.append({"dir": d.name, "params": params, "rows": rows, "error": error})
    if not out:
        raise SystemExit(f"{source}: no trial folders with params.json")
    return out


def _state_entries(source: Path) -> dict[str, list[str]]:
    """The source's experiment_state entries by trial folder."""
    files = sorted(source.glob("experiment_state-*.json"))
    if not files:
        return {}
    state = json.loads(files[-1].read_text())
    out = {}
    for entry in state.get("trial_data", []):
        head = json.loads(entry[0])
        out[head.get("relative_logdir")] = entry
    return out


def make(source: Path, out: Path, trials: int, epochs: int, seed: int = 0) -> Path:
    """Write a synthetic study of ``trials`` x ``epochs`` under ``out``; returns it."""
    rng = random.Random(seed)
    templates = _templates(source)
    entries = _state_entries(source)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name in _STUDY_FILES:
        if (source / name).is_file():
            shutil.copy(source / name, out / name)
    info = json.loads((out / "study.json").read_text())
    info.update(name=out.name, num_trials=trials, path=str(out))
    info["finished_at"] = info.get("finished_at") or "2026-01-01T00:00:00+00:00"
    (out / "study.json").write_text(json.dumps(info, indent=2))
    state_data = []
    for i in range(trials):
        tpl = templates[i % len(templates)]
        trial_id = f"{i:08x}"
        params = {**tpl["params"], "seed": i // len(templates), "epochs": epochs}
        suffix = tpl["dir"].split("_", 1)[1] if "_" in tpl["dir"] else "t"
        name = re.sub(r"seed=\d+", f"seed={params['seed']}", f"{trial_id}_{suffix}")
        d = out / name
        d.mkdir()
        (d / "params.json").write_text(json.dumps(params, indent=2))
        rows = tpl["rows"]
        last = epochs if rows and not rows[-1].get("diverged") else len(rows)
        shift = rng.uniform(-0.02, 0.02)
        with (d / "result.json").open("w") as fh:
            for e in range(1, last + 1):
                base = rows[min(e, len(rows)) - 1]
                per_epoch = (base.get("step") or 0) // max(base.get("epoch") or 1, 1)
                row = dict(base)
                row.update(
                    epoch=e,
                    training_iteration=e,
                    step=per_epoch * e,
                    trial_id=trial_id,
                    timestamp=(base.get("timestamp") or 0) + e,
                    time_total_s=(base.get("time_epoch") or 1.0) * e,
                    iterations_since_restore=e,
                    config=params,
                )
                for key in ("test_acc", "train_acc"):
                    if isinstance(row.get(key), float):
                        row[key] = min(1.0, max(0.0, row[key] + shift + rng.gauss(0, 0.005)))
                if isinstance(row.get("probes"), list):
                    row["probes"] = [
                        {**p, "epoch": e, "step": per_epoch * (e - 1)} for p in row["probes"]
                    ]
                fh.write(json.dumps(row) + "\n")
        if tpl["error"] is not None:
            (d / "error.txt").write_text(tpl["error"])
        entry = entries.get(tpl["dir"])
        if entry is not None:
            head = json.loads(entry[0])
            head.update(trial_id=trial_id, relative_logdir=name, custom_dirname=name)
            head["config"] = repr(params)  # Ray stores it encoded; the reader needs only status
            state_data.append([json.dumps(head), *entry[1:]])
    if state_data:
        stamp = time.strftime("%Y-%m-%d_%H-%M-%S", time.gmtime())
        state = {"trial_data": state_data, "runner_data": {}, "stats": {}}
        (out / f"experiment_state-{stamp}.json").write_text(json.dumps(state))
    return out


# -- measure --------------------------------------------------------------------


_COMMANDS = {
    "load": "load",
    "load-cached": "load",
    "report": "report",
    "report-cached": "report",
}


def _command(kind: str, study: Path, report_dir: Path) -> list[str]:
    if _COMMANDS[kind] == "load":
        code = (
            "import sys, time, analysis; t0 = time.perf_counter(); "
            "s = analysis.load(sys.argv[1]); t = s.trials; "
            "print(f'{len(t)} trials, load+trials {time.perf_counter() - t0:.2f} s')"
        )
        return [sys.executable, "-c", code, str(study)]
    xsam = Path(sys.executable).with_name("xsam-tune")
    return [str(xsam), "report", str(study), "-o", str(report_dir)]


def _time_v(cmd: list[str]) -> dict[str, Any]:
    """Peak RSS (MB) and wall seconds of ``cmd`` from GNU time -v."""
    proc = subprocess.run(
        ["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, cwd=REPO_ROOT, check=False
    )
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", proc.stderr)
    user = re.search(r"User time \(seconds\): ([\d.]+)", proc.stderr)
    secs = 0.0
    if wall:
        for part in wall.group(1).split(":"):
            secs = secs * 60 + float(part)
    return {
        "rc": proc.returncode,
        "peak_rss_mb": int(rss.group(1)) / 1024 if rss else None,
        "wall_s": secs,
        "user_s": float(user.group(1)) if user else None,
        "stdout": proc.stdout.strip()[-300:],
        "stderr_tail": "" if proc.returncode == 0 else proc.stderr[-1500:],
    }


#: Issue 14's targets: peak resident memory (MiB) and wall seconds; None: none set.
TARGETS: dict[str, tuple[float | None, float | None]] = {
    "report": (1536.0, 30.0),
    "report-cached": (1536.0, 30.0),
    "load": (1536.0, None),  # set for 3,000 x 200
    "load-cached": (1536.0, None),
}


def verdict(r: dict[str, Any]) -> str:
    """``within`` or ``OVER`` each target of a result, with the CPU seconds beside the
    wall ones (under load the wall time says little; on an idle core the two meet)."""
    mem, wall = TARGETS[r["kind"]]
    parts = []
    if mem is not None and r["peak_rss_mb"] is not None:
        ok = r["peak_rss_mb"] <= mem
        parts.append(f"peak {r['peak_rss_mb']:.0f} <= {mem:.0f} MiB: {'within' if ok else 'OVER'}")
    if wall is not None:
        ok = r["wall_s"] <= wall
        cpu = r["user_s"] or 0.0
        parts.append(
            f"wall {r['wall_s']:.1f} <= {wall:.0f} s: {'within' if ok else 'OVER'}"
            f" (user CPU {cpu:.1f} s: {'within' if cpu <= wall else 'OVER'})"
        )
    return "; ".join(parts) if parts else "no target"


def measure(study: Path, only: list[str]) -> list[dict[str, Any]]:
    """Run each chosen command once, in order; ``load`` and ``report`` clear the
    cache first, ``*-cached`` read what the command before left."""
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in only:
            if kind in ("load", "report"):
                shutil.rmtree(study / ".cache", ignore_errors=True)
            before = loadavg()
            r = _time_v(_command(kind, study, Path(tmp) / kind))
            r.update(kind=kind, load_before=before, load_after=loadavg())
            results.append(r)
            print(
                f"{kind:14s} peak {r['peak_rss_mb']:.0f} MB  wall {r['wall_s']:.1f} s  "
                f"user {r['user_s']} s  rc {r['rc']}  load {before} -> {r['load_after']}  "
                f"{r['stdout']}",
                flush=True,
            )
            if r["rc"]:
                print(r["stderr_tail"], file=sys.stderr)
    for r in results:
        r["verdict"] = verdict(r) if r["rc"] == 0 else f"failed (rc {r['rc']})"
        print(f"verdict {r['kind']:14s} {r['verdict']}", flush=True)
    return results


def split(study: Path) -> dict[str, float]:
    """Where a report's time goes, in this process: reading the study (the
    cache when there is one), the report's tables, and each figure (drawn and
    encoded as the report does). Wall and CPU seconds per part."""
    import analysis
    from analysis import _report
    from analysis._kinds import PLOTS

    out: dict[str, float] = {}

    def timed(name: str, fn: Any) -> Any:
        w, c = time.perf_counter(), time.process_time()
        value = fn()
        out[f"{name} wall"] = time.perf_counter() - w
        out[f"{name} cpu"] = time.process_time() - c
        out[f"{name} peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"{name:24s} wall {out[f'{name} wall']:7.2f} s  cpu {out[f'{name} cpu']:7.2f} s  "
            f"peak so far {out[f'{name} peak_mb']:6.0f} MB",
            flush=True,
        )
        return value

    s = timed("load + trials, epochs", lambda: _frames(analysis.load(study)))
    timed("tables", lambda: _report._tables(s))
    for kind in PLOTS:
        timed(f"figure {kind}", lambda kind=kind: _report._figure_html(s, kind))
    return out


def _frames(s: Any) -> Any:
    # What a report reads whole; of .probes its tables read a few columns.
    for kind in ("trials", "epochs"):
        s.frame(kind)
    return s


def toy_source(root: Path) -> Path:
    """A small source study written without Ray (for ``--smoke-test``): sgd, sam and
    xsam trials of two epochs with the contract's metrics row (xsam with one α
    search per epoch) and one trial that raised before its first epoch."""
    import xsam_contract

    root.mkdir(parents=True)
    info = {
        "name": root.name,
        "metrics": [{"name": "test_acc", "mode": "max"}],
        "space": {"optimizer": {"grid": ["sgd", "sam", "xsam"]}},
        "finished_at": "2026-01-01T00:00:00+00:00",
    }
    (root / "study.json").write_text(json.dumps(info))
    grid = [round(0.1 * i, 1) for i in range(21)]
    for n, optimizer in enumerate(("sgd", "sam", "xsam", "sam")):
        trial_id = f"{n:08x}"
        params = {"optimizer": optimizer, "epochs": 2, "seed": 0}
        if optimizer != "sgd":
            params["steps"] = 1
        d = root / f"{trial_id}_optimizer={optimizer}"
        d.mkdir()
        (d / "params.json").write_text(json.dumps(params))
        if n == 3:  # raised before its first epoch
            (d / "result.json").write_text("")
            (d / "error.txt").write_text("Failure # 1\nValueError: toy failure\n")
            continue
        with (d / "result.json").open("w") as fh:
            for e in (1, 2):
                row: dict[str, Any] = {
                    k: 0.5 for k, f in xsam_contract.METRICS.items() if f.dtype == "float64"
                }
                row.update(epoch=e, step=10 * e, n_forward=20, n_backward=20, diverged=False)
                row.update(alpha_refreshed=optimizer == "xsam", probes=[])
                if optimizer == "xsam":
                    losses = [1.0 + 0.01 * i for i in range(21)]
                    row["probes"] = [
                        {
                            "step": 10 * (e - 1),
                            "epoch": e,
                            "alpha": 2.0,
                            "psi": 0.3,
                            "alphas": grid,
                            "losses": losses,
                            "loss_v0": losses[0],
                            "loss_v1": losses[10],
                            "loss_best": losses[-1],
                        }
                    ]
                row.update(
                    trial_id=trial_id,
                    training_iteration=e,
                    timestamp=1.7e9 + e,
                    time_total_s=float(e),
                    done=False,
                    config=params,
                )
                fh.write(json.dumps(row) + "\n")
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke-test", action="store_true", help="24 x 4, load twice")
    parser.add_argument("--source", type=Path, help="--smoke-test: the source study")
    parser.add_argument("--out", type=Path, help="--smoke-test: write the results as JSON")
    sub = parser.add_subparsers(dest="verb")
    mk = sub.add_parser("make", help="write a synthetic study")
    mk.add_argument("source", type=Path)
    mk.add_argument("out", type=Path)
    mk.add_argument("--trials", type=int, default=1000)
    mk.add_argument("--epochs", type=int, default=200)
    ms = sub.add_parser("measure", help="peak memory and wall time of load and report")
    ms.add_argument("study", type=Path)
    ms.add_argument("--only", default="load,load-cached,report,report-cached")
    ms.add_argument("--json", type=Path)
    sp = sub.add_parser("split", help="seconds of a report's parts, in one process")
    sp.add_argument("study", type=Path)
    args = parser.parse_args(argv)
    if args.smoke_test:
        from benchmarks._common import markdown_table

        with tempfile.TemporaryDirectory() as tmp:
            source = args.source or toy_source(Path(tmp) / "toy")
            study = make(source, Path(tmp) / "synthetic", 24, 4)
            results = measure(study, ["load", "load-cached"])
        rows = [
            [r["kind"], f"{r['peak_rss_mb']:.0f}", f"{r['wall_s']:.1f}", r["rc"]] for r in results
        ]
        print(markdown_table(["command", "peak MB", "wall s", "rc"], rows))
        if args.out:
            args.out.write_text(json.dumps({"results": results}, indent=2))
        return 0 if all(r["rc"] == 0 for r in results) else 1
    if args.verb == "make":
        t0 = time.perf_counter()
        out = make(args.source, args.out, args.trials, args.epochs)
        size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
        print(
            f"{out}: {args.trials} x {args.epochs}, {size / 2**20:.0f} MiB "
            f"in {time.perf_counter() - t0:.0f} s"
        )
        return 0
    if args.verb == "split":
        print(f"load average: {loadavg()}")
        split(args.study)
        print(f"load average: {loadavg()}")
        return 0
    if args.verb == "measure":
        only = [k.strip() for k in args.only.split(",") if k.strip()]
        bad = [k for k in only if k not in _COMMANDS]
        if bad:
            parser.error(f"--only: unknown {bad}; choose from {sorted(_COMMANDS)}")
        results = measure(args.study, only)
        if args.json:
            meta = {"cpus": os.cpu_count(), "study": str(args.study), "results": results}
            args.json.write_text(json.dumps(meta, indent=2))
        return 0 if all(r["rc"] == 0 for r in results) else 1
    parser.print_help()
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
