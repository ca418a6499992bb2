"""The metrics row (one per trial and epoch) and the probe record (one per α search).

The trial layer writes exactly these fields; the analysis layer reads them
and types its columns from :attr:`Field.dtype`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Field:
    """One column: its pandas dtype and what it means."""

    dtype: str
    doc: str


#: Accuracy in rows, dataframes and CSV/parquet exports is a fraction in [0, 1];
#: what a person reads (CLI tables, figures, reports) shows it in percent.
ACCURACY_UNIT = "fraction"

#: The cost columns of a row: seconds per epoch of each phase, and the whole epoch.
TIME_COLUMNS: tuple[str, ...] = (
    "time_ascent",
    "time_descent",
    "time_probe",
    "time_update",
    "time_data",
    "time_eval",
    "time_epoch",
)

#: The same phases in CPU seconds of the trial's own process (all its threads): what
#: the trial itself spent, whatever else shared the cores. On a GPU they miss the
#: device's work; the wall times (taken with the device synchronised) count there.
CPU_TIME_COLUMNS: tuple[str, ...] = tuple(c.replace("time_", "cpu_") for c in TIME_COLUMNS)

#: The metrics row, in order.
METRICS: dict[str, Field] = {
    "epoch": Field("Int64", "1-based epoch"),
    "step": Field("Int64", "optimizer steps so far"),
    "lr": Field("float64", "learning rate at the end of the epoch"),
    "train_loss": Field("float64", "mean training loss"),
    "train_acc": Field("float64", "training accuracy (fraction)"),
    "test_loss": Field("float64", "test loss"),
    "test_acc": Field("float64", "test accuracy (fraction)"),
    "best_test_acc": Field("float64", "best test accuracy so far (fraction)"),
    "diverged": Field("boolean", "NaN/inf loss: the trial stops here"),
    "alpha": Field("float64", "α in use at the end of the epoch"),
    "alpha_refreshed": Field("boolean", "an α refresh happened this epoch"),
    "psi": Field("float64", "angle between v0 and v1 at the last refresh (radians)"),
    "probe_loss_v0": Field("float64", "L(θ0 + ρm·v0) at the last refresh"),
    "probe_loss_v1": Field("float64", "L(θ0 + ρm·v1) at the last refresh"),
    "probe_loss_best": Field("float64", "L(θ0 + ρm·v(α*)) at the last refresh"),
    "probes": Field("object", "the α searches of this epoch, each a PROBE_FIELDS record"),
    "n_forward": Field("Int64", "training forward passes (probe forwards included)"),
    "n_backward": Field("Int64", "training backward passes"),
    "device": Field("string", "device the trial trained on: cpu, or cuda:N as the trial sees it"),
    "time_ascent": Field("float64", "seconds: first gradient and the k ascent passes"),
    "time_descent": Field("float64", "seconds: the pass at θk"),
    "time_probe": Field("float64", "seconds: α search"),
    "time_update": Field("float64", "seconds: vector arithmetic and the base optimizer step"),
    "time_data": Field("float64", "seconds: loading batches"),
    "time_eval": Field("float64", "seconds: evaluation"),
    "time_epoch": Field("float64", "seconds: the whole epoch"),
    "cpu_ascent": Field("float64", "CPU seconds of the trial's process: ascent phase"),
    "cpu_descent": Field("float64", "CPU seconds of the trial's process: descent phase"),
    "cpu_probe": Field("float64", "CPU seconds of the trial's process: α search"),
    "cpu_update": Field("float64", "CPU seconds of the trial's process: update phase"),
    "cpu_data": Field("float64", "CPU seconds of the trial's process: loading batches"),
    "cpu_eval": Field("float64", "CPU seconds of the trial's process: evaluation"),
    "cpu_epoch": Field("float64", "CPU seconds of the trial's process: the whole epoch"),
}

#: Columns holding an accuracy (fractions, see :data:`ACCURACY_UNIT`).
ACCURACY_COLUMNS: tuple[str, ...] = ("train_acc", "test_acc", "best_test_acc")

#: One α search, as kept in a row's ``probes`` list.
PROBE_FIELDS: dict[str, Field] = {
    "step": Field("Int64", "optimizer step of the search (0-based)"),
    "epoch": Field("Int64", "epoch of the search (1-based)"),
    "alpha": Field("float64", "α*, the grid point of highest probe loss (ties: smallest α)"),
    "psi": Field("float64", "ψ, the angle between v0 and v1 (radians)"),
    "alphas": Field("object", "the grid {0, δ, …, a}"),
    "losses": Field("object", "L(θ0 + ρm·v(α)) for each grid point"),
    "loss_v0": Field("float64", "probe loss at α = 0 (the ascent direction v0)"),
    "loss_v1": Field("float64", "probe loss at α = 1 (SAM's direction v1)"),
    "loss_best": Field("float64", "probe loss at α*"),
}
