"""The Ray Tune trainable: a real local Tune run, checkpoints, relative paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from ray import tune

from trainables.loop import METRICS
from trainables.tune import STATE_FILE, resolve_paths, train_trial

pytestmark = pytest.mark.ray


def test_two_trials_through_tune(ray_session: None, mnist1d_dir: Path, tmp_path: Path) -> None:
    tuner = tune.Tuner(
        train_trial,
        param_space={
            "optimizer": tune.grid_search(["sam", "xsam"]),
            "epochs": 2,
            "batch_size": 500,
            "threads": 1,
            # the session's cached mnist1d: each trial generating its own took seconds
            "data_dir": str(mnist1d_dir),
        },
        tune_config=tune.TuneConfig(reuse_actors=True),
        run_config=tune.RunConfig(name="two", storage_path=str(tmp_path / "studies"), verbose=0),
    )
    grid = tuner.fit()
    assert len(grid) == 2 and not grid.errors
    for result in grid:
        df = result.metrics_dataframe
        assert len(df) == 2
        # `probes` holds lists: Ray's flat dataframe keeps the scalar columns
        assert set(METRICS) - {"probes"} <= set(df.columns)
        assert result.checkpoint is not None
        with result.checkpoint.as_directory() as d:
            assert (Path(d) / STATE_FILE).exists()
    xsam = next(r for r in grid if r.config["optimizer"] == "xsam")
    assert xsam.metrics_dataframe["alpha_refreshed"].all()


def test_relative_data_dir_is_relative_to_the_launch_directory(monkeypatch) -> None:
    monkeypatch.setenv("TUNE_ORIG_WORKING_DIR", "/launch/here")
    assert resolve_paths({"data_dir": "data"})["data_dir"] == os.path.join("/launch/here", "data")
    assert resolve_paths({"data_dir": "/abs"})["data_dir"] == "/abs"
    assert resolve_paths({}) == {}
