"""Column names, dtypes and meanings of the three result dataframes.

One table per frame keeps the documentation, the dtype coercion and the tests in
step. Dtypes are pandas extension dtypes so missing values stay typed:
``Int64`` and ``boolean`` hold ``<NA>``, ``string`` holds text, ``float64``
holds NaN.
"""

from __future__ import annotations

__all__ = [
    "CONFIG_DTYPES",
    "EPOCH_COLUMNS",
    "KEY_COLUMNS",
    "PROBE_COLUMNS",
    "STATUSES",
    "TRIAL_COLUMNS",
]

#: Trial states, in the order tables and legends list them.
STATUSES: tuple[str, ...] = (
    "finished",  # reached the configured number of epochs
    "stopped",  # ended early without error (a scheduler or stopper ended it)
    "diverged",  # the last row reports diverged = true
    "errored",  # raised; Ray wrote error.txt / error.pkl and gave up on it
    "running",  # incomplete, and the study is still writing files
    "interrupted",  # incomplete, and the study ended or stopped writing
    "pending",  # known to Ray (experiment state) but not started
)

#: Dtypes of the trial config keys of docs/contract.md. Keys a study adds beyond
#: these get a dtype inferred from their values.
CONFIG_DTYPES: dict[str, str] = {
    "dataset": "string",
    "data_dir": "string",
    "image_size": "Int64",
    "fake_shape": "string",  # a list, kept as its JSON text so CSV round-trips
    "fake_classes": "Int64",
    "fake_train_size": "Int64",
    "fake_test_size": "Int64",
    "augment": "boolean",
    "data_on_device": "boolean",
    "num_workers": "Int64",
    "model": "string",
    "optimizer": "string",
    "adaptive": "boolean",
    "base_optimizer": "string",
    "lr": "float64",
    "momentum": "float64",
    "weight_decay": "float64",
    "nesterov": "boolean",
    "epochs": "Int64",
    "batch_size": "Int64",
    "warmup_epochs": "Int64",
    "rho": "float64",
    "steps": "Int64",
    "eta": "float64",
    "rho_max": "float64",
    "alpha_max": "float64",
    "alpha_delta": "float64",
    "alpha": "float64",
    "refresh_every": "float64",  # "number ≥ 0": 1 and 0.5 both occur
    "refresh_unit": "string",
    "gsam_alpha": "float64",
    "wsam_gamma": "float64",
    "wsam_decouple": "boolean",
    "diagnostics": "boolean",
    "timing": "boolean",
    "precision": "string",
    "device": "string",
    "seed": "Int64",
    "threads": "Int64",
    "checkpoint_every": "Int64",
}

#: Config keys copied into ``.epochs`` and ``.probes`` (besides the swept ones)
#: so those frames can be grouped without a merge.
KEY_COLUMNS: tuple[str, ...] = ("optimizer", "steps", "seed")

#: ``.trials``: columns other than the config keys, name → (dtype, meaning).
TRIAL_COLUMNS: dict[str, tuple[str, str]] = {
    "trial_id": ("string", "Ray's trial id"),
    "trial_dir": ("string", "the trial's folder, relative to the study directory"),
    "status": ("category", "one of STATUSES"),
    "refresh": ("string", "α-refresh setting as a label: '1 epoch', '50 step', 'never'"),
    "epochs_done": ("Int64", "last epoch reported (0 before the first)"),
    "final_train_loss": ("float64", "train_loss of the last epoch"),
    "final_train_acc": ("float64", "train_acc of the last epoch"),
    "final_test_loss": ("float64", "test_loss of the last epoch"),
    "final_test_acc": ("float64", "test_acc of the last epoch"),
    "final_alpha": ("float64", "α in use at the end of the last epoch"),
    "final_psi": ("float64", "ψ at the last refresh (radians)"),
    "best_test_acc": ("float64", "highest test_acc over the epochs"),
    "best_epoch": ("Int64", "epoch of best_test_acc (first one on ties)"),
    "objective": ("float64", "last reported value of the study's metric"),
    "n_refreshes": ("Int64", "α refreshes over the trial (probe curves saved)"),
    "refreshes_per_epoch": ("float64", "n_refreshes / epochs_done"),
    "time_total_s": ("float64", "Ray's time_total_s of the last row: training wall time"),
    "time_per_epoch": ("float64", "mean time_epoch over the epochs"),
    "failures": ("Int64", "failures recorded in error.txt (retried or final)"),
    "error": ("string", "last line of the last failure in error.txt"),
    "last_update": ("datetime64[ns, UTC]", "time of the last reported row"),
    "hostname": ("string", "host of the last reported row"),
}

#: ``.epochs``: the metrics row of docs/contract.md plus Ray's and derived columns.
EPOCH_COLUMNS: dict[str, tuple[str, str]] = {
    "trial_id": ("string", "Ray's trial id"),
    "epoch": ("Int64", "1-based epoch"),
    "lr": ("float64", "learning rate at the end of the epoch"),
    "train_loss": ("float64", "mean training loss"),
    "train_acc": ("float64", "training accuracy"),
    "test_loss": ("float64", "test loss"),
    "test_acc": ("float64", "test accuracy"),
    "best_test_acc": ("float64", "best test accuracy so far"),
    "diverged": ("boolean", "NaN/inf loss: the trial stops here"),
    "alpha": ("float64", "α in use at the end of the epoch"),
    "alpha_refreshed": ("boolean", "an α refresh happened this epoch"),
    "psi": ("float64", "angle between v0 and v1 at the last refresh (radians)"),
    "probe_loss_v0": ("float64", "L(θ0 + ρm·v0) at the last refresh"),
    "probe_loss_v1": ("float64", "L(θ0 + ρm·v1) at the last refresh"),
    "probe_loss_best": ("float64", "L(θ0 + ρm·v(α*)) at the last refresh"),
    "time_ascent": ("float64", "seconds: first gradient and the k ascent passes"),
    "time_descent": ("float64", "seconds: the pass at θk"),
    "time_probe": ("float64", "seconds: α search"),
    "time_update": ("float64", "seconds: vector arithmetic and the base optimizer step"),
    "time_data": ("float64", "seconds: loading batches"),
    "time_eval": ("float64", "seconds: evaluation"),
    "time_epoch": ("float64", "seconds: the whole epoch"),
    "n_forward": ("Int64", "training forward passes (probe forwards included)"),
    "n_backward": ("Int64", "training backward passes"),
    "step": ("Int64", "optimizer steps so far"),
    "n_refresh": ("Int64", "derived: refreshes this epoch (len(probes))"),
    "n_probe_forward": ("Int64", "derived: probe forwards this epoch (Σ len(alphas))"),
    "training_iteration": ("Int64", "Ray's report counter"),
    "time_this_iter_s": ("float64", "Ray's seconds since the previous report"),
    "time_total_s": ("float64", "Ray's cumulative training seconds"),
    "timestamp": ("datetime64[ns, UTC]", "Ray's report time"),
}

#: ``.probes``: one row per α refresh and grid point.
PROBE_COLUMNS: dict[str, tuple[str, str]] = {
    "trial_id": ("string", "Ray's trial id"),
    "refresh_index": ("Int64", "0-based index of the refresh within the trial"),
    "epoch": ("Int64", "epoch of the refresh"),
    "step": ("Int64", "optimizer step of the refresh"),
    "alpha": ("float64", "grid point α"),
    "loss": ("float64", "L(θ0 + ρm·v(α)) on the refresh's minibatch"),
    "alpha_star": ("float64", "α* chosen at this refresh"),
    "psi": ("float64", "angle between v0 and v1 at this refresh (radians)"),
    "is_star": ("boolean", "this grid point is α*"),
}
