"""A real S3 protocol server on 127.0.0.1 for the object-storage tests (``moto`` in server mode).

``moto_server`` (from the ``dev`` extra) is started as a subprocess on a free
loopback port and stopped, by its pid, at the end of the test session. The
session fixtures ``s3`` and ``s3_strict`` (``tests/conftest.py``) are one
server each for the whole suite: ``s3`` accepts any credentials (moto's
default); ``s3_strict`` enforces authentication from the first request, so
that an unsigned (anonymous) request is refused, as real S3 refuses it for a
private bucket. Nothing here talks to anything but 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

#: Credentials moto accepts (it checks none unless told to).
KEYS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}


@dataclass(frozen=True)
class S3:
    """A running S3 server.

    Attributes:
        endpoint: ``http://127.0.0.1:PORT``.
        proc: The ``moto_server`` process.
    """

    endpoint: str
    proc: subprocess.Popen

    def env(self, *, credentials: bool = True) -> dict[str, str]:
        """Environment variables pointing the AWS SDKs (pyarrow, boto3) at this server.

        With ``credentials=False`` no access key is set and the shared
        credentials/config files are empty, so pyarrow finds none.
        """
        env = {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",  # never ask 169.254.169.254
        }
        if credentials:
            env.update(KEYS)
        return env

    def apply(self, base: dict[str, str], *, credentials: bool = True) -> dict[str, str]:
        """``base`` with :meth:`env` applied (and, without credentials, every AWS
        credential variable removed and the shared files pointed at an empty one)."""
        out = {k: v for k, v in base.items() if not k.startswith("AWS_")}
        out.update(self.env(credentials=credentials))
        if not credentials:
            empty = Path(base.get("TMPDIR", "/tmp")) / f"xsam-empty-aws-{os.getpid()}"
            empty.write_text("")
            out["AWS_SHARED_CREDENTIALS_FILE"] = out["AWS_CONFIG_FILE"] = str(empty)
        return out

    def client(self) -> Any:
        """A boto3 S3 client of this server."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=KEYS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=KEYS["AWS_SECRET_ACCESS_KEY"],
        )

    def bucket(self, prefix: str = "bkt") -> str:
        """Create a new, empty bucket; returns its name."""
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key in ``bucket`` under ``prefix``."""
        pages = (
            self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        )
        return [o["Key"] for page in pages for o in page.get("Contents", [])]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(log: Path, **env: str) -> S3:
    """Start ``moto_server`` on a free loopback port and wait until it answers."""
    exe = Path(sys.executable).with_name("moto_server")
    if not exe.exists():
        found = shutil.which("moto_server")
        if found is None:
            pytest.fail("moto_server not found: install the dev extra (pip install -e '.[dev]')")
        exe = Path(found)
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(exe), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
        )
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"moto_server did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.2)
    return S3(f"http://127.0.0.1:{port}", proc)


def stop_server(server: S3) -> None:
    """Stop the server process this module started."""
    if server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(timeout=10)
