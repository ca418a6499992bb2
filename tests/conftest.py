"""Fixtures shared by the whole suite, each made once per test session: a local Ray
instance, one S3 protocol server of each kind (``tests/_s3.py``), and mnist1d."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._s3 import S3, start_server, stop_server

os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """A quiet local Ray instance shared by every test that needs one (ray.init costs seconds)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3]:
    """A moto S3 server on 127.0.0.1 that accepts any credentials."""
    server = start_server(tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="session")
def s3_strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3]:
    """A moto S3 server on 127.0.0.1 that authenticates every request (anonymous
    ones are refused)."""
    server = start_server(
        tmp_path_factory.mktemp("moto-strict") / "moto.log", INITIAL_NO_AUTH_ACTION_COUNT="0"
    )
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="session")
def mnist1d_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory holding mnist1d's cache file, generated once per session
    (or copied from the user's data directory); trials only read it."""
    from trainables.data import default_data_dir, load_dataset

    path = tmp_path_factory.mktemp("data")
    cached = default_data_dir() / "mnist1d" / "mnist1d.npz"
    if cached.is_file():
        (path / "mnist1d").mkdir()
        shutil.copy(cached, path / "mnist1d" / "mnist1d.npz")
    else:
        load_dataset({"dataset": "mnist1d", "data_dir": str(path)})
    return path
