"""Which clock the within-trial overhead estimate reads: CPU seconds on the CPU, wall on a GPU."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis._overhead import epoch_shares


def _frames(device: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    trials = pd.DataFrame({"trial_id": ["t"], "optimizer": ["xsam"], "steps": [1]})
    epochs = pd.DataFrame(
        {
            "trial_id": ["t", "t"],
            "epoch": [1, 2],
            "device": [device, device],
            # wall: a neighbour stretched the probe phase; CPU: the trial's own work
            "time_ascent": [1.0, 1.0],
            "time_descent": [1.0, 1.0],
            "time_probe": [1.0, 1.0],
            "time_update": [0.2, 0.2],
            "cpu_ascent": [1.0, 1.0],
            "cpu_descent": [1.0, 1.0],
            "cpu_probe": [0.1, 0.1],
            "cpu_update": [0.1, 0.1],
            "n_forward": [85, 85],
            "n_backward": [64, 64],
            "n_probe_forward": [21, 21],
        }
    )
    return trials, epochs


@pytest.mark.parametrize(
    ("device", "clock", "probe_pct"), [("cpu", "cpu", 5.0), ("cuda:0", "wall", 50.0)]
)
def test_the_clock_follows_the_device(device: str, clock: str, probe_pct: float) -> None:
    shares = epoch_shares(*_frames(device))
    assert list(shares["epoch"]) == [2]  # the first epoch carries warm-up
    assert shares["clock"].iloc[0] == clock
    assert shares["probe_pct"].iloc[0] == pytest.approx(probe_pct)


def test_rows_without_cpu_columns_fall_back_to_wall_time() -> None:
    trials, epochs = _frames("cpu")
    shares = epoch_shares(trials, epochs.drop(columns=[c for c in epochs if c.startswith("cpu_")]))
    assert shares["clock"].iloc[0] == "wall" and shares["probe_pct"].iloc[0] == pytest.approx(50.0)
