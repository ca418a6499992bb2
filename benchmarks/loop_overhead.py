"""Loop overhead (issue 3): the project's training loop against a bare hand-written loop.

Shows what `trainables.loop.Trial.run_epoch` costs over the least a training
loop must do, on MNIST-1D with the 1-D CNN at batch 128 (32 steps per epoch
plus the test-set evaluation), for SGD, SAM and XSAM, with phase timing off.

The bare loop does the same arithmetic and nothing else: the same model,
data, seed and hyperparameters (taken from the trial's validated config),
`torch.randperm` shuffling from a generator seeded alike, cross-entropy, the
same `trainables.optim` optimizer with a plain closure (so the arithmetic
inside SAM/XSAM is identical), one α search (probe) on the first minibatch of
every epoch for XSAM, the per-step cosine learning rate set by hand, and the
same test-set evaluation. It keeps no train metrics, builds no metrics row and
runs no refresh policy, scheduler object or timer: what the ratio of epoch
times measures is the loop's own overhead. Both trajectories are checked to
be the same (the test losses of every epoch must agree).

Every optimizer's loop and bare runs are built up front and step epoch by
epoch in turn (sgd, bare sgd, sam, bare sam, xsam, bare xsam; within each
pair the order alternates from epoch to epoch), so that changes in machine
load hit all alike. The first epoch of every run is a warm-up and is not
timed. The verdict uses the median of the per-epoch ratios loop / bare, each
measured between two neighbouring epochs. Target: at most 1.10x.

A second part times the loop's per-step extras in isolation on the trial's
own objects (scheduler step, train-metric accumulation, refresh check,
closures and null timer phases), to say where any overhead comes from.

Imports only torch and the standard library besides `trainables` (no ray,
optuna or pandas).

    python benchmarks/loop_overhead.py --epochs 6 --repeats 3 --out loop.json
    python benchmarks/loop_overhead.py --smoke-test       # a few seconds, for CI
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (
    Clock,
    machine_info,
    markdown_table,
    median,
    resolve_device,
    synchronizer,
    write_json,
)
from trainables.data import Dataset, load_dataset
from trainables.loop import Trial, validate_trial_config
from trainables.models import build_model
from trainables.optim import SAM, XSAM, SharpnessAware

OPTIMIZERS = ("sgd", "sam", "xsam")
TARGET_RATIO = 1.10  # loop / bare epoch time, at most
BATCH_SIZE = 128
#: Subset sizes of the smoke test (train, test): enough to run every code path.
SMOKE_SIZES = (512, 256)


# --------------------------------------------------------------- bare loop
def _plain_closure(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor
) -> Callable[[], torch.Tensor]:
    def closure() -> torch.Tensor:
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    return closure


def _plain_probe(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor
) -> Callable[[], torch.Tensor]:
    def probe() -> torch.Tensor:
        return F.cross_entropy(model(x), y)

    return probe


def _cosine(step: int, total: int) -> float:
    """Cosine annealing from 1 to 0 over `total` steps (no warm-up)."""
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, step / max(1, total))))


class BareLoop:
    """A minimal hand-written training loop with the trial's arithmetic.

    Args:
        cfg: the trial's validated config (optimizer, hyperparameters, seed).
        data: the dataset (on the CPU; moved to `device` here).
        device: where the model and data live.
    """

    def __init__(self, cfg: dict[str, Any], data: Dataset, device: torch.device) -> None:
        self.cfg = cfg
        torch.manual_seed(cfg["seed"])
        self.model = build_model(cfg["model"], data.input_shape, data.num_classes).to(device)
        self.x_train, self.y_train = data.x_train.to(device), data.y_train.to(device)
        self.x_test, self.y_test = data.x_test.to(device), data.y_test.to(device)
        self.device = device
        base = dict(lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])
        sharp = dict(rho=cfg["rho"], steps=cfg["steps"], model=self.model)
        search = dict(
            rho_max=cfg["rho_max"], alpha_max=cfg["alpha_max"], alpha_delta=cfg["alpha_delta"]
        )
        params = self.model.parameters()
        self.opt: torch.optim.Optimizer
        if cfg["optimizer"] == "sgd":
            self.opt = torch.optim.SGD(params, **base)
        elif cfg["optimizer"] == "sam":
            self.opt = SAM(params, torch.optim.SGD, **search, **sharp, **base)
        else:
            self.opt = XSAM(params, torch.optim.SGD, alpha=cfg["alpha"], **search, **sharp, **base)
        self.generator = torch.Generator().manual_seed(cfg["seed"])
        self.base_lr = cfg["lr"]
        self.steps_per_epoch = math.ceil(int(self.y_train.shape[0]) / cfg["batch_size"])
        self.total = cfg["epochs"] * self.steps_per_epoch
        self.step = 0

    def run_epoch(self) -> float:
        """One epoch of training and the test evaluation; returns the test loss."""
        model, opt, bs = self.model, self.opt, self.cfg["batch_size"]
        is_sharp, is_xsam = isinstance(opt, SharpnessAware), isinstance(opt, XSAM)
        model.train()
        n = int(self.y_train.shape[0])
        order = torch.randperm(n, generator=self.generator).to(self.device)
        for i, start in enumerate(range(0, n, bs)):
            idx = order[start : start + bs]
            x, y = self.x_train[idx], self.y_train[idx]
            if is_sharp:
                probe = _plain_probe(model, x, y) if is_xsam and i == 0 else None
                opt.step(_plain_closure(model, x, y), probe=probe)
            else:
                opt.zero_grad(set_to_none=False)
                F.cross_entropy(model(x), y).backward()
                opt.step()
            self.step += 1
            lr = self.base_lr * _cosine(self.step, self.total)
            for group in opt.param_groups:
                group["lr"] = lr
        return self.evaluate()[0]

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        """Test loss and accuracy as the trial computes them (batches of ≥ 256)."""
        self.model.eval()
        loss = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device)
        n = int(self.y_test.shape[0])
        bs = max(self.cfg["batch_size"], 256)
        for start in range(0, n, bs):
            x, y = self.x_test[start : start + bs], self.y_test[start : start + bs]
            logits = self.model(x)
            loss += F.cross_entropy(logits, y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
        self.model.train()
        return float(loss) / n, float(correct) / n


# --------------------------------------------------------------- the runs
@dataclass
class Pair:
    """The loop run and the bare run of one optimizer, with their timings.

    `wall` and `cpu` map "loop" and "bare" to epoch seconds: wall-clock, and
    the CPU time of this process (what a loaded machine disturbs least).
    """

    optimizer: str
    loop: Callable[[], float]  # one epoch of the project's loop; returns the test loss
    bare: BareLoop
    wall: dict[str, list[float]] = field(default_factory=lambda: {"loop": [], "bare": []})
    cpu: dict[str, list[float]] = field(default_factory=lambda: {"loop": [], "bare": []})
    max_loss_gap: float = 0.0


def trial_config(optimizer: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    return {
        "optimizer": optimizer,
        "epochs": args.epochs,
        "batch_size": BATCH_SIZE,
        "timing": False,
        "threads": args.threads,
        "seed": args.seed,
        "steps": 1,
        "device": device.type,
    }


def _trial_epoch(trial: Trial) -> Callable[[], float]:
    def epoch() -> float:
        return trial.run_epoch()["test_loss"]

    return epoch


def build_pair(
    optimizer: str, args: argparse.Namespace, data: Dataset, device: torch.device
) -> Pair:
    """The runs of one optimizer; with `--aa` a second bare loop stands in for the loop."""
    config = trial_config(optimizer, args, device)
    if args.aa:
        loop = BareLoop(validate_trial_config(config), data, device).run_epoch
    else:
        loop = _trial_epoch(Trial(config, dataset=data))
    bare = BareLoop(validate_trial_config(config), data, device)
    return Pair(optimizer, loop, bare)


def timed_epoch(pair: Pair, which: str, clock: Clock) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, test loss) of one epoch of the loop or the bare run."""
    cpu, start = time.process_time(), clock.now()
    loss = pair.loop() if which == "loop" else pair.bare.run_epoch()
    return clock.now() - start, time.process_time() - cpu, loss


def run_repeat(
    args: argparse.Namespace, data: Dataset, device: torch.device, clock: Clock, repeat: int
) -> list[Pair]:
    """Fresh runs of every optimizer, stepped epoch by epoch in turn."""
    pairs = [build_pair(name, args, data, device) for name in args.optimizers]
    for epoch in range(args.epochs):
        for pair in pairs:
            order = ("loop", "bare") if (epoch + repeat) % 2 == 0 else ("bare", "loop")
            losses: dict[str, float] = {}
            for which in order:
                wall, cpu, losses[which] = timed_epoch(pair, which, clock)
                if epoch > 0:  # the first epoch is a warm-up
                    pair.wall[which].append(wall)
                    pair.cpu[which].append(cpu)
            gap = abs(losses["loop"] - losses["bare"])
            pair.max_loss_gap = max(pair.max_loss_gap, gap if math.isfinite(gap) else math.inf)
    return pairs


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile, NaN for no values."""
    if not values:
        return math.nan
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _ratios(runs: list[Pair], clock: str) -> list[float]:
    """Per-epoch loop / bare ratios, each of two neighbouring epochs."""
    out = []
    for p in runs:
        times = getattr(p, clock)
        out += [a / b for a, b in zip(times["loop"], times["bare"], strict=True)]
    return out


def summarize(name: str, runs: list[Pair]) -> dict[str, Any]:
    out: dict[str, Any] = {"optimizer": name}
    for clock in ("wall", "cpu"):
        ratios = _ratios(runs, clock)
        for which in ("loop", "bare"):
            times = [t for p in runs for t in getattr(p, clock)[which]]
            out[f"{which}_epoch_{clock}_s"] = median(times)
            out[f"{which}_{clock}_times"] = times
        out[f"ratio_{clock}"] = median(ratios)
        out[f"ratio_{clock}_p25"] = quantile(ratios, 0.25)
        out[f"ratio_{clock}_p75"] = quantile(ratios, 0.75)
        out[f"ratios_{clock}"] = ratios
        out[f"met_{clock}"] = median(ratios) <= TARGET_RATIO
    out["epochs_timed"] = len(out["ratios_wall"])
    out["max_test_loss_gap"] = max(p.max_loss_gap for p in runs)
    return out


# ------------------------------------------------------ per-step extras
def _per_call(fn: Callable[[], object], reps: int, clock: Clock) -> float:
    """Median microseconds per call of `fn` over 5 rounds of `reps` calls."""
    rounds = []
    for _ in range(5):
        start = clock.now()
        for _ in range(reps):
            fn()
        rounds.append((clock.now() - start) / reps * 1e6)
    return median(rounds)


def step_extras(
    args: argparse.Namespace, data: Dataset, device: torch.device, clock: Clock, reps: int
) -> dict[str, Any]:
    """Microseconds per training step of what the loop does beyond the arithmetic.

    Measured on a throwaway SGD trial's own objects; the step time they are
    compared with is the median bare epoch CPU time over the steps of an epoch
    (which includes the evaluation, so the shares are slight overestimates).
    """
    trial = Trial(trial_config("sgd", args, device), dataset=data)
    x = trial.data.x_train[:BATCH_SIZE]
    y = trial.data.y_train[:BATCH_SIZE]
    with torch.no_grad():
        logits = trial.model(x)
        loss = F.cross_entropy(logits, y)
    totals = {"loss": torch.zeros((), device=device), "correct": torch.zeros((), device=device)}

    def accumulate() -> None:
        # the two lines of the loop's closure (first pass only)
        totals["loss"] += loss.detach().float() * y.shape[0]
        totals["correct"] += (logits.argmax(1) == y).sum()

    def phase() -> None:
        with trial.timer.phase("data"):
            pass

    steps = trial.steps_per_epoch
    # stepping the scheduler of an optimizer that never stepped warns once; harmless here
    warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler")
    return {
        "scheduler.step()": _per_call(trial.scheduler.step, reps, clock),
        "train metrics (loss, correct)": _per_call(accumulate, reps, clock),
        "refresh.due(step)": _per_call(lambda: trial.refresh.due(steps), reps, clock),
        "closures (build the pair)": _per_call(
            lambda: trial._closures(x, y, totals, None, False), reps, clock
        ),
        "null timer phase": _per_call(phase, reps, clock),
    }


# ----------------------------------------------------------------- output
def fmt_ms(seconds: float) -> str:
    return f"{1e3 * seconds:.1f}"


def results_table(summary: list[dict[str, Any]]) -> str:
    headers = [
        "optimizer",
        "timed epochs",
        "loop epoch, wall (ms)",
        "bare epoch, wall (ms)",
        "loop / bare, wall: median (IQR)",
        "loop / bare, CPU time: median (IQR)",
        "max |Δ test loss|",
        f"≤ {TARGET_RATIO:.2f}x",
    ]

    def ratio(s: dict[str, Any], clock: str) -> str:
        p25, p75 = s[f"ratio_{clock}_p25"], s[f"ratio_{clock}_p75"]
        return f"{s[f'ratio_{clock}']:.3f} ({p25:.3f}–{p75:.3f})"

    rows = [
        [
            s["optimizer"],
            s["epochs_timed"],
            fmt_ms(s["loop_epoch_wall_s"]),
            fmt_ms(s["bare_epoch_wall_s"]),
            ratio(s, "wall"),
            ratio(s, "cpu"),
            f"{s['max_test_loss_gap']:.1e}",
            "yes" if s["met_wall"] else "no",
        ]
        for s in summary
    ]
    return markdown_table(headers, rows)


def extras_table(extras: dict[str, float], step_us: dict[str, float]) -> str:
    names = list(step_us)
    headers = ["per-step extra", "µs / step", *[f"share of a bare {n} step" for n in names]]
    rows = [
        [what, f"{us:.1f}", *[f"{100 * us / step_us[n]:.2f}%" for n in names]]
        for what, us in [*extras.items(), ("total", sum(extras.values()))]
    ]
    return markdown_table(headers, rows)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--smoke-test",
        action="store_true",
        help="2 epochs, 1 repeat, a data subset: a few seconds, for CI",
    )
    parser.add_argument("--epochs", type=int, default=6, help="epochs per run (first is warm-up)")
    parser.add_argument("--repeats", type=int, default=3, help="fresh runs per optimizer")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu")
    parser.add_argument("--optimizers", nargs="+", choices=OPTIMIZERS, default=list(OPTIMIZERS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--aa",
        action="store_true",
        help="A/A check: a second bare loop in the loop's place, to show the noise floor",
    )
    parser.add_argument("--extras-reps", type=int, default=2000, help="calls per extras round")
    parser.add_argument("--out", type=Path, help="write the results as JSON to this file")
    args = parser.parse_args(argv)
    if args.smoke_test:
        args.epochs, args.repeats, args.extras_reps = 2, 1, 50
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first epoch is a warm-up)")
    if args.repeats < 1 or args.threads < 1:
        parser.error("--repeats and --threads must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    clock = Clock(synchronizer(device))
    data = load_dataset({"dataset": "mnist1d"})
    if args.smoke_test:
        n_train, n_test = SMOKE_SIZES
        data = dataclasses.replace(
            data,
            x_train=data.x_train[:n_train],
            y_train=data.y_train[:n_train],
            x_test=data.x_test[:n_test],
            y_test=data.y_test[:n_test],
        )
    started = time.perf_counter()
    runs: dict[str, list[Pair]] = {name: [] for name in args.optimizers}
    for repeat in range(args.repeats):
        for pair in run_repeat(args, data, device, clock, repeat):
            runs[pair.optimizer].append(pair)
    summary = [summarize(name, runs[name]) for name in args.optimizers]
    steps = runs[args.optimizers[0]][0].bare.steps_per_epoch
    step_us = {s["optimizer"]: 1e6 * s["bare_epoch_cpu_s"] / steps for s in summary}
    extras = step_extras(args, data, device, clock, args.extras_reps)

    info = machine_info(device)
    print(
        f"# Loop overhead on {info['cpu']} ({info['cpu_cores']} cores, "
        f"{args.threads} torch thread(s)), torch {info['torch']}, {device}"
    )
    print(
        f"MNIST-1D, cnn1d, batch {BATCH_SIZE}: {data.num_train} train / {data.num_test} test, "
        f"{steps} steps per epoch; {args.epochs} epochs x {args.repeats} repeats "
        f"(first epoch of each run untimed)\n"
    )
    if args.aa:
        print("A/A CHECK: the 'loop' columns are a second bare loop (noise floor)\n")
    print(results_table(summary))
    print()
    print(extras_table(extras, step_us))
    met = all(s["met_wall"] for s in summary)
    met_cpu = all(s["met_cpu"] for s in summary)
    same = all(s["max_test_loss_gap"] == 0.0 for s in summary)
    print(
        f"\nVerdict: loop / bare ≤ {TARGET_RATIO:.2f}x in wall time "
        f"{'met' if met else 'NOT met'} (in CPU time {'met' if met_cpu else 'NOT met'}) "
        f"for {', '.join(args.optimizers)}; trajectories "
        f"{'identical' if same else 'DIFFER (see max |Δ test loss|)'}. "
        f"({time.perf_counter() - started:.1f} s)"
    )
    if args.smoke_test:
        print("(smoke test: one timed epoch on a data subset; the ratios mean nothing)")
    if args.out is not None:
        write_json(
            args.out,
            {
                "benchmark": "loop_overhead",
                "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                "machine": info,
                "target_ratio": TARGET_RATIO,
                "steps_per_epoch": steps,
                "results": summary,
                "step_extras_us": extras,
                "bare_step_us": step_us,
                "met": met,
                "met_cpu": met_cpu,
                "identical_trajectories": same,
            },
        )
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
