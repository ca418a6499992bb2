"""Column names, dtypes and meanings of the three result dataframes.

What the trial layer writes is the contract's (:mod:`xsam_contract`): config
dtypes come from ``TRIAL_KEYS[k].dtype``, metric dtypes from ``METRICS``,
trial labels from ``STATUSES``; both are read when a frame is built, so there
is no second table here. This module holds only what the analysis layer adds:
the summary columns of ``.trials``, Ray's and derived columns of ``.epochs``
and the long form of ``.probes``. Dtypes are pandas extension dtypes so
missing values stay typed: ``Int64`` and ``boolean`` hold ``<NA>``, ``string``
holds text, ``float64`` holds NaN.

Light on purpose (no pandas): the CLI imports it to build its parser.
"""

from __future__ import annotations

import xsam_contract

__all__ = [
    "DEFAULT_STALE_AFTER",
    "EPOCH_EXTRA_COLUMNS",
    "KEY_COLUMNS",
    "PROBE_COLUMNS",
    "STATUSES",
    "TRIAL_COLUMNS",
    "config_dtype",
    "epoch_columns",
]

#: Trial states, in the order tables and legends list them (the contract's labels).
STATUSES: tuple[str, ...] = tuple(xsam_contract.STATUSES)

#: Seconds without any file of the study changing after which an incomplete
#: trial of a study that never recorded ``finished_at`` counts as interrupted.
DEFAULT_STALE_AFTER = 1800.0

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

#: ``.epochs``: the columns besides the contract's metrics row: derived ones and Ray's.
EPOCH_EXTRA_COLUMNS: dict[str, tuple[str, str]] = {
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
    # The refresh's own record of the three directions' losses (α = 1 need not be
    # a grid point); repeated on each of its grid points.
    **{
        name: (xsam_contract.PROBE_FIELDS[name].dtype, xsam_contract.PROBE_FIELDS[name].doc)
        for name in ("loss_v0", "loss_v1", "loss_best")
    },
}


def config_dtype(name: str) -> str | None:
    """The column dtype of trial key ``name`` (the contract's); None: not a trial key."""
    key = xsam_contract.TRIAL_KEYS.get(name)
    return key.dtype if key is not None else None


def epoch_columns() -> dict[str, tuple[str, str]]:
    """``.epochs``' columns, name → (dtype, meaning): ``trial_id``, every scalar field
    of the contract's metrics row (``probes`` becomes ``.probes``), then
    :data:`EPOCH_EXTRA_COLUMNS`."""
    metrics = {
        name: (f.dtype, f.doc) for name, f in xsam_contract.METRICS.items() if f.dtype != "object"
    }
    return {"trial_id": ("string", "Ray's trial id"), **metrics, **EPOCH_EXTRA_COLUMNS}
