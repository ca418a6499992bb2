"""A study whose storage fills up mid-run resumes once space is freed (issue 9).

The storage is a real 2 MB tmpfs mounted for the test (the machine's own file
system code, not a stub: Ray, pyarrow and the project all hit ENOSPC where
they really would). The last trial fills it to the last byte in its third epoch,
once another trial's rows are all in the study directory, so every later
write of Ray's driver (its run state, searcher state, rows, errors) and of the
trials (checkpoints) fails. Then:

- the run ends in one line, ``storage full``, exit 1;
- every file in the study directory is whole (each parses; no row is cut);
- with the filler removed, ``xsam-tune resume`` continues the study, and every
  trial ends with each epoch exactly once, its rows equal to those of the trial
  run without a fault (each row depends on the state restored from the
  trial's checkpoint, so a wrong or replayed checkpoint shows).

The study is resumed in the test's own Ray session, where Ray's local copy of
each trial's rows from the first run is still there (a resume from another
process starts without it): the harder case.

Mounting needs root (CI runs as root); elsewhere the test is skipped with that
reason: a stub raising ENOSPC in this process would not reach Ray's workers.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from study.cli import main
from tests.study.conftest import BASE

EPOCHS = 4
SEEDS = [0, 1, 2, 3]
#: The trial (by seed) and epoch at which the storage is filled: the last trial,
#: once another one's rows are all in the study directory.
FILL_AT = {"seed": 3, "epoch": 3}
#: Longest the filling trial waits for those rows (the test then fails on what it finds).
WAIT_S = 60.0


def filling_rows(config: dict[str, Any]) -> None:
    """Report ``epochs`` rows with a checkpoint each; each row's value depends on the
    state restored from the last checkpoint. In epoch ``FILL_AT`` of its trial, fill
    the disk named in ``<data_dir>/fill.json`` (once: a marker in ``data_dir``)."""
    from ray import tune

    data = Path(config["data_dir"])
    epoch, total = 0, 0.0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            state = json.loads(Path(d, "state.json").read_text())
        epoch, total = state["epoch"], state["total"]
    plan = data / "fill.json"
    while epoch < config["epochs"]:
        epoch += 1
        total = _next(total, config["seed"], epoch)
        if plan.exists() and (config["seed"], epoch) == (FILL_AT["seed"], FILL_AT["epoch"]):
            try:
                os.close(os.open(data / "filled", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:
                disk = Path(json.loads(plan.read_text())["disk"])
                _wait_for_a_finished_trial(disk)
                _fill(disk / "filler")
        with tempfile.TemporaryDirectory() as d:
            Path(d, "state.json").write_text(json.dumps({"epoch": epoch, "total": total}))
            row = {"epoch": epoch, "test_acc": total, "time_epoch": 0.01}
            tune.report(row, checkpoint=tune.Checkpoint.from_directory(d))


def _next(total: float, seed: int, epoch: int) -> float:
    """The row value of ``epoch``: it depends on every epoch before it."""
    return round(total * 0.5 + 0.1 * seed + 0.01 * epoch, 12)


def _uninterrupted(seed: int) -> list[tuple[int, float]]:
    """(epoch, test_acc) of every row of a trial run without a fault."""
    rows, total = [], 0.0
    for epoch in range(1, EPOCHS + 1):
        total = _next(total, seed, epoch)
        rows.append((epoch, total))
    return rows


def _wait_for_a_finished_trial(disk: Path) -> None:
    """Until some trial's ``result.json`` in the study directory holds every epoch."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        for result in disk.glob("*/*/result.json"):
            if len(result.read_bytes().splitlines()) >= EPOCHS:
                return
        time.sleep(0.2)


def _fill(path: Path) -> None:
    """Write ``path`` until the file system has no byte left."""
    block = b"\0" * 65536
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(block)
        except OSError:
            pass
        try:  # the last partial block
            while True:
                f.write(b"\0" * 512)
        except OSError:
            pass


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs, unmounted at the end."""
    path = tmp_path / "disk"
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    mount = ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(path)]
    done = subprocess.run(mount, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def filling(ray_studies: None) -> str:
    """``--trainable`` naming :func:`filling_rows`, which the workers get by value."""
    import ray

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    return f"{__name__}:filling_rows"


def _study(tmp_path: Path, data: Path) -> Path:
    study = copy.deepcopy(BASE)
    study["trial"].update(data_dir=str(data), epochs=EPOCHS, optimizer="sgd")
    study["space"] = {"seed": {"grid": SEEDS}}
    study["checkpoint_every"] = 1
    path = tmp_path / f"{data.name}.yaml"
    path.write_text(json.dumps(study))
    return path


def _rows(study_dir: Path) -> dict[int, list[tuple[int, float]]]:
    """(epoch, test_acc) of each trial's rows, by seed; every line must parse."""
    out = {}
    for params in study_dir.glob("*/params.json"):
        seed = json.loads(params.read_text())["seed"]
        result = params.parent / "result.json"
        lines = result.read_text().splitlines() if result.exists() else []
        out[seed] = [(r["epoch"], r["test_acc"]) for r in map(json.loads, lines)]
    return out


def _whole(study_dir: Path) -> None:
    """Every file Ray or the project wrote is whole: JSON parses, a pickle is framed
    (checked, not loaded), every row of ``result.json`` parses."""
    pickles = ("*.pkl", "basic-variant-state-*", "search_gen_state-*")
    framed = {p for pattern in pickles for p in study_dir.rglob(pattern)}
    framed -= set(study_dir.glob("searcher-state-*"))  # the project's JSON
    for file in framed:
        data = file.read_bytes()
        assert data[:1] == b"\x80" and data[-1:] == b".", file
    for file in set(study_dir.rglob("*.json")) - framed:
        text = file.read_text()
        if file.name == "result.json":
            [json.loads(line) for line in text.splitlines()]
        else:
            json.loads(text)


@pytest.mark.ray
def test_a_study_on_a_full_disk_resumes_once_space_is_freed(
    filling: str, small_disk: Path, tmp_path: Path, capsys
) -> None:
    reference = {seed: _uninterrupted(seed) for seed in SEEDS}
    data = tmp_path / "data"
    data.mkdir()
    (data / "fill.json").write_text(json.dumps({"disk": str(small_disk)}))
    spec = _study(tmp_path, data)
    code = main(["run", str(spec), "--storage", str(small_disk), "--trainable", filling, "-q"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("xsam-tune: error: storage full: "), err
    assert (data / "filled").exists()
    study_dir = small_disk / "tiny"
    _whole(study_dir)
    before = _rows(study_dir)
    assert sum(len(r) for r in before.values()) < len(SEEDS) * EPOCHS  # stopped midway
    assert any(len(r) == EPOCHS for r in before.values()), before  # filled after a trial's end
    for seed, rows in before.items():  # what was written is the reference's beginning
        assert rows == reference[seed][: len(rows)], seed

    (small_disk / "filler").unlink()  # space freed
    code = main(["resume", str(study_dir), "--trainable", filling, "-q"])
    err = capsys.readouterr().err
    assert code == 0, err
    _whole(study_dir)
    assert _rows(study_dir) == reference  # every trial, every epoch once, same values
    assert not [p for p in study_dir.rglob(".*.tmp")]


# -- the file system Ray writes through (study._durable), without Ray ---------


def _state(trials: dict[str, str | None]) -> bytes:
    """A run state in Ray's format naming each trial folder with its newest checkpoint
    (inside the pickled checkpoint manager, as Ray writes it)."""
    import pickle

    data = []
    for folder, checkpoint in trials.items():
        paths = [f"/s/{folder}/{checkpoint}"] if checkpoint else []
        manager = {"_type": "CLOUDPICKLE_FALLBACK", "value": pickle.dumps(paths).hex()}
        meta = {"last_result": {}, "checkpoint_manager": manager}
        data.append([json.dumps({"relative_logdir": folder}), json.dumps(meta)])
    return json.dumps({"trial_data": data}).encode()


def _row(epoch: int) -> bytes:
    return (
        json.dumps({"epoch": epoch, "checkpoint_dir_name": f"checkpoint_{epoch - 1:06d}"}).encode()
        + b"\n"
    )


def _write(fs: Any, path: Path, data: bytes) -> None:
    with fs.open_output_stream(str(path)) as f:
        f.write(data)


def test_the_run_state_waits_for_the_rows_it_names(tmp_path: Path) -> None:
    from study._durable import storage_filesystem

    study_dir = tmp_path / "tiny"
    (study_dir / "t1" / "checkpoint_000000").mkdir(parents=True)
    fs = storage_filesystem("native", str(study_dir))
    state = study_dir / "experiment_state-x.json"
    searcher = study_dir / "basic-variant-state-x.json"
    _write(fs, state, _state({"t1": None}))
    _write(fs, searcher, b"\x80\x05N.")
    assert state.read_bytes() == _state({"t1": None})  # no checkpoint named: in place at once

    _write(fs, state, _state({"t1": "checkpoint_000001"}))
    _write(fs, searcher, b"\x80\x05K\x01.")
    fs.delete_dir(str(study_dir / "t1" / "checkpoint_000000"))  # Ray drops an old checkpoint
    _write(fs, study_dir / "t1" / "result.json", _row(1))
    # the row of the checkpoint it names is not stored: the former state stays, and the
    # checkpoint that one may name
    assert state.read_bytes() == _state({"t1": None})
    assert searcher.read_bytes() == b"\x80\x05N."
    assert (study_dir / "t1" / "checkpoint_000000").is_dir()
    _write(fs, state, _state({"t1": "checkpoint_000001"}))  # the next sync: still not stored
    _write(fs, study_dir / "t1" / "result.json", _row(1) + _row(2))
    assert state.read_bytes() == _state({"t1": "checkpoint_000001"})
    assert searcher.read_bytes() == b"\x80\x05K\x01."
    assert not (study_dir / "t1" / "checkpoint_000000").exists()  # a later state is in place
    assert [p.name for p in study_dir.rglob(".*")] == []  # no temporary left
    # a searcher whose state no longer changes (every trial generated): the next state
    # still goes in place
    _write(fs, state, _state({"t1": "checkpoint_000002"}))
    _write(fs, study_dir / "t1" / "result.json", _row(1) + _row(2) + _row(3))
    _write(fs, searcher, b"\x80\x05K\x01.")
    assert state.read_bytes() == _state({"t1": "checkpoint_000002"})


def test_a_run_state_still_held_back_when_the_run_ends_leaves_no_temporary(
    tmp_path: Path,
) -> None:
    """The run ends with a state that waits for rows never stored: the state in place
    stays the former one, and the held-back one's temporary file goes."""
    from study._durable import drop_held_back, storage_filesystem

    study_dir = tmp_path / "tiny"
    (study_dir / "t1").mkdir(parents=True)
    fs = storage_filesystem("native", str(study_dir))
    state = study_dir / "experiment_state-x.json"
    _write(fs, state, _state({"t1": None}))
    _write(fs, study_dir / "basic-variant-state-x.json", b"\x80\x05N.")
    _write(fs, state, _state({"t1": "checkpoint_000001"}))  # its row never comes
    assert [p.name for p in study_dir.glob(".*.tmp")]  # held back
    drop_held_back(str(study_dir))
    assert not list(study_dir.rglob(".*.tmp"))
    assert state.read_bytes() == _state({"t1": None})


def test_a_write_the_full_disk_stops_leaves_the_former_file(small_disk: Path) -> None:
    from study._durable import full_disk_error, storage_filesystem

    fs = storage_filesystem("native", str(small_disk))
    target = small_disk / "result.json"
    _write(fs, target, b'{"epoch": 1}\n')
    with pytest.raises(OSError) as info:
        _write(fs, target, b"x" * (3 << 20))  # more than the 2 MB disk holds
    assert "No space left" in str(info.value) or getattr(info.value, "errno", None) == 28
    assert target.read_bytes() == b'{"epoch": 1}\n'
    assert [p.name for p in small_disk.iterdir()] == ["result.json"]
    error = full_disk_error(None, str(small_disk.parent))
    assert error is not None and error.errno == 28


def test_rows_after_the_restored_checkpoint_are_cut(tmp_path: Path) -> None:
    from study._durable import cut_rows_after

    rows = [{"epoch": e, "checkpoint_dir_name": f"checkpoint_{e - 1:06d}"} for e in (1, 2, 3)]
    (tmp_path / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "progress.csv").write_text("epoch\n1\n2\n3\n")
    assert cut_rows_after(str(tmp_path), "checkpoint_000001")
    assert [
        json.loads(r)["epoch"] for r in (tmp_path / "result.json").read_text().splitlines()
    ] == [1, 2]
    assert (tmp_path / "progress.csv").read_text() == "epoch\n1\n2\n"
    assert not cut_rows_after(str(tmp_path), "checkpoint_000001")  # nothing after it now


def test_a_restarted_trial_keeps_the_rows_the_last_sync_had_not_stored(tmp_path: Path) -> None:
    """Ray restores a restarted trial's rows from the study directory over its local
    copy: rows only the local copy had are stored first, then those after the
    checkpoint are cut; a trial starting over keeps no local rows."""
    from types import SimpleNamespace

    from study._durable import before_trial_start

    local, stored = tmp_path / "local", tmp_path / "stored"
    local.mkdir()
    stored.mkdir()
    (local / "result.json").write_bytes(_row(1) + _row(2) + _row(3))
    (stored / "result.json").write_bytes(_row(1))  # the last sync was before rows 2 and 3
    trial = SimpleNamespace(
        checkpoint=SimpleNamespace(path=str(stored / "checkpoint_000001")),
        local_path=str(local),
        storage=SimpleNamespace(trial_fs_path=str(stored)),
    )
    before_trial_start(trial)
    assert (stored / "result.json").read_bytes() == _row(1) + _row(2)
    trial.checkpoint = None
    before_trial_start(trial)
    assert not (local / "result.json").exists()
