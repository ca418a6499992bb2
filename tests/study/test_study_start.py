"""A study's start on an instance it starts itself (issue 14).

Ray starts one worker per CPU as the first driver connects; the trials must
run in those workers (with the trials' imports preloaded), not wait for new
ones. Three private pieces of Ray make that work and are checked here: the
variable through which a worker runs its setup hook, Ray Tune's runtime
environment for trial actors, and (end to end) that no worker had to be
started for the study's job.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import pytest

from study import _cluster
from tests.study._cli_driver import SLOW_ROWS, driver_env, run, tiny_study

TIMEOUT = 240


class _Trainable:
    """A stand-in class for Ray Tune's actor class cache (never started)."""


def _actor_env(inherited: dict[str, str]) -> dict:
    from ray.tune.execution import class_cache

    with _cluster.trials_on_first_workers(inherited):
        remote = class_cache._ActorClassCache().get(_Trainable)
    return remote._default_options.get("runtime_env") or {}


def test_tune_passes_its_actor_variables_only_where_the_workers_lack_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ray.tune.execution import class_cache

    # The variables Tune gives each trial actor are the ones the instance's workers get.
    assert class_cache.DEFAULT_ENV_VARS == _cluster.TUNE_ACTOR_ENV
    monkeypatch.delenv("RAY_CHDIR_TO_TRIAL_DIR", raising=False)
    inherited = {**os.environ, **_cluster.TUNE_ACTOR_ENV}
    assert not _actor_env(inherited).get("env_vars")  # the first workers fit
    # Workers that did not inherit them get them from Tune, as without the study layer.
    assert _actor_env({})["env_vars"] == _cluster.TUNE_ACTOR_ENV
    monkeypatch.setenv("RAY_CHDIR_TO_TRIAL_DIR", "0")  # set after the instance started
    assert _actor_env(inherited)["env_vars"] == {"RAY_CHDIR_TO_TRIAL_DIR": "0"}
    # Tune's own constants are back after the connection.
    assert class_cache.DEFAULT_ENV_VARS == _cluster.TUNE_ACTOR_ENV
    assert "RAY_CHDIR_TO_TRIAL_DIR" in class_cache.ENV_VARS_TO_PROPAGATE


def test_the_setup_hook_is_inherited_only_while_ray_starts() -> None:
    from ray._private import ray_constants
    from ray._private.workers import default_worker

    name = ray_constants.WORKER_PROCESS_SETUP_HOOK_ENV_VAR
    # Ray's workers run the hook that variable names, before their task loop.
    assert f"os.getenv(\n        ray_constants.{'WORKER_PROCESS_SETUP_HOOK_ENV_VAR'}" in (
        inspect.getsource(default_worker)
    )
    assert name not in os.environ
    with _cluster.inherited_setup_hook("trainables.tune.preload_worker"):
        assert os.environ[name] == "trainables.tune.preload_worker"
    assert name not in os.environ
    with _cluster.inherited_setup_hook(None):
        assert name not in os.environ


@pytest.mark.ray
@pytest.mark.slow
def test_the_trials_run_in_the_workers_ray_starts_with_the_instance(tmp_path: Path) -> None:
    study = tiny_study(tmp_path, "first", tmp_path / "data", epochs=1, seeds=(0,))
    with driver_env(tmp_path, XSAM_TEST_EPOCH_S="0") as env:
        done = run(
            [
                "run",
                str(study),
                "--storage",
                str(tmp_path / "studies"),
                "-q",
                "--trainable",
                SLOW_ROWS,
            ],
            env,
            timeout=TIMEOUT,
        )
        assert done.returncode == 0, done.stderr
        logs = Path(env["XSAM_TUNE_RAY_TMP"]) / "session_latest" / "logs"
        # Ray names a worker's log after the job it was started for: ffffffff for
        # the workers started with the instance, 01000000 for the study's own.
        started_with = sorted(p.name.split("-")[2] for p in logs.glob("worker-*.out"))
    assert started_with and set(started_with) == {"ffffffff"}, started_with


def test_a_background_import_is_done_when_the_block_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.delitem(sys.modules, "calendar", raising=False)
    with _cluster._importing("calendar"):
        pass
    assert "calendar" in sys.modules
    with _cluster._importing("no_such_module_of_xsam"):  # left for its first real use
        pass
    assert "no_such_module_of_xsam" not in sys.modules
