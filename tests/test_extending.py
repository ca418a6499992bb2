"""Extending the project: a registered SAM variant trains and runs in a study; unknown names fail.

The variant (tests/_toy_variant.py) is one optimizer class and one registry
entry, nothing else: the trial layer, the study layer and the validators
find it through ``xsam_contract.OPTIMIZERS``.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
import yaml

from trainables.data import DatasetError, load_dataset
from trainables.loop import METRICS, Trial, build_optimizer
from trainables.models import ModelError, build_model
from xsam_contract import (
    DATASETS,
    MODELS,
    OPTIMIZERS,
    ConfigError,
    RegistryError,
    validate_trial_config,
)

HERE = Path(__file__).parent
CLI = Path(sys.executable).parent / "xsam-tune"
#: Two quick epochs on small fake images.
TINY: dict[str, Any] = {
    "dataset": "fake",
    "model": "mlp",
    "fake_shape": [1, 8, 8],
    "fake_train_size": 64,
    "fake_test_size": 32,
    "batch_size": 16,
    "epochs": 2,
    "threads": 1,
    "rho": 0.2,
}
#: What must agree between two runs of the same trajectory (not wall-clock times).
SAME = ("train_loss", "train_acc", "test_loss", "test_acc", "n_forward", "n_backward", "alpha")


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The toy variant, registered as ``toysam`` for the test's duration."""
    monkeypatch.syspath_prepend(str(HERE))
    import _toy_variant

    _toy_variant.register()
    yield _toy_variant
    OPTIMIZERS.unregister(_toy_variant.NAME)


def _losses(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [tuple(row[k] for k in SAME) for row in rows]


def test_a_registered_variant_runs_a_two_epoch_trial(toy: ModuleType) -> None:
    trial = Trial({**TINY, "optimizer": "toysam"})
    assert type(trial.optimizer) is toy.ToySAM and trial.optimizer.rho == TINY["rho"] / 2
    rows = list(trial.rows())
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(list(r) == list(METRICS) and not r["diverged"] for r in rows)
    assert rows[0]["n_backward"] == 2 * 4  # SAM with k = 1: two passes, 64 / 16 steps
    # The variant's own behaviour reaches the trajectory: SAM at half the radius, not SAM.
    half = list(Trial({**TINY, "optimizer": "sam", "rho": TINY["rho"] / 2}).rows())
    full = list(Trial({**TINY, "optimizer": "sam"}).rows())
    assert _losses(rows) == _losses(half)
    assert _losses(rows) != _losses(full)


@pytest.mark.ray
def test_a_registered_variant_runs_in_a_study(
    toy: ModuleType, ray_session: None, tmp_path: Path
) -> None:
    import ray

    from study import parse_study, run_study

    ray.cloudpickle.register_pickle_by_value(toy)  # workers cannot import the test folder
    cfg = parse_study(
        {
            "name": "toy",
            "trial": TINY,
            "space": {"optimizer": {"grid": ["sam", "toysam"]}},
            "search": {"algorithm": "grid"},
            "metric": {"name": "test_acc", "mode": "max"},
            "resources": {"cpu": 1, "gpu": 0},
        }
    )
    results = run_study(
        cfg,
        storage=str(tmp_path / "studies"),
        trainable=toy.train_with_toy_variant,
        verbose=0,
        command=["test_extending"],
    )
    assert len(results) == 2 and not results.errors
    frames = {r.config["optimizer"]: r.metrics_dataframe for r in results}
    assert set(frames) == {"sam", "toysam"}
    assert all(list(f["epoch"]) == [1, 2] for f in frames.values())
    # The worker built ToySAM: its losses are SAM's at half the radius, computed here.
    half = list(Trial({**TINY, "optimizer": "sam", "rho": TINY["rho"] / 2}).rows())
    for column in ("train_loss", "test_loss"):
        assert list(frames["toysam"][column]) == pytest.approx([r[column] for r in half])
    assert list(frames["toysam"]["train_loss"]) != list(frames["sam"]["train_loss"])
    info = json.loads((Path(results.experiment_path) / "study.json").read_text())
    assert info["space"]["optimizer"] == {"grid": ["sam", "toysam"]}


def test_an_unregistered_variant_is_unknown_again(toy: ModuleType) -> None:
    OPTIMIZERS.unregister(toy.NAME)
    with pytest.raises(ConfigError) as err:
        Trial({**TINY, "optimizer": toy.NAME})
    assert err.value.field == "optimizer"


@pytest.mark.parametrize(
    ("field", "registry"), [("optimizer", OPTIMIZERS), ("dataset", DATASETS), ("model", MODELS)]
)
def test_trial_refuses_an_unknown_name(field: str, registry: Any) -> None:
    with pytest.raises(ConfigError) as err:
        Trial({**TINY, field: "nosuch"})
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}: 'nosuch' is not allowed; expected one of ")
    assert all(name in str(err.value) for name in registry)


def test_load_dataset_refuses_an_unknown_name() -> None:
    with pytest.raises(DatasetError) as err:
        load_dataset({"dataset": "nosuch"})
    assert str(err.value) == "dataset: unknown dataset 'nosuch'; choose one of " + ", ".join(
        DATASETS
    )


def test_build_model_refuses_an_unknown_name() -> None:
    with pytest.raises(ModelError) as err:
        build_model("nosuch", (1, 40), 10)
    assert str(err.value) == "model: unknown model 'nosuch'; choose one of " + ", ".join(MODELS)


def test_build_optimizer_refuses_an_unknown_name_instead_of_a_default() -> None:
    config = {**validate_trial_config({}), "optimizer": "nosuch"}  # past the validator
    with pytest.raises(ConfigError) as err:
        build_optimizer(config, torch.nn.Linear(2, 2))
    assert err.value.field == "optimizer" and all(n in str(err.value) for n in OPTIMIZERS)
    with pytest.raises(RegistryError):
        OPTIMIZERS.load("nosuch")


@pytest.mark.parametrize(
    ("study", "field", "registry"),
    [
        ({"trial": {"optimizer": "nosuch"}}, "trial.optimizer", OPTIMIZERS),
        ({"trial": {"dataset": "nosuch"}}, "trial.dataset", DATASETS),
        ({"trial": {"model": "nosuch"}}, "trial.model", MODELS),
        ({"space": {"optimizer": {"grid": ["sam", "nosuch"]}}}, "space.optimizer", OPTIMIZERS),
    ],
)
def test_cli_dry_run_refuses_an_unknown_name(
    study: dict[str, Any], field: str, registry: Any, tmp_path: Path
) -> None:
    data: dict[str, Any] = {
        "name": "bad",
        "trial": {"dataset": "fake", "model": "mlp", "epochs": 2, **study.get("trial", {})},
        "space": study.get("space", {"seed": {"grid": [0, 1]}}),
        "search": {"algorithm": "grid"},
        "metric": {"name": "test_acc", "mode": "max"},
    }
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    out = subprocess.run(
        [str(CLI), "run", str(path), "--dry-run"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 2 and out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert field in lines[0] and "'nosuch'" in lines[0]
    assert all(name in lines[0] for name in registry)


def test_toy_variant_radius_is_half() -> None:
    """The toy's premise, checked on the optimizer alone (no trial)."""
    sys.path.insert(0, str(HERE))
    try:
        import _toy_variant
    finally:
        sys.path.remove(str(HERE))
    opt = _toy_variant.ToySAM([torch.nn.Parameter(torch.ones(2))], torch.optim.SGD, rho=0.3, lr=1)
    assert math.isclose(opt.rho, 0.15)
