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

import os
import subprocess
import time
from pathlib import Path

import pytest

from study._errors import StudyLaunchError
from study._preflight import check_storage_writable
from tests._s3 import S3, free_port, s3, s3_strict  # noqa: F401  (pytest fixtures)
from tests.study._cli_driver import REPO, command, driver_env, tiny_study

LIMIT_S = 15.0


def _refused(args: list[str], env: dict[str, str], ray_tmp: str) -> str:
    """Run ``xsam-tune ARGS``: exit 2, one line, within LIMIT_S, no Ray started."""
    start = time.monotonic()
    proc = subprocess.run(
        command(*args), cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
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
    s3: S3,  # noqa: F811
    s3_strict: S3,  # noqa: F811
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


def test_reachable_bucket_passes_the_check(s3: S3, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
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
