"""Swept parameters → trial lists, Ray Tune param_space and the Optuna space."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path
from typing import Any

import optuna
import pytest

from study import build_tune_space, expand_grid, load_study, parse_study
from study.space import OptunaSpace, count_trials, ordered_params, sample_trials, swept_grid

CONFIGS = Path(__file__).parents[2] / "configs"


def test_quickstart_runs_sgd_once_per_seed() -> None:
    cfg = load_study(CONFIGS / "quickstart.yaml")
    trials = expand_grid(cfg)
    # 2 seeds x (1 sgd + 2 sam + 2 xsam)
    assert len(trials) == count_trials(cfg) == 2 * (1 + 2 + 2)
    sgd = [t for t in trials if t["optimizer"] == "sgd"]
    assert len(sgd) == 2 and all("steps" not in t for t in sgd)
    for opt in ("sam", "xsam"):
        ks = sorted((t["steps"], t["seed"]) for t in trials if t["optimizer"] == opt)
        assert ks == [(1, 0), (1, 1), (3, 0), (3, 1)]
    fixed = cfg.trial_settings()
    assert all(t.items() >= fixed.items() for t in trials)  # fixed settings merged


def test_study_counts() -> None:
    assert count_trials(load_study(CONFIGS / "degradation.yaml")) == 4 * 2 * 3
    overhead = load_study(CONFIGS / "overhead.yaml")
    # sgd + 3 sam + 3 k x (refresh 0, 5, and 1 in two units) for xsam
    assert count_trials(overhead) == 1 + 3 + 3 * 4
    units = [t.get("refresh_unit") for t in swept_grid(overhead)]
    assert units.count("step") == units.count("epoch") == 3
    assert count_trials(load_study(CONFIGS / "sensitivity.yaml")) == 40


def test_conditions_on_several_keys(base: dict[str, Any]) -> None:
    base["space"]["rho_max"] = {"grid": [0.3, 0.6], "when": {"optimizer": "xsam", "steps": 2}}
    trials = swept_grid(parse_study(base))
    with_rho_max = [t for t in trials if "rho_max" in t]
    assert len(trials) == 2 * (1 + 2 + 3)
    assert {(t["optimizer"], t["steps"]) for t in with_rho_max} == {("xsam", 2)}


def test_condition_order_does_not_depend_on_file_order(base: dict[str, Any]) -> None:
    space = base["space"]
    base["space"] = {
        "steps": space["steps"],
        "seed": space["seed"],
        "optimizer": space["optimizer"],
    }
    cfg = parse_study(base)
    assert [p.name for p in ordered_params(cfg.space)] == ["seed", "optimizer", "steps"]
    assert len(swept_grid(cfg)) == 10


def test_num_samples_repeats_the_grid(base: dict[str, Any]) -> None:
    base["search"]["num_samples"] = 3
    assert len(expand_grid(parse_study(base))) == 30


def test_unconditional_grid_is_a_native_param_space(base: dict[str, Any]) -> None:
    del base["space"]["steps"]["when"]
    base["space"]["optimizer"]["grid"] = ["sam", "xsam"]
    tune_space = build_tune_space(parse_study(base))
    assert tune_space.kind == "native" and tune_space.num_samples == 1
    assert tune_space.param_space["steps"] == {"grid_search": [1, 2]}
    assert tune_space.param_space["epochs"] == 3
    assert tune_space.param_space["checkpoint_every"] == 1


def test_random_domains(base: dict[str, Any]) -> None:
    from ray import tune

    base["search"] = {"algorithm": "random", "num_samples": 5, "seed": 1}
    base["space"] = {
        "optimizer": {"choice": ["sam", "xsam"]},
        "rho": {"loguniform": [0.01, 1.0]},
        "rho_max": {"uniform": [0.1, 1.0]},
        "steps": {"randint": [1, 3]},
        "alpha_max": {"quniform": [1.0, 3.0, 0.5]},
        "seed": {"grid": [0, 1]},
    }
    tune_space = build_tune_space(parse_study(base))
    space = tune_space.param_space
    assert tune_space.kind == "native" and tune_space.num_samples == 5
    assert isinstance(space["optimizer"], tune.search.sample.Categorical)
    assert (space["rho"].lower, space["rho"].upper) == (0.01, 1.0)
    # randint is inclusive in study files, exclusive in Ray Tune
    assert (space["steps"].lower, space["steps"].upper) == (1, 4)
    assert space["seed"] == {"grid_search": [0, 1]}
    assert count_trials(parse_study(base)) == 10


def test_conditional_grid_is_listed(base: dict[str, Any]) -> None:
    cfg = parse_study(base)
    tune_space = build_tune_space(cfg)
    assert tune_space.kind == "list" and tune_space.trials == swept_grid(cfg)
    assert tune_space.num_samples == 10
    assert "optimizer" not in tune_space.param_space  # only fixed settings


def _random_conditional(base: dict[str, Any], seed: int = 3) -> dict[str, Any]:
    base = copy.deepcopy(base)
    base["search"] = {
        "algorithm": "random",
        "num_samples": 30,
        "seed": seed,
        "points_to_evaluate": [{"optimizer": "xsam", "rho_max": 0.3}],
    }
    base["space"] = {
        "optimizer": {"choice": ["sgd", "sam", "xsam"]},
        "rho_max": {"loguniform": [0.05, 2.0], "when": {"optimizer": "xsam"}},
        "steps": {"randint": [1, 4], "when": {"optimizer": ["sam", "xsam"]}},
        "seed": {"grid": [0, 1]},
    }
    return base


def test_random_conditional_draws(base: dict[str, Any]) -> None:
    cfg = parse_study(_random_conditional(base))
    trials = sample_trials(cfg)
    assert len(trials) == 60 == count_trials(cfg)  # 30 draws x 2 seeds
    assert trials[0]["optimizer"] == "xsam" and trials[0]["rho_max"] == 0.3  # the point first
    assert trials[0]["seed"] == 0 and trials[1]["seed"] == 1
    for t in trials:
        assert ("rho_max" in t) == (t["optimizer"] == "xsam")
        assert ("steps" in t) == (t["optimizer"] != "sgd")
        assert 1 <= t.get("steps", 1) <= 4 and 0.05 <= t.get("rho_max", 1) <= 2.0
    assert {t["optimizer"] for t in trials} == {"sgd", "sam", "xsam"}
    assert sample_trials(cfg) == trials  # seeded
    assert sample_trials(parse_study(_random_conditional(base, seed=4))) != trials
    assert build_tune_space(cfg).kind == "list"


def _optuna(base: dict[str, Any]) -> dict[str, Any]:
    base = copy.deepcopy(base)
    base["search"] = {
        "algorithm": "optuna",
        "num_samples": 40,
        "seed": 0,
        "points_to_evaluate": [{"optimizer": "xsam", "rho": 0.15, "rho_max": 0.3}],
    }
    base["space"] = {
        "optimizer": {"choice": ["sgd", "sam", "xsam"]},
        "rho": {"loguniform": [0.01, 1.0], "when": {"optimizer": ["sam", "xsam"]}},
        "rho_max": {"uniform": [0.1, 1.0], "when": {"optimizer": "xsam"}},
        "refresh_every": {"choice": [0, 1, 5], "when": {"optimizer": "xsam"}},
        "steps": {"randint": [1, 3]},
        "alpha_max": {"quniform": [1.0, 3.0, 0.5], "when": {"optimizer": "xsam"}},
    }
    return base


def test_optuna_define_by_run_honours_conditions(base: dict[str, Any]) -> None:
    cfg = parse_study(_optuna(base))
    tune_space = build_tune_space(cfg)
    assert tune_space.kind == "optuna" and tune_space.num_samples == 40
    assert tune_space.points_to_evaluate == [{"optimizer": "xsam", "rho": 0.15, "rho_max": 0.3}]
    space = tune_space.optuna_space
    assert isinstance(space, OptunaSpace)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0), direction="maximize")
    study.enqueue_trial(tune_space.points_to_evaluate[0])
    seen = []
    for i in range(40):
        trial = study.ask()
        space(trial)
        params = trial.params
        seen.append(params)
        study.tell(trial, float(i % 7))
    assert seen[0]["rho"] == 0.15 and seen[0]["rho_max"] == 0.3  # the enqueued point
    for params in seen:
        xsam = params["optimizer"] == "xsam"
        assert ("rho_max" in params) == xsam and ("refresh_every" in params) == xsam
        assert ("alpha_max" in params) == xsam
        assert ("rho" in params) == (params["optimizer"] != "sgd")
        assert params["steps"] in (1, 2, 3)
        assert (
            1.0 <= params.get("alpha_max", 1.0) <= 3.0 and params.get("alpha_max", 1.0) % 0.5 == 0
        )
    assert {p["optimizer"] for p in seen} == {"sgd", "sam", "xsam"}


def test_optuna_space_pickles(base: dict[str, Any]) -> None:
    # Ray pickles the searcher, and with it the space, into the study directory.
    space = build_tune_space(parse_study(_optuna(base))).optuna_space
    again = pickle.loads(pickle.dumps(space))
    assert [p.name for p in again.params] == [p.name for p in space.params]


def test_optuna_conditions_on_a_fixed_setting(base: dict[str, Any]) -> None:
    data = _optuna(base)
    data["trial"]["optimizer"] = "xsam"
    data["space"] = {
        "rho_max": {"uniform": [0.1, 1.0], "when": {"optimizer": "xsam"}},
        "steps": {"randint": [1, 3], "when": {"optimizer": ["sgd", "xsam"]}},
    }
    data["search"]["points_to_evaluate"] = []
    space = build_tune_space(parse_study(data)).optuna_space
    trial = optuna.create_study().ask()
    space(trial)
    assert set(trial.params) == {"rho_max", "steps"}


def test_grid_only_for_grids(base: dict[str, Any]) -> None:
    cfg = parse_study(_optuna(base))
    with pytest.raises(ValueError, match="not a grid"):
        swept_grid(cfg)
