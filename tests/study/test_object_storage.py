"""Studies in object storage, against a real S3 protocol server on 127.0.0.1 (moto).

* Bad storage is refused before anything starts: an unknown bucket, no
  credentials, an unreachable endpoint each give exit 2 and one line within
  15 s, with no Ray instance started and nothing written.
* A study run with ``--storage s3://bucket/prefix`` writes everything into the
  bucket (study.json, study.yaml, the Optuna journal, trial results and
  checkpoints); ``analysis.load`` and ``xsam-tune results`` read it straight
  from the bucket; ``xsam-tune resume s3://…`` continues an interrupted study
  from another working directory (and another cache: another machine).

Every study runs in a driver subprocess (``tests/study/_cli_driver.py``): the
AWS settings must reach the driver and the Ray workers it starts through
their environment, as on a real cluster.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from analysis import _remote
from study._errors import StudyLaunchError
from study._preflight import check_storage_writable
from tests._s3 import S3, free_port
from tests.study._cli_driver import (
    SLOW_ROWS,
    background,
    driver_env,
    interrupt_after_first_report,
    run,
    tiny_study,
)

LIMIT_S = 15.0


def _refused(args: list[str], env: dict[str, str], ray_tmp: str) -> str:
    """Run ``xsam-tune ARGS``: exit 2, one line, within LIMIT_S, no Ray started."""
    start = time.monotonic()
    proc = run(args, env, timeout=60)
    took = time.monotonic() - start
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(lines) == 1 and lines[0].startswith("xsam-tune: error: "), proc.stderr
    assert took < LIMIT_S, took
    assert os.listdir(ray_tmp) == [], "a Ray instance was started"
    return lines[0]


@pytest.mark.parametrize("case", ["unknown bucket", "no credentials", "unreachable endpoint"])
def test_bad_storage_is_refused_before_anything_starts(
    case: str,
    tmp_path: Path,
    s3: S3,
    s3_strict: S3,
) -> None:
    data = tmp_path / "data"
    study = tiny_study(tmp_path, "bad", data)
    if case == "unknown bucket":
        server, bucket, credentials = s3, "nosuch-bucket", True
        expected = "bucket 'nosuch-bucket' does not exist"
    elif case == "no credentials":
        # A server that refuses anonymous requests, and no credentials anywhere:
        # pyarrow falls back to anonymous access, and that is refused.
        server, bucket, credentials = s3_strict, "bkt", False
        expected = "no AWS credentials found"
    else:
        server, bucket, credentials = S3(f"http://127.0.0.1:{free_port()}", s3.proc), "bkt", True
        expected = "Could not connect"
    uri = f"s3://{bucket}/studies"
    keys_before = {b["Name"]: s3.keys(b["Name"]) for b in s3.client().list_buckets()["Buckets"]}
    with driver_env(tmp_path) as env:
        env = server.apply(env, credentials=credentials)
        line = _refused(["run", str(study), "--storage", uri], env, env["XSAM_TUNE_RAY_TMP"])
    assert line.startswith(f"xsam-tune: error: storage {uri}: "), line
    assert expected in line, line
    keys_after = {b["Name"]: s3.keys(b["Name"]) for b in s3.client().list_buckets()["Buckets"]}
    assert keys_after == keys_before  # nothing written anywhere
    assert not data.exists()


def test_reachable_bucket_passes_the_check(s3: S3, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same probe accepts a bucket that exists (empty prefix or not)."""
    bucket = s3.bucket()
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    check_storage_writable(f"s3://{bucket}/studies")
    check_storage_writable(f"s3://{bucket}")
    with pytest.raises(StudyLaunchError, match="bucket 'nosuch-other' does not exist"):
        check_storage_writable("s3://nosuch-other/studies")


def test_probe_of_a_silent_endpoint_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """An endpoint that accepts the connection but never answers: refused
    within the probe's limit, not after the SDK's retries."""
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{silent.getsockname()[1]}")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        from study import _storage

        start = time.monotonic()
        with pytest.raises(StudyLaunchError, match=r"^storage s3://bkt/studies: "):
            _storage.check_reachable("s3://bkt/studies", 2.0)
        assert time.monotonic() - start < 5.0


# --------------------------------------------------------------------------
# a study in the bucket
# --------------------------------------------------------------------------

EPOCHS = 4
TIMEOUT = 300


@pytest.mark.ray
@pytest.mark.slow
def test_study_in_the_bucket_resumed_from_elsewhere(
    tmp_path: Path,
    s3: S3,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An Optuna study with ``--storage s3://…``, stopped by Ctrl-C after the
    first epoch and resumed by URI from another working directory with another
    cache (as from another machine): every file lands in the bucket, none on
    local disk, and the bucket holds every trial's epochs exactly once."""
    import analysis

    bucket = s3.bucket()
    root = f"s3://{bucket}/studies"
    data = tmp_path / "data"
    study = tiny_study(
        tmp_path,
        "opt",
        data,
        epochs=EPOCHS,
        space={"rho": {"uniform": [0.05, 0.3]}},
        search={"algorithm": "optuna", "seed": 0, "num_samples": 3, "max_concurrent": 2},
        resources={"cpu": 1, "gpu": 0},
    )
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    log = tmp_path / "run.log"
    with driver_env(tmp_path, XSAM_TEST_EPOCH_S="0.5") as env:
        env = s3.apply(env)
        args = ["run", str(study), "--storage", root, "--trainable", SLOW_ROWS, "-q"]
        with background(args, env, log, cwd=first) as proc:
            rc = interrupt_after_first_report(proc, data / "reports.txt", log, TIMEOUT)
        assert rc == 130, log.read_text()
        assert any(k.endswith("/result.json") for k in s3.keys(bucket)), s3.keys(bucket)

        other = {**env, "XDG_CACHE_HOME": str(second / "cache"), "XSAM_TEST_EPOCH_S": "0.05"}
        resumed = run(
            ["resume", f"{root}/opt", "--trainable", SLOW_ROWS, "-q"],
            other,
            timeout=TIMEOUT,
            cwd=second,
        )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"study directory: {root}/opt" in resumed.stdout, resumed.stdout
    assert sorted(os.listdir(first)) == [] and sorted(os.listdir(second)) == ["cache"]

    keys = s3.keys(bucket, "studies/opt/")
    names = {k.removeprefix("studies/opt/") for k in keys}
    assert {"study.json", "study.yaml", "optuna.journal", "tuner.pkl"} <= names, names
    assert any(n.startswith("experiment_state-") for n in names), names
    trial_dirs = {n.split("/")[0] for n in names if n.endswith("/params.json")}
    assert len(trial_dirs) == 3, names
    for d in trial_dirs:
        assert f"{d}/result.json" in names
        assert any(n.startswith(f"{d}/checkpoint_") for n in names), (d, names)

    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv(_remote.CACHE_ENV, str(tmp_path / "mirror"))
    loaded = analysis.load(f"{root}/opt")
    assert sorted(loaded.trials["status"]) == ["finished"] * 3
    epochs = loaded.epochs
    for trial_id in loaded.trials["trial_id"]:
        rows = epochs.loc[epochs["trial_id"] == trial_id, "epoch"].tolist()
        assert rows == list(range(1, EPOCHS + 1)), (trial_id, rows)
    record = json.loads((loaded.path / "study.json").read_text())
    assert "finished_at" in record and len(record["resumed"]) == 1, record
    # the journal in the bucket holds the whole Optuna study (resumed elsewhere)
    import optuna

    journal = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(loaded.path / "optuna.journal"))
    )
    trials = optuna.load_study(study_name="opt", storage=journal).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    assert sorted(t.params["rho"] for t in trials) == sorted(loaded.trials["rho"])


def test_remote_mirror_reads_only_what_changed(
    tmp_path: Path,
    s3: S3,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    """A study uploaded to the bucket by hand: the mirror holds the reader's
    files (no checkpoints), a second read downloads nothing, a grown
    ``result.json`` is downloaded again, the frames equal a local load, and
    ``xsam-tune results URI`` reads it."""
    import analysis

    bucket = s3.bucket()
    local = tmp_path / "studies" / "hand"
    for i in range(3):
        d = local / f"t{i}_seed={i}"
        (d / "checkpoint_000000").mkdir(parents=True)
        (d / "checkpoint_000000" / "state.pt").write_bytes(b"x" * 1000)
        (d / "params.json").write_text(json.dumps({"optimizer": "sgd", "seed": i}))
        rows = [
            {"epoch": e, "test_acc": 0.5 + 0.1 * e + 0.01 * i, "trial_id": f"t{i}"} for e in (1, 2)
        ]
        (d / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (local / "study.json").write_text(
        json.dumps({"name": "hand", "metric": "test_acc", "mode": "max", "finished_at": "x"})
    )
    client = s3.client()
    for path in local.rglob("*"):
        if path.is_file():
            client.upload_file(str(path), bucket, f"studies/{path.relative_to(local.parent)}")
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv(_remote.CACHE_ENV, str(tmp_path / "mirror"))
    uri = f"s3://{bucket}/studies/hand"

    got = _remote.local_copy(uri)
    assert (got.listed, got.wanted, got.downloaded) == (10, 7, 7)
    assert got.path == tmp_path / "mirror" / "s3" / bucket / "studies" / "hand"
    assert not list(got.path.rglob("checkpoint_*"))
    assert _remote.local_copy(uri).downloaded == 0
    grown = local / "t1_seed=1" / "result.json"
    grown.write_text(grown.read_text() + json.dumps({"epoch": 3, "test_acc": 0.9}) + "\n")
    client.upload_file(str(grown), bucket, "studies/hand/t1_seed=1/result.json")
    again = _remote.local_copy(uri)
    assert again.downloaded == 1 and again.bytes_read == grown.stat().st_size

    remote, here = analysis.load(uri), analysis.load(local)
    cols = ["trial_id", "epoch", "test_acc"]
    assert remote.epochs[cols].equals(here.epochs[cols])
    assert len(remote.epochs) == 7

    # the CLI reads the URI too; a URI with no study is one line, exit 2
    from study.cli import main

    assert main(["results", uri]) == 0
    out = capsys.readouterr().out
    assert all(f"t{i}" in out for i in range(3)), out
    assert main(["results", f"s3://{bucket}/studies/nosuch"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"xsam-tune: error: study directory not found: s3://{bucket}/studies/nosuch"]
