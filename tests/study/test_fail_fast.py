"""A study that cannot run is refused before it launches: one line, exit 2, within
15 s, and no study directory written.

Cases: no Ray cluster at ``--address``; a dataset that is not on disk and
cannot be downloaded (the download host is unreachable); GPUs the cluster
does not have; a storage that cannot be written. Also: trial failures on bad
input are not retried ``max_failures`` times, and a diverged trial is a
result.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from study.cli import main
from study.config import parse_study
from tests.study._cli_driver import REPO, command, driver_env

LIMIT_S = 15.0


def _refused(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    """Run ``xsam-tune ARGV`` in-process; check exit 2, one line, time; return the line."""
    start = time.monotonic()
    rc = main(argv)
    took = time.monotonic() - start
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert rc == 2, captured.out + captured.err
    assert len(err) == 1 and err[0].startswith("xsam-tune: error: "), captured.err
    assert took < LIMIT_S, took
    return err[0]


def test_no_cluster_at_address(tmp_path: Path, write_study, base) -> None:
    storage = tmp_path / "studies"
    args = ["run", str(write_study(base)), "--storage", str(storage), "--address"]
    with driver_env(tmp_path) as env:
        for address in ("127.0.0.1:1", "ray://127.0.0.1:1"):
            start = time.monotonic()
            proc = subprocess.run(
                command(*args, address),
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            took = time.monotonic() - start
            assert proc.returncode == 2, proc.stdout + proc.stderr
            lines = proc.stderr.strip().splitlines()
            assert lines == [
                f"xsam-tune: error: no Ray cluster answers at {address} "
                "(127.0.0.1:1: Connection refused)"
            ], proc.stderr
            assert took < LIMIT_S, took
    assert not storage.exists()


def test_dataset_not_on_disk_and_offline(
    tmp_path: Path, write_study, base, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trainables._ondisk as ondisk

    # An unreachable download host, whatever this machine's network: offline.
    monkeypatch.setitem(ondisk.DOWNLOAD_HOSTS, "cifar10", ("127.0.0.1", 1))
    empty = tmp_path / "no-data"
    base["trial"].update(dataset="cifar10", model="mlp", data_dir=str(empty))
    base["trial"].pop("fake_shape")
    storage = tmp_path / "studies"
    line = _refused(capsys, ["run", str(write_study(base)), "--storage", str(storage)])
    assert f"cifar10 is not in data directory {empty} and cannot be downloaded" in line
    assert "127.0.0.1: Connection refused" in line
    assert not storage.exists() and not empty.exists()
    # on disk (the extracted folder): accepted by the check
    (empty / "cifar-10-batches-py").mkdir(parents=True)
    assert ondisk.dataset_missing({"dataset": "cifar10", "data_dir": str(empty)}) is None


def test_dataset_probe_does_not_wait_for_a_silent_host() -> None:
    from trainables._ondisk import host_reachable

    start = time.monotonic()
    # 192.0.2.1 (TEST-NET-1) is never routed: a connect there hangs or fails
    why = host_reachable("192.0.2.1", 443, timeout=1.0)
    assert why is not None and time.monotonic() - start < 3.0


def test_gpus_this_machine_does_not_have(
    tmp_path: Path, write_study, base, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ray is to start here: refused before it starts, from the machine's GPUs.
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU visible, whatever the machine
    base["resources"] = {"gpu": 1}
    storage = tmp_path / "studies"
    line = _refused(capsys, ["run", str(write_study(base)), "--storage", str(storage)])
    assert line == (
        "xsam-tune: error: resources.gpu: each trial asks for 1 GPU, this machine has 0 "
        "(use --address to run on a cluster)"
    )
    assert not storage.exists()


@pytest.mark.ray
def test_gpus_the_cluster_does_not_have(base, ray_studies: None) -> None:
    import ray

    from study._errors import StudyLaunchError
    from study._preflight import check_resources

    assert ray.cluster_resources().get("GPU", 0) == 0  # the test session's Ray has none
    base["resources"] = {"gpu": 0.5}
    with pytest.raises(StudyLaunchError) as err:
        check_resources(parse_study(base))
    assert str(err.value) == "resources.gpu: each trial asks for 0.5 GPU, the Ray cluster has 0"


def test_storage_not_writable(tmp_path: Path, write_study, base, capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    line = _refused(capsys, ["run", str(write_study(base)), "--storage", str(blocker / "s")])
    assert (
        line == f"xsam-tune: error: storage {blocker / 's'}: {blocker} is a file, not a directory"
    )
    if os.geteuid() == 0:
        return  # root writes through permission bits: only the case above applies
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    line = _refused(capsys, ["run", str(write_study(base)), "--storage", str(locked / "s")])
    assert "is not writable" in line
    assert not (locked / "s").exists()


# --------------------------------------------------------------------------
# faults during the run (the shared Ray instance, in-process)
# --------------------------------------------------------------------------


@pytest.fixture
def light(ray_studies: None) -> str:
    """``--trainable`` for the light trainable, sent to workers by value."""
    import ray

    import tests.study._console_trainables as module

    ray.cloudpickle.register_pickle_by_value(module)
    return f"{module.__name__}:slow_rows"


def _attempts(data: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in (data / "starts.txt").read_text().splitlines():
        trial = line.split()[1]
        out[trial] = out.get(trial, 0) + 1
    return out


@pytest.mark.ray
def test_bad_input_is_not_retried_and_diverged_is_a_result(
    tmp_path: Path, write_study: Callable[[dict[str, Any]], Path], base, capsys, light: str
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "fail").write_text("")
    base["trial"].update(epochs=2, data_dir=str(data))
    base["space"] = {"optimizer": {"grid": ["sgd", "sam", "xsam"]}, "seed": {"grid": [1]}}
    base["max_failures"] = 2
    storage = tmp_path / "studies"
    argv = ["run", str(write_study(base)), "--storage", str(storage), "--trainable", light]
    rc = main(argv)
    out = capsys.readouterr().out
    assert rc == 1, out
    attempts = _attempts(data)
    by_optimizer = {}
    for trial_dir in (storage / "tiny").iterdir():
        if trial_dir.is_dir() and "optimizer=" in trial_dir.name:
            trial = trial_dir.name.split("_")[0] + "_" + trial_dir.name.split("_")[1]
            optimizer = trial_dir.name.split("optimizer=")[1].split(",")[0]
            by_optimizer[optimizer] = attempts.get(trial, 0)
    # bad input (ConfigError): the first attempt and the retry Ray had queued, not 3
    assert by_optimizer["sam"] == 2, (by_optimizer, out)
    # anything else is retried max_failures times
    assert by_optimizer["xsam"] == 3, (by_optimizer, out)
    errored = [ln for ln in out.splitlines() if ln.startswith("errored")]
    assert len(errored) == 2, out
    assert any("ConfigError: rho" in ln for ln in errored), errored
    assert not any(ln.startswith("retry") and "ConfigError" in ln for ln in out.splitlines())
    table = out.split("trials by test_acc (max): ", 1)[1]
    assert table.startswith("1 diverged, 2 errored"), out
