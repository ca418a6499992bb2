"""Durable study directories (issue 9): what a resume reads, where it writes, faults.

- A crafted trial state in a study does not run on resume; the line names it.
- A damaged run state is refused before Ray starts: never a foreign trial.
- A moved (and renamed) interrupted study resumes into its new directory only,
  with every trial and epoch exactly once; its new trials too.
- A torn ``result.json`` row is cut on resume; no earlier row is lost.
- A full disk (ENOSPC from a file-system stub) leaves every file as it was.
"""

from __future__ import annotations

import copy
import errno
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from study import parse_study, run_study
from study._verify import repair_torn_rows
from study._yaml import dump_yaml
from study.cli import main
from tests.study.conftest import BASE

EPOCHS = 3


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert "Traceback" not in captured.err, captured.err
    assert len(lines) == 1, captured.err
    return lines[0]


def _files(root: Path) -> dict[str, float]:
    """Every file under ``root`` with its modification time."""
    return {str(p.relative_to(root)): p.stat().st_mtime for p in root.rglob("*") if p.is_file()}


# -- no Ray: a study directory written by hand --------------------------------


def _study_dir(tmp_path: Path) -> Path:
    spec = parse_study(copy.deepcopy(BASE)).to_dict()
    study_dir = tmp_path / "tiny"
    study_dir.mkdir()
    (study_dir / "study.yaml").write_text(dump_yaml(spec))
    record = {k: spec[k] for k in ("space", "trial", "search")}
    (study_dir / "study.json").write_text(json.dumps({"name": "tiny", **record}))
    (study_dir / "tuner.pkl").write_bytes(b"\x80\x05N.")
    return study_dir


def _trial(study_dir: Path, config: dict[str, Any]) -> Path:
    trial = study_dir / "abc_optimizer=sgd,seed=0"
    trial.mkdir()
    (trial / "params.json").write_text(json.dumps(config))
    return trial


def _sgd_config() -> dict[str, Any]:
    return {**BASE["trial"], "checkpoint_every": 1, "optimizer": "sgd", "seed": 0}


def test_a_crafted_trial_state_in_a_study_does_not_run_on_resume(tmp_path: Path, capsys) -> None:
    import ray

    from tests.trainables.test_checkpoint_safety import _crafted_zip

    study_dir = _study_dir(tmp_path)
    checkpoint = _trial(study_dir, _sgd_config()) / "checkpoint_000001"
    checkpoint.mkdir()
    marker = tmp_path / "pwned"
    _crafted_zip(checkpoint / "trial_state.pt", marker)
    was = ray.is_initialized()
    assert main(["resume", str(study_dir)]) == 2
    line = _one_line(capsys)
    assert not marker.exists()
    assert str(checkpoint / "trial_state.pt") in line and "refused unread" in line
    assert ray.is_initialized() == was  # refused before Ray starts


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"epochs": 40}, "epochs=40, the study fixes 3"),
        ({"optimizer": "gsam"}, "optimizer='gsam', not in grid"),
        ({"lr": 0.5}, "lr=0.5, a key the study does not set"),
    ],
)
def test_a_trial_record_with_a_foreign_config_is_refused(
    tmp_path: Path, change: dict[str, Any], words: str, capsys
) -> None:
    study_dir = _study_dir(tmp_path)
    params = _trial(study_dir, {**_sgd_config(), **change}) / "params.json"
    assert main(["resume", str(study_dir)]) == 2
    line = _one_line(capsys)
    assert f"trial record {params}: its config has {words}" in line


def test_a_torn_result_row_is_cut_and_no_earlier_row_is_lost(tmp_path: Path) -> None:
    rows = [{"epoch": e, "test_acc": 0.5} for e in (1, 2)]
    whole = "".join(json.dumps(r) + "\n" for r in rows)
    trial = tmp_path / "t1"
    trial.mkdir()
    (trial / "result.json").write_text(whole + '{"epoch": 3, "test_a')
    (trial / "progress.csv").write_text("epoch,test_acc\n1,0.5\n2,0.5\n3,0.")
    intact = tmp_path / "t2"
    intact.mkdir()
    (intact / "result.json").write_text(whole)
    assert repair_torn_rows(str(tmp_path)) == [
        str(trial / "result.json"),
        str(trial / "progress.csv"),
    ]
    assert (trial / "result.json").read_text() == whole
    assert (trial / "progress.csv").read_text() == "epoch,test_acc\n1,0.5\n2,0.5\n"
    assert (intact / "result.json").read_text() == whole
    # a row cut inside its JSON but at a newline boundary of the file is cut too
    (trial / "result.json").write_text(whole + '{"epoch": 3,\n')
    repair_torn_rows(str(tmp_path))
    assert (trial / "result.json").read_text() == whole


def _enospc(*args: Any, **kwargs: Any) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_while_saving_keeps_the_previous_trial_state(
    tmp_path: Path, monkeypatch
) -> None:
    import torch

    from trainables.loop import Trial, read_state

    trial = Trial({"optimizer": "sgd", "epochs": 2, "batch_size": 256, "threads": 1})
    next(trial.rows())
    state = tmp_path / "trial_state.pt"
    trial.save(state)
    before = state.read_bytes()
    next(trial.rows())

    def half_then_full(obj: Any, fh: Any, *args: Any, **kwargs: Any) -> None:
        fh.write(b"PK\x03\x04 half a zip")
        _enospc()

    monkeypatch.setattr(torch, "save", half_then_full)
    with pytest.raises(OSError) as info:
        trial.save(state)
    assert info.value.errno == errno.ENOSPC
    assert state.read_bytes() == before and read_state(state)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["trial_state.pt"]  # no temporary left


def test_a_full_disk_while_writing_the_study_record(tmp_path: Path, monkeypatch, capsys) -> None:
    """study.json under ENOSPC: one line, exit non-zero, the old record intact."""
    import study._record as record

    study_dir = _study_dir(tmp_path)
    before = (study_dir / "study.json").read_bytes()
    monkeypatch.setattr("xsam_contract._io.os.fsync", _enospc)
    with pytest.raises(OSError):
        record.mark_resumed(str(study_dir), ["xsam-tune", "resume"])
    assert (study_dir / "study.json").read_bytes() == before
    assert sorted(p.name for p in study_dir.iterdir()) == ["study.json", "study.yaml", "tuner.pkl"]


@pytest.mark.ray
def test_a_full_disk_when_a_study_starts_is_one_line(
    ray_studies: None, tmp_path: Path, monkeypatch, capsys
) -> None:
    """ENOSPC from the file system (fsync stub) while the study record is written:
    one line naming the full storage and the resume, exit 1, no half-written file."""
    path = tmp_path / "study.yaml"
    path.write_text(json.dumps(BASE))
    monkeypatch.setattr("xsam_contract._io.os.fsync", _enospc)
    storage = tmp_path / "studies"
    assert main(["run", str(path), "--storage", str(storage), "-q"]) == 1
    line = _one_line(capsys)
    assert line.startswith("xsam-tune: error: storage full: ") and "xsam-tune resume" in line
    assert [p.name for p in storage.rglob("*") if p.is_file()] == []


# -- Ray: an interrupted study, moved, damaged, resumed ----------------------


def interrupting_rows(config: dict[str, Any]) -> None:
    """Report ``epochs`` rows with a checkpoint each; in epoch 2 of the first trial to
    get there, send SIGINT to the driver whose pid is in ``<data_dir>/pid`` (once)."""
    from ray import tune

    data = Path(config["data_dir"])
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            start = json.loads(Path(d, "state.json").read_text())["epoch"]
    for epoch in range(start + 1, config["epochs"] + 1):
        if epoch == 2 and (data / "pid").exists():
            try:
                os.close(os.open(data / "sent", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:
                os.kill(int((data / "pid").read_text()), signal.SIGINT)
                time.sleep(3)  # the driver stops scheduling meanwhile
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            Path(d, "state.json").write_text(json.dumps({"epoch": epoch}))
            row = {"epoch": epoch, "test_acc": 0.5 + 0.01 * epoch, "time_epoch": 0.1}
            tune.report(row, checkpoint=tune.Checkpoint.from_directory(d))


@pytest.fixture
def interrupting(ray_studies: None) -> Iterator[Any]:
    import ray

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield interrupting_rows


def _epochs(study_dir: Path) -> dict[str, list[int]]:
    out = {}
    for params in study_dir.glob("*/params.json"):
        result = params.parent / "result.json"
        rows = result.read_text().splitlines() if result.exists() else []
        out[params.parent.name] = [json.loads(r)["epoch"] for r in rows]
    return out


@pytest.mark.ray
@pytest.mark.parametrize("kind", ["list", "native"])
def test_a_moved_interrupted_study_resumes_only_in_its_new_directory(
    interrupting: Any, tmp_path: Path, kind: str, capsys
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "pid").write_text(str(os.getpid()))
    study = copy.deepcopy(BASE)
    study["trial"].update(data_dir=str(data), epochs=EPOCHS)
    study["max_concurrent_trials"] = 1
    if kind == "native":  # no conditions: Ray's own grid generator
        study["space"] = {"seed": {"grid": [0, 1, 2, 3]}}
    else:  # conditions: the project's ListSearcher, 5 trials
        study["space"]["seed"] = {"grid": [0]}
    total = 5 if kind == "list" else 4
    first = tmp_path / "first"
    results = run_study(parse_study(study), storage=str(first), trainable=interrupting, verbose=0)
    assert len(results) < total or results.num_terminated < total  # interrupted
    before = _epochs(first / "tiny")
    assert before and sum(len(e) for e in before.values()) < total * EPOCHS

    # a copy with its run state cut in half: refused, nothing run or written
    damaged = tmp_path / "damaged" / "tiny"
    shutil.copytree(first / "tiny", damaged)
    state = max(damaged.glob("experiment_state-*.json"))
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    files = _files(damaged)
    assert main(["resume", str(damaged), "--trainable", f"{__name__}:interrupting_rows"]) == 2
    line = _one_line(capsys)
    assert f"run state {state} is damaged" in line and "restore" in line
    assert _files(damaged) == files

    # moved and renamed: the resume writes only there, every trial and epoch once
    moved = tmp_path / "elsewhere" / "renamed"
    moved.parent.mkdir()
    shutil.move(str(first / "tiny"), str(moved))
    results = resume_study_quietly(moved, interrupting)
    assert results.num_errors == 0
    assert not (first / "tiny").exists()
    after = _epochs(moved)
    assert len(after) == total and all(e == list(range(1, EPOCHS + 1)) for e in after.values())


def resume_study_quietly(path: Path, trainable: Any) -> Any:
    from study import resume_study

    return resume_study(str(path), trainable=trainable, verbose=0)


def test_the_trial_guard_stops_a_trial_the_study_does_not_define() -> None:
    """What a resume does when Ray starts the study anew from the bare space."""
    from study import StudyLaunchError
    from study._verify import TrialGuard

    guard = TrialGuard(parse_study(copy.deepcopy(BASE)))

    class Trial:
        trial_id = "abc"
        config = _sgd_config()

    guard.on_trial_start(0, [], Trial())  # one of the study's trials: nothing happens
    Trial.config = {"optimizer": "sgd", "seed": 0}  # the swept keys only, defaults for the rest
    with pytest.raises(
        StudyLaunchError, match=r"trial abc: its config has dataset=null, the study fixes .fake."
    ):
        guard.on_trial_start(0, [], Trial())


def test_a_ray_file_cut_by_a_full_disk_is_one_line(tmp_path: Path, monkeypatch) -> None:
    """Ray reads its trials' pickled errors back after the run; a full disk cut them
    (seen with a 1 MB tmpfs): ENOSPC when the storage is full, else a launch error."""
    import pickle
    import shutil as sh
    from collections import namedtuple

    from study import StudyLaunchError
    from study._verify import unreadable_ray_file

    cut = pickle.UnpicklingError("pickle data was truncated")
    error = unreadable_ray_file(str(tmp_path), cut)
    assert isinstance(error, StudyLaunchError) and "xsam-tune resume" in str(error)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(sh, "disk_usage", lambda path: usage(1 << 20, 1 << 20, 0))
    error = unreadable_ray_file(str(tmp_path), cut)
    assert isinstance(error, OSError) and error.errno == errno.ENOSPC
    assert "pickle data was truncated" in str(error)
