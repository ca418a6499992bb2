"""The training loop: rows, refresh policy, resume, divergence, diagnostics, timings."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from trainables.loop import METRICS, TIME_COLUMNS, RefreshPolicy, Trial
from xsam_contract import CPU_TIME_COLUMNS, PROBE_FIELDS, ConfigError, validate_trial_config

FAST = {"epochs": 2, "batch_size": 256, "threads": 1}


def fake_cifar(**kw):
    return {
        "dataset": "fake",
        "model": "resnet18",
        "fake_shape": [3, 32, 32],
        "fake_train_size": 32,
        "fake_test_size": 16,
        "batch_size": 16,
        "epochs": 2,
        "threads": 1,
        **kw,
    }


def compare_rows(a: dict, b: dict, skip: tuple[str, ...] = ()) -> None:
    """Rows agree on everything but wall-clock times (and `skip`)."""
    for k in METRICS:
        if k in TIME_COLUMNS or k in CPU_TIME_COLUMNS or k in skip:
            continue
        if isinstance(a[k], float) and math.isnan(a[k]):
            assert math.isnan(b[k]), k
        else:
            assert a[k] == b[k], k


@pytest.mark.parametrize("optimizer", ["sgd", "sam", "xsam", "asam", "gsam", "wsam"])
def test_two_epochs_on_mnist1d_give_every_column(optimizer: str) -> None:
    rows = list(Trial({"optimizer": optimizer, "steps": 2, **FAST}).rows())
    assert [r["epoch"] for r in rows] == [1, 2]
    for row in rows:
        assert list(row) == list(METRICS)
        assert 0.0 <= row["test_acc"] <= 1.0 and not row["diverged"]
    passes = {"sgd": 1}.get(optimizer, 3)
    assert rows[0]["n_backward"] == passes * math.ceil(4000 / 256)
    if optimizer == "xsam":
        assert rows[0]["alpha_refreshed"] and len(rows[0]["probes"]) == 1
        curve = rows[0]["probes"][0]
        assert list(curve) == list(PROBE_FIELDS)  # the probe record of the contract
        assert len(curve["alphas"]) == len(curve["losses"]) == 21
        assert rows[0]["n_forward"] - rows[0]["n_backward"] == 21
        assert rows[1]["alpha"] == rows[1]["probes"][0]["alpha"]
    else:
        assert rows[0]["probes"] == [] and math.isnan(rows[0]["psi"])


def test_fake_cifar_shaped_data_gives_every_column() -> None:
    # One batch of 8 per epoch and a 5-point α grid: ResNet-18 passes on the CPU
    # cost most of a second each, and the columns do not depend on how many there are.
    config = fake_cifar(
        optimizer="xsam", fake_train_size=8, fake_test_size=8, batch_size=8, alpha_delta=0.5
    )
    rows = list(Trial(config).rows())
    assert len(rows) == 2 and all(list(r) == list(METRICS) for r in rows)
    assert [len(r["probes"][0]["alphas"]) for r in rows] == [5, 5]


def test_training_learns_mnist1d() -> None:
    rows = list(Trial({"optimizer": "sgd", "epochs": 8, "threads": 1}).rows())
    assert rows[-1]["test_acc"] > 0.6 > rows[0]["test_acc"] - 0.2
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]


def test_phase_times_account_for_the_epoch() -> None:
    for row in Trial({"optimizer": "xsam", "steps": 2, **FAST}).rows():
        parts = sum(row[k] for k in TIME_COLUMNS if k != "time_epoch")
        assert 0.95 * row["time_epoch"] <= parts <= row["time_epoch"]
        assert all(row[k] > 0 for k in TIME_COLUMNS)
        # The trial's own CPU seconds: every phase ran some, and they fit in the epoch's.
        cpu_parts = sum(row[k] for k in CPU_TIME_COLUMNS if k != "cpu_epoch")
        assert all(row[k] > 0 for k in CPU_TIME_COLUMNS)
        assert cpu_parts <= row["cpu_epoch"] * 1.0001


def test_timing_off_reports_zero_phase_times() -> None:
    row = next(Trial({"optimizer": "sam", "timing": False, **FAST}).rows())
    assert row["time_ascent"] == row["time_update"] == 0.0 and row["time_epoch"] > 0


@pytest.mark.parametrize(
    ("every", "unit", "due"),
    [
        (1, "epoch", [0, 10, 20]),
        (2, "epoch", [0, 20]),
        (0.5, "epoch", [0, 5, 10, 15, 20, 25]),
        (4, "step", [0, 4, 8, 12, 16, 20, 24, 28]),
        (0, "epoch", []),
    ],
)
def test_refresh_policy(every: float, unit: str, due: list[int]) -> None:
    policy = RefreshPolicy(every, unit, steps_per_epoch=10)
    assert [t for t in range(30) if policy.due(t)] == due


def test_refresh_every_n_steps_in_a_trial() -> None:
    rows = list(
        Trial({"optimizer": "xsam", "refresh_every": 5, "refresh_unit": "step", **FAST}).rows()
    )
    # 16 steps per epoch: refreshes at steps 0, 5, 10, 15 | 20, 25, 30
    assert [len(r["probes"]) for r in rows] == [4, 3]


@pytest.mark.parametrize("optimizer", ["sgd", "sam", "gsam"])
def test_diagnostics_probe_without_changing_the_trajectory(optimizer: str) -> None:
    plain = list(Trial({"optimizer": optimizer, **FAST}).rows())
    diag = list(Trial({"optimizer": optimizer, "diagnostics": True, **FAST}).rows())
    for a, b in zip(plain, diag, strict=True):
        diag_columns = (
            "alpha_refreshed",
            "psi",
            "probes",
            "probe_loss_v0",
            "probe_loss_v1",
            "probe_loss_best",
        )
        compare_rows(a, b, skip=diag_columns)
        assert b["alpha_refreshed"] and len(b["probes"][0]["losses"]) == 21
        assert b["n_forward"] == a["n_forward"]  # diagnostic passes are not the trial's
        assert b["time_probe"] > 0


def test_resume_reproduces_the_uninterrupted_run(tmp_path: Path) -> None:
    config = {
        "optimizer": "xsam",
        "steps": 2,
        "epochs": 3,
        "batch_size": 200,
        "threads": 1,
        "refresh_every": 1,
    }
    full = Trial(config)
    rows_full = list(full.rows())

    first = Trial(config)
    next(first.rows())
    first.save(tmp_path / "state.pt")

    torch.manual_seed(1234)  # disturb every global RNG the resumed run must restore
    resumed = Trial(config)
    resumed.load(tmp_path / "state.pt")
    rows_resumed = list(resumed.rows())
    assert [r["epoch"] for r in rows_resumed] == [2, 3]
    assert all(r["alpha_refreshed"] for r in rows_resumed)
    for a, b in zip(rows_full[1:], rows_resumed, strict=True):
        compare_rows(a, b)
    for (n, p), q in zip(
        full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(p, q), n


def test_divergence_is_a_result_not_a_crash() -> None:
    rows = list(
        Trial(
            {
                "optimizer": "sam",
                "lr": 1e8,
                "momentum": 0.0,
                "epochs": 5,
                "batch_size": 256,
                "threads": 1,
            }
        ).rows()
    )
    assert rows[-1]["diverged"] is True
    assert len(rows) < 5
    assert all(not r["diverged"] for r in rows[:-1])


def test_missing_cifar_directory_gives_one_clear_error(tmp_path: Path, monkeypatch) -> None:
    import torchvision

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torchvision.datasets.utils, "download_url", offline)
    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", offline)
    from trainables.data import DatasetError

    with pytest.raises(DatasetError, match=re.escape(str(tmp_path))):
        Trial({"dataset": "cifar10", "model": "resnet18", "data_dir": str(tmp_path)})


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"optimizer": "adam"}, "optimizer"),
        ({"steps": 0}, "steps"),
        ({"rho": -0.1}, "rho"),
        ({"lr": "fast"}, "lr"),
        ({"wsam_gamma": 1.0}, "wsam_gamma"),
        ({"refresh_unit": "minute"}, "refresh_unit"),
        ({"bogus": 1}, "bogus"),
        ({"epochs": 2, "warmup_epochs": 2}, "warmup_epochs"),
    ],
)
def test_bad_trial_settings_name_the_field(config: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate_trial_config(config)
    assert err.value.field == field and field in str(err.value)


# The MLP: reduced-precision 1-D convolutions on the CPU took 12 s an epoch. The
# optimizer's own AMP tests (tests/trainables/optim) step a conv + BatchNorm model.
def test_bf16_autocast_trains() -> None:
    rows = list(Trial({"optimizer": "xsam", "precision": "bf16", "model": "mlp", **FAST}).rows())
    assert all(math.isfinite(r["train_loss"]) for r in rows)


def test_fp16_with_gradient_scaler_trains() -> None:
    config = {"optimizer": "xsam", "precision": "fp16", "model": "mlp", "device": "cpu", **FAST}
    trial = Trial(config)
    rows = list(trial.rows())
    assert trial.scaler is not None and trial.scaler.get_scale() > 0
    assert all(math.isfinite(r["train_loss"]) for r in rows)
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]


def test_dataloader_path_is_reproducible_and_complete() -> None:
    config = fake_cifar(optimizer="sam", model="mlp", data_on_device=False, num_workers=0)
    a, b = list(Trial(config).rows()), list(Trial(config).rows())
    assert all(list(r) == list(METRICS) for r in a)
    for x, y in zip(a, b, strict=True):
        compare_rows(x, y)
