"""Study files → StudyConfig: every bad field is refused with its path."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from study import StudyConfigError, apply_overrides, load_study, parse_study
from study._yaml import load_yaml

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def _delete(data: dict[str, Any], path: str) -> None:
    *parents, last = path.split(".")
    node = data
    for part in parents:
        node = node[part]
    del node[last]


_DELETE = object()

# (changes to BASE, field path the message must start with)
BAD: list[tuple[dict[str, Any], str]] = [
    ({"metrc": {"name": "test_acc"}}, "metrc"),
    ({"name": _DELETE}, "name"),
    ({"name": "my study"}, "name"),
    ({"trial.lrr": 0.1}, "trial.lrr"),
    ({"trial.epochs": 0}, "trial.epochs"),
    (
        {"trial.optimizer": "adam", "space.optimizer": _DELETE, "space.steps": _DELETE},
        "trial.optimizer",
    ),
    ({"trial.model": "resnet50"}, "trial.model"),
    ({"trial.dataset": "imagenet"}, "trial.dataset"),
    ({"trial.lr": "fast"}, "trial.lr"),
    ({"trial.batch_size": True}, "trial.batch_size"),
    ({"trial.checkpoint_every": 2}, "trial.checkpoint_every"),
    ({"trial.seed": 3}, "trial.seed"),  # swept without a condition and fixed too
    ({"space.seed.grid": [0, 1, -0.5]}, "space.seed.grid[2]"),
    ({"space.steps.grid": [1, 2, 0]}, "space.steps.grid[2]"),
    ({"space.steps.grid": []}, "space.steps.grid"),
    ({"space.steps.grid": [1, 1]}, "space.steps.grid[1]"),
    ({"space.stepz": {"grid": [1]}}, "space.stepz"),
    ({"space.steps": [1, 2]}, "space.steps"),
    ({"space.steps": {"grid": [1], "choice": [2]}}, "space.steps"),
    ({"space.rho": {"gaussian": [0, 1]}}, "space.rho.gaussian"),
    ({"space.rho": {"uniform": [0.1, 0.5]}}, "space.rho"),  # grid algorithm
    ({"search.algorithm": "optuna", "space.seed": {"choice": [0, 1]}}, "space.optimizer.grid"),
    ({"search.algorithm": "random", "space.rho": {"uniform": [0.5, 0.1]}}, "space.rho.uniform"),
    ({"search.algorithm": "random", "space.rho": {"uniform": [-1, 1]}}, "space.rho.uniform[0]"),
    (
        {"search.algorithm": "random", "space.rho": {"loguniform": [0, 1]}},
        "space.rho.loguniform[0]",
    ),
    ({"search.algorithm": "random", "space.rho": {"uniform": [0.1]}}, "space.rho.uniform"),
    ({"search.algorithm": "random", "space.rho": {"uniform": [0.1, "x"]}}, "space.rho.uniform[1]"),
    (
        {"search.algorithm": "random", "space.fake_train_size": {"uniform": [8, 64]}},
        "space.fake_train_size.uniform",
    ),
    (
        {"search.algorithm": "random", "space.fake_train_size": {"randint": [64, 8]}},
        "space.fake_train_size.randint",
    ),
    ({"search.algorithm": "random", "space.rho": {"quniform": [0, 1, 0]}}, "space.rho.quniform[2]"),
    ({"space.steps.when": {"optimiser": "xsam"}}, "space.steps.when.optimiser"),
    ({"space.steps.when": {"optimizer": "xsm"}}, "space.steps.when.optimizer"),
    ({"space.steps.when": {"optimizer": ["sam", "xsm"]}}, "space.steps.when.optimizer[1]"),
    ({"space.steps.when": {"optimizer": "asam"}}, "space.steps.when.optimizer"),  # never
    ({"space.steps.when": {"refresh_unit": "step"}}, "space.steps.when.refresh_unit"),  # never
    ({"space.steps.when": {"steps": 1}}, "space.steps.when.steps"),
    (
        {
            "space.steps.when": {"seed": 0},
            "space.seed": {"grid": [0, 1], "when": {"steps": 1}},
        },
        "space.",  # circular: steps → seed → steps
    ),
    (
        {
            "search.algorithm": "random",
            "space.rho": {"uniform": [0.1, 0.5]},
            "space.steps.when": {"rho": 0.1},
        },
        "space.steps.when.rho",
    ),
    ({"metric.name": "accuracy"}, "metric.name"),
    ({"metric.mode": "maximize"}, "metric.mode"),
    ({"metric": "test_acc"}, "metric"),
    (
        {"metric": [{"name": "test_acc", "mode": "max"}, {"name": "time_epoch", "mode": "min"}]},
        "metric",
    ),
    ({"metric": []}, "metric"),
    (
        {
            "search.algorithm": "optuna",
            "space": {"rho": {"uniform": [0.1, 0.5]}},
            "metric": [{"name": "test_acc", "mode": "max"}, {"name": "test_acc", "mode": "min"}],
        },
        "metric[1].name",
    ),
    (
        {
            "search.algorithm": "optuna",
            "space": {"rho": {"uniform": [0.1, 0.5]}},
            "metric": [{"name": "test_acc", "mode": "max"}, {"name": "time_epoch", "mode": "min"}],
            "scheduler": {"name": "asha"},
        },
        "scheduler.name",
    ),
    ({"scheduler": {"name": "hyperband"}}, "scheduler.name"),
    ({"scheduler": {"name": "asha", "grace_period": 5}}, "scheduler.grace_period"),
    ({"scheduler": {"name": "asha", "reduction_factor": 1}}, "scheduler.reduction_factor"),
    ({"scheduler": {"name": "none", "grace_period": 1}}, "scheduler.grace_period"),
    ({"resources": {"cpu": 1, "gpu": -1}}, "resources.gpu"),
    ({"resources": {"gpu": 1.5}}, "resources.gpu"),
    ({"resources": {"cpu": 0}}, "resources.cpu"),
    ({"resources": {"tpu": 1}}, "resources.tpu"),
    ({"trial.device": "cuda"}, "resources.gpu"),
    ({"search.algorithm": "bayes"}, "search.algorithm"),
    ({"search.sampler": "tpe"}, "search.sampler"),  # grid has no sampler
    ({"search.num_samples": 0}, "search.num_samples"),
    ({"search.seed": "zero"}, "search.seed"),
    ({"search.points_to_evaluate": [{"steps": 1}]}, "search.points_to_evaluate"),
    ({"search.repeat": 2}, "search.repeat"),
    ({"max_failures": -2}, "max_failures"),
    ({"max_concurrent_trials": 0}, "max_concurrent_trials"),
    ({"storage": "ftp://host/studies"}, "storage"),
    ({"storage": ""}, "storage"),
    ({"checkpoint_every": -1}, "checkpoint_every"),
    ({"keep_checkpoints": 0}, "keep_checkpoints"),
    # a swept value that makes a fixed one invalid (warm-up must be shorter than training)
    (
        {"trial.warmup_epochs": 5, "space.epochs": {"grid": [10, 3]}, "trial.epochs": _DELETE},
        "space.epochs.grid[1]",
    ),
    # a combination only the whole trial shows
    (
        {"space.alpha_max": {"grid": [1.0, 2.0]}, "space.alpha_delta": {"grid": [0.1, 1.5]}},
        "space.alpha_delta",
    ),
]

OPTUNA = {
    "search": {"algorithm": "optuna", "num_samples": 4},
    "space": {
        "optimizer": {"choice": ["sam", "xsam"]},
        "rho": {"loguniform": [0.01, 1.0]},
        "rho_max": {"uniform": [0.1, 1.0], "when": {"optimizer": "xsam"}},
    },
}

BAD_OPTUNA: list[tuple[dict[str, Any], str]] = [
    ({"search.sampler": "hyperopt"}, "search.sampler"),
    (
        {
            "search.sampler": "cmaes",
            "metric": [{"name": "test_acc", "mode": "max"}, {"name": "time_epoch", "mode": "min"}],
        },
        "search.sampler",
    ),
    ({"search.points_to_evaluate": [{"rhoo": 0.1}]}, "search.points_to_evaluate[0].rhoo"),
    ({"search.points_to_evaluate": [{"rho": 5.0}]}, "search.points_to_evaluate[0].rho"),
    (
        {"search.points_to_evaluate": [{"optimizer": "sam", "rho_max": 0.3}]},
        "search.points_to_evaluate[0].rho_max",
    ),
    ({"search.points_to_evaluate": [{"rho": 0.1}] * 5}, "search.points_to_evaluate"),
    ({"space.optimizer": {"choice": [[1, 2], "sam"]}}, "space.optimizer.choice[0]"),
]


def _mutate(data: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    data = copy.deepcopy(data)
    for path, value in changes.items():
        if value is _DELETE:
            _delete(data, path)
        elif "." in path:
            _set(data, path, value)
        else:
            data[path] = value
    return data


def _check(data: dict[str, Any], field: str) -> None:
    with pytest.raises(StudyConfigError) as info:
        parse_study(data)
    message = str(info.value)
    assert message.startswith(field), message
    assert info.value.field.startswith(field)
    assert "\n" not in message


@pytest.mark.parametrize(("changes", "field"), BAD, ids=[f for _, f in BAD])
def test_bad_field_is_named(base: dict[str, Any], changes: dict[str, Any], field: str) -> None:
    _check(_mutate(base, changes), field)


@pytest.mark.parametrize(("changes", "field"), BAD_OPTUNA, ids=[f for _, f in BAD_OPTUNA])
def test_bad_optuna_field_is_named(
    base: dict[str, Any], changes: dict[str, Any], field: str
) -> None:
    _check(_mutate({**base, **copy.deepcopy(OPTUNA)}, changes), field)


def test_message_names_value_and_allowed(base: dict[str, Any]) -> None:
    base["space"]["steps"]["grid"] = [1, 2, 0]
    with pytest.raises(StudyConfigError) as info:
        parse_study(base)
    assert str(info.value) == "space.steps.grid[2]: got 0, allowed: an integer >= 1 and <= 1000"


def test_cross_key_messages(base: dict[str, Any]) -> None:
    data = _mutate(base, BAD[-2][0])
    with pytest.raises(StudyConfigError) as info:
        parse_study(data)
    assert str(info.value) == (
        "space.epochs.grid[1]: with epochs=3, warmup_epochs 5 is refused, "
        "allowed: warmup_epochs fewer than epochs (3)"
    )
    with pytest.raises(StudyConfigError) as info:
        parse_study(_mutate(base, BAD[-1][0]))
    assert str(info.value).startswith("space.alpha_delta: in the trial ")
    assert "alpha_max=1.0, alpha_delta=1.5, got 1.5, allowed: at most alpha_max (1.0)" in str(
        info.value
    )


def test_unknown_key_suggests_the_close_one(base: dict[str, Any]) -> None:
    base["metrc"] = base.pop("metric")
    with pytest.raises(StudyConfigError, match=r"did you mean metric\?"):
        parse_study(base)


def test_valid_study_and_defaults(base: dict[str, Any]) -> None:
    cfg = parse_study(base)
    assert cfg.name == "tiny" and cfg.metric == "test_acc" and cfg.mode == "max"
    assert [p.name for p in cfg.space] == ["optimizer", "steps", "seed"]
    assert cfg.params["steps"].when == {"optimizer": ("sam", "xsam")}
    assert cfg.search.num_samples == 1 and cfg.max_failures == 2
    assert cfg.resources.cpu == 1 and cfg.resources.gpu == 0
    assert cfg.trial_settings()["checkpoint_every"] == 1
    assert cfg.conditional and not cfg.multi_objective


def test_multi_objective_with_optuna(base: dict[str, Any]) -> None:
    data = {**base, **copy.deepcopy(OPTUNA)}
    data["metric"] = [{"name": "test_acc", "mode": "max"}, {"name": "time_epoch", "mode": "min"}]
    cfg = parse_study(data)
    assert cfg.metric == ["test_acc", "time_epoch"] and cfg.mode == ["max", "min"]
    assert cfg.search.sampler == "tpe" and cfg.search.max_concurrent == 4


def test_asha_max_t_defaults_to_epochs(base: dict[str, Any]) -> None:
    base["scheduler"] = {"name": "asha", "grace_period": 2}
    cfg = parse_study(base)
    assert cfg.scheduler.max_t == 3 and cfg.scheduler.reduction_factor == 3


def test_fixed_value_is_a_fallback_for_a_conditional_parameter(base: dict[str, Any]) -> None:
    base["trial"]["steps"] = 1
    assert parse_study(base).trial["steps"] == 1


def test_a_condition_may_name_values_that_are_not_swept(base: dict[str, Any]) -> None:
    base["space"]["optimizer"]["grid"] = ["sgd", "sam"]  # `when` still says [sam, xsam]
    assert parse_study(base).params["steps"].when == {"optimizer": ("sam", "xsam")}


def test_condition_on_a_fixed_setting(base: dict[str, Any]) -> None:
    base["space"] = {"rho_max": {"grid": [0.3, 0.6], "when": {"optimizer": "xsam"}}}
    base["trial"]["optimizer"] = "xsam"
    parse_study(base)


def test_fractional_gpu_and_uri_storage(base: dict[str, Any]) -> None:
    base["resources"] = {"cpu": 2, "gpu": 0.25}
    base["storage"] = "s3://bucket/studies"
    cfg = parse_study(base)
    assert cfg.resources.gpu == 0.25 and cfg.storage == "s3://bucket/studies"


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_configs_round_trip(path: Path) -> None:
    cfg = load_study(path)
    again = parse_study(load_yaml(_dump(cfg.to_dict())))
    assert again == cfg


def _dump(data: dict[str, Any]) -> str:
    from study._yaml import dump_yaml

    return dump_yaml(data)


# -- YAML and overrides ------------------------------------------------------


def test_exponent_floats_are_floats() -> None:
    assert load_yaml("lr: 1e-3\nx: 5e2\ny: '1e-3'") == {"lr": 0.001, "x": 500.0, "y": "1e-3"}


def test_duplicate_keys_are_refused() -> None:
    with pytest.raises(StudyConfigError, match=r"f.yaml:3: duplicate key, got 'a'"):
        load_yaml("a: 1\nb: 2\na: 3\n", source="f.yaml")


def test_yaml_syntax_error_names_the_place() -> None:
    with pytest.raises(StudyConfigError, match=r"^f.yaml:2:\d+: invalid YAML"):
        load_yaml("a: [1, 2\nb: 3\n", source="f.yaml")


def test_overrides(base: dict[str, Any]) -> None:
    out = apply_overrides(
        base,
        [
            "trial.epochs=5",
            "space.steps.grid=[1, 2, 5]",
            "space.seed.grid[1]=7",
            "trial.lr=1e-3",
            "scheduler.name=asha",
            "max_concurrent_trials=null",
        ],
    )
    assert out["trial"]["epochs"] == 5 and out["trial"]["lr"] == 0.001
    assert out["space"]["steps"]["grid"] == [1, 2, 5]
    assert out["space"]["seed"]["grid"] == [0, 7]
    assert out["scheduler"] == {"name": "asha"} and out["max_concurrent_trials"] is None
    assert base["trial"]["epochs"] == 3  # the input is left alone


def test_overrides_then_validation(write_study, base: dict[str, Any]) -> None:
    path = write_study(base)
    assert load_study(path, ["trial.epochs=7"]).trial["epochs"] == 7
    with pytest.raises(StudyConfigError, match=r"^trial.epochs: got 0"):
        load_study(path, ["trial.epochs=0"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trial.epochs", "malformed override"),
        ("=5", "malformed override"),
        ("trial..epochs=5", "malformed override"),
        ("trial.epochs.x=1", "trial.epochs is 3, not a mapping"),
        ("space.seed.grid.9=1", "no such list element"),
        ("trial.epochs=[1", "invalid YAML"),
    ],
)
def test_bad_override(base: dict[str, Any], override: str, message: str) -> None:
    with pytest.raises(StudyConfigError) as info:
        apply_overrides(base, [override])
    assert str(info.value).startswith(f"--set {override}") and message in str(info.value)


def test_load_study_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_study(tmp_path / "nope.yaml")
