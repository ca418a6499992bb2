"""``analysis.load`` of a study in an S3 bucket against the same study on local disk (issue 12).

The study is synthetic: ``benchmarks/analysis_scale.py``'s ``make`` (N trials x E
epochs from its toy source study), plus one checkpoint folder per trial (a
``trial_state.pt`` of ``--checkpoint-kb`` KiB, which the remote reader must not
download). It is uploaded to a bucket of a ``moto`` S3 server started here on
127.0.0.1 (the ``dev`` extra installs it), so the numbers are the reader's own
costs over the S3 protocol on loopback, not a real network's.

Timed in one process, interleaved, ``--repeats`` times each:

- ``local cold``: ``analysis.load(DIR)`` after deleting the reader's parquet cache,
- ``bucket cold``: ``analysis.load(s3://…)`` with an empty mirror (listing + downloads + JSON),
- ``local warm`` / ``bucket warm``: the same again (parquet cache; for the bucket,
  one listing and nothing downloaded).

Bytes: what the bucket reads download (``analysis._remote.Fetched.bytes_read``),
what the study holds in the bucket, and what the local reader's files hold.

Usage::

    python benchmarks/storage_load.py [--trials 200] [--epochs 20] [--repeats 3] [--out FILE]
    python benchmarks/storage_load.py --smoke-test [--out FILE]   # 12 x 3, one repeat
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))


def _analysis_scale() -> Any:
    spec = importlib.util.spec_from_file_location(
        "analysis_scale", REPO_ROOT / "benchmarks" / "analysis_scale.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _moto(log: Path) -> tuple[subprocess.Popen, str]:
    """A moto S3 server on a free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = Path(sys.executable).with_name("moto_server")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(exe if exe.exists() else "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc, f"http://127.0.0.1:{port}"
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise SystemExit(f"moto_server did not start: {log.read_text()}") from None
            time.sleep(0.2)


def _upload(local: Path, bucket: str, prefix: str) -> int:
    """Copy the study folder into the bucket; returns the bytes stored."""
    import pyarrow.fs

    fs, _ = pyarrow.fs.FileSystem.from_uri(f"s3://{bucket}")
    total = 0
    for path in sorted(local.rglob("*")):
        if path.is_file() and ".cache" not in path.parts:
            data = path.read_bytes()
            with fs.open_output_stream(f"{bucket}/{prefix}/{path.relative_to(local)}") as out:
                out.write(data)
            total += len(data)
    return total


def _reader_bytes(study: Path) -> int:
    """Bytes of the files the reader opens in a local study (what a bucket read needs)."""
    from analysis._remote import _STATE, _STUDY_FILES, _TRIAL_FILES

    total = 0
    states = sorted(study.glob("experiment_state-*.json"))
    for f in study.iterdir():
        if f.is_file() and (f.name in _STUDY_FILES or (_STATE.match(f.name) and f == states[-1])):
            total += f.stat().st_size
        elif f.is_dir():
            total += sum((f / n).stat().st_size for n in _TRIAL_FILES if (f / n).is_file())
    return total


def run(trials: int, epochs: int, repeats: int, checkpoint_kb: int) -> dict[str, Any]:
    """Build, upload and time; returns the measurements."""
    import analysis
    from analysis import _remote

    scale = _analysis_scale()
    work = Path(tempfile.mkdtemp(prefix="xsl-"))
    proc = None
    try:
        source = scale.toy_source(work / "source")
        study = scale.make(source, work / "studies", trials, epochs)
        for d in study.iterdir():
            if d.is_dir() and (d / "params.json").exists():
                (d / "checkpoint_000000").mkdir(exist_ok=True)
                (d / "checkpoint_000000" / "trial_state.pt").write_bytes(
                    os.urandom(checkpoint_kb * 1024)
                )
        proc, endpoint = _moto(work / "moto.log")
        os.environ.update(
            AWS_ACCESS_KEY_ID="test",
            AWS_SECRET_ACCESS_KEY="test",
            AWS_DEFAULT_REGION="us-east-1",
            AWS_ENDPOINT_URL=endpoint,
            AWS_EC2_METADATA_DISABLED="true",
        )
        import boto3

        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
        stored = _upload(study, "bench", "studies/scale")
        uri = "s3://bench/studies/scale"
        mirror = work / "mirror"
        os.environ[_remote.CACHE_ENV] = str(mirror)

        times: dict[str, list[float]] = {k: [] for k in ("local cold", "bucket cold")}
        times.update({"local warm": [], "bucket warm": []})
        fetched: dict[str, Any] = {}
        analysis.load(study), analysis.load(uri)  # imports and first-call costs, untimed
        loads_before = os.getloadavg()
        for _ in range(repeats):
            shutil.rmtree(study / ".cache", ignore_errors=True)
            shutil.rmtree(mirror, ignore_errors=True)
            for kind, target in (("local", study), ("bucket", uri)):
                start = time.perf_counter()
                n = len(analysis.load(target).trials)
                times[f"{kind} cold"].append(time.perf_counter() - start)
                assert n == trials, n
            # what a cold bucket load downloads (counted apart from its timing)
            shutil.rmtree(mirror, ignore_errors=True)
            fetched["cold"] = _remote.local_copy(uri)
            analysis.load(uri)  # the parquet cache in the mirror
            for kind, target in (("local", study), ("bucket", uri)):
                start = time.perf_counter()
                assert len(analysis.load(target).trials) == trials
                times[f"{kind} warm"].append(time.perf_counter() - start)
            fetched["warm"] = _remote.local_copy(uri)
        median = {k: statistics.median(v) for k, v in times.items()}
        return {
            "trials": trials,
            "epochs": epochs,
            "repeats": repeats,
            "checkpoint_kb": checkpoint_kb,
            "seconds": median,
            "ratio_cold": median["bucket cold"] / median["local cold"],
            "ratio_warm": median["bucket warm"] / median["local warm"],
            "bytes_in_bucket": stored,
            "bytes_reader_files": _reader_bytes(study),
            "bytes_downloaded_cold": fetched["cold"].bytes_read,
            "bytes_downloaded_warm": fetched["warm"].bytes_read,
            "objects_listed": fetched["cold"].listed,
            "objects_downloaded_cold": fetched["cold"].downloaded,
            "loadavg": [loads_before, os.getloadavg()],
        }
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


def table(r: dict[str, Any]) -> str:
    """The measurements as a Markdown table."""
    s = r["seconds"]
    mib = 1024 * 1024
    lines = [
        f"{r['trials']} trials x {r['epochs']} epochs, checkpoint {r['checkpoint_kb']} KiB "
        f"per trial, median of {r['repeats']}, load {r['loadavg'][0][0]:.1f} -> "
        f"{r['loadavg'][1][0]:.1f}",
        "",
        "| read | local disk (s) | bucket (s) | bucket / local |",
        "|---|---|---|---|",
        f"| cold (JSON; bucket: list + download) | {s['local cold']:.2f} | "
        f"{s['bucket cold']:.2f} | {r['ratio_cold']:.2f} |",
        f"| warm (parquet cache; bucket: list only) | {s['local warm']:.2f} | "
        f"{s['bucket warm']:.2f} | {r['ratio_warm']:.2f} |",
        "",
        "| bytes | MiB |",
        "|---|---|",
        f"| stored in the bucket ({r['objects_listed']} objects) | "
        f"{r['bytes_in_bucket'] / mib:.2f} |",
        f"| read by a cold bucket load ({r['objects_downloaded_cold']} objects) | "
        f"{r['bytes_downloaded_cold'] / mib:.2f} |",
        f"| read by a local load (the same files) | {r['bytes_reader_files'] / mib:.2f} |",
        f"| read by a warm bucket load | {r['bytes_downloaded_warm'] / mib:.2f} |",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--checkpoint-kb", type=int, default=256)
    parser.add_argument("--smoke-test", action="store_true", help="12 x 3, one repeat")
    parser.add_argument("--out", type=Path, help="write the measurements as JSON")
    args = parser.parse_args(argv)
    if args.smoke_test:
        args.trials, args.epochs, args.repeats, args.checkpoint_kb = 12, 3, 1, 4
    result = run(args.trials, args.epochs, args.repeats, args.checkpoint_kb)
    print(table(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
