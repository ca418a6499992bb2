"""Trial state files are read without running anything in them (issue 9, item 1)."""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from trainables.loop import CheckpointError, Trial, read_state

FAST = {"epochs": 2, "batch_size": 256, "threads": 1}


class _Marker:
    """Unpickling this creates a file: the side effect the loader must not run."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):  # the pickle protocol's hook
        return (os.mknod, (self.path,))


def _crafted_zip(path: Path, marker: Path) -> None:
    """A checkpoint in torch's own zip format whose pickle calls ``os.mknod``."""
    buffer = io.BytesIO()
    torch.save({"config": {}, "epoch": 1, "model": _Marker(str(marker))}, buffer)
    path.write_bytes(buffer.getvalue())


def _crafted_pickle(path: Path, marker: Path) -> None:
    """A plain pickle (torch's legacy format) with the same side effect."""
    path.write_bytes(pickle.dumps({"epoch": 1, "model": _Marker(str(marker))}))


@pytest.mark.parametrize("craft", [_crafted_zip, _crafted_pickle])
def test_a_crafted_checkpoint_does_not_execute(tmp_path: Path, craft) -> None:
    marker = tmp_path / "pwned"
    state = tmp_path / "checkpoint_000001" / "trial_state.pt"
    state.parent.mkdir()
    craft(state, marker)
    # the crafted file does run code when loaded the unsafe way (the test can fail)
    if craft is _crafted_pickle:
        pickle.loads(state.read_bytes())
        assert marker.exists()
        marker.unlink()
    trial = Trial({"optimizer": "sgd", **FAST})
    with pytest.raises(CheckpointError) as info:
        trial.load(state)
    assert not marker.exists()
    message = str(info.value)
    assert str(state) in message and "\n" not in message


@pytest.mark.parametrize("content", [b"", b"garbage", b"PK\x03\x04 truncated zip"])
def test_a_damaged_checkpoint_is_one_error_naming_the_file(tmp_path: Path, content) -> None:
    state = tmp_path / "trial_state.pt"
    state.write_bytes(content)
    with pytest.raises(CheckpointError, match=r"trial state .*trial_state\.pt"):
        read_state(state)


def test_a_tensor_file_that_is_not_a_trial_state_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "trial_state.pt"
    torch.save({"weights": torch.zeros(2)}, state)
    with pytest.raises(CheckpointError, match="not a trial state"):
        read_state(state)


@pytest.mark.parametrize("optimizer", ["sgd", "xsam", "gsam", "wsam"])
def test_every_optimizer_state_loads_with_weights_only(tmp_path: Path, optimizer: str) -> None:
    """What the loop writes passes the safe loader and resumes bit for bit."""
    config = {"optimizer": optimizer, "steps": 2, "diagnostics": True, **FAST}
    straight = list(Trial(config).rows())
    first = Trial(config)
    next(first.rows())
    first.save(tmp_path / "state.pt")
    # weights_only=True without mmap too: what torch itself accepts
    torch.load(tmp_path / "state.pt", weights_only=True)
    resumed = Trial(config)
    resumed.load(tmp_path / "state.pt")
    rows = list(resumed.rows())
    assert [r["epoch"] for r in rows] == [2]
    for key in ("train_loss", "test_loss", "test_acc", "alpha", "step"):
        assert rows[0][key] == straight[1][key] or (
            rows[0][key] != rows[0][key] and straight[1][key] != straight[1][key]
        ), key


def test_the_zip_checkpoint_names_its_pickle(tmp_path: Path) -> None:
    """Sanity of the crafted file: torch's zip format with a data.pkl inside."""
    state = tmp_path / "x.pt"
    _crafted_zip(state, tmp_path / "never")
    with zipfile.ZipFile(state) as z:
        assert any(n.endswith("data.pkl") for n in z.namelist())


def test_a_full_disk_while_reporting_a_checkpoint_is_one_clear_error(monkeypatch) -> None:
    """ENOSPC from Ray's checkpoint copy: StorageFullError (errno ENOSPC, one line,
    picklable for Ray), after the rows reported before it."""
    import errno

    from ray import tune

    import trainables.tune as trainable

    reported: list[int] = []

    def report(row: dict, checkpoint=None) -> None:
        if row["epoch"] == 2:
            raise OSError("IOError: [Errno 28] No space left on device")  # pyarrow's kind
        reported.append(row["epoch"])

    monkeypatch.setattr(tune, "report", report)
    monkeypatch.setattr(tune, "get_checkpoint", lambda: None)
    with pytest.raises(trainable.StorageFullError) as info:
        trainable.train_trial({"optimizer": "sgd", **FAST, "epochs": 3})
    assert reported == [1]
    error = info.value
    assert error.errno == errno.ENOSPC and "epoch 2" in str(error) and "\n" not in str(error)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is trainable.StorageFullError and str(copy) == str(error)
