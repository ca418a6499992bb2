"""XSAM step time against the authors' `utils/xsam.py` (issue 14), and equality in float64.

For each model and k, `trainables.optim.XSAM` and the authors' XSAM step in
turn (interleaved: ours, theirs, ours, …) on their own copies of one model,
a fresh random batch every step drawn before the clock starts, no α search
on the timed steps. The authors' step is driven exactly as their `train.py`
drives it: `enable_running_stats`, `backup_param`, k times (forward,
`zero_grad`, backward, `first_step`, then `disable_running_stats` after the
first), one more forward/backward and `second_step(update_alpha=False)`,
with ρ/k as `train.py` passes it. Step time is the process CPU time
(`time.process_time`, so waiting for a core on a shared machine is not
counted; with `--threads 1` torch computes on this thread only), and the
table gives the medians over the timed steps and their ratio. A third
contender, interleaved with the two, runs the step's k + 1 forward/backward
passes alone on its own copy of the model: `floor` = passes / authors is the
lowest ratio any optimizer could reach with that model, since the passes are
the same in both steps.

Before timing, the script checks that both optimizers compute the same
parameters in float64: a few steps from the same state and batches, the first
and the fourth with an α search (the authors' `update_alpha`), with
the largest absolute parameter difference required to be at most 1e-10.

Models: the project's 1-D CNN (MNIST-1D shape 1x40) and a small 2-D CNN
defined here (3x32x32: three conv-BN-ReLU blocks, 16/32/64 channels, two
max-pools, global average pooling, a linear head), batch 32, k = 1 and 3.

The authors' code is not part of this project: pass a checkout of
https://github.com/Cccjl219/XSAM with `--authors-dir`; their module is
imported from there. `--smoke-test` runs ours alone for a few steps.

    python benchmarks/authors_step.py --authors-dir ../authors-xsam --threads 1
    python benchmarks/authors_step.py --smoke-test --out smoke.json
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_info, markdown_table, median, write_json

from trainables.models import build_model
from trainables.optim import XSAM

#: ρ, ρm, a, δ, α as the paper's MNIST-1D runs use them; SGD as the base.
HP: dict[str, Any] = {"rho": 0.15, "rho_max": 0.3, "alpha_max": 2.0, "alpha_delta": 0.1}
ALPHA0 = 1.0
EPS = 1e-12
BASE_KWARGS: dict[str, Any] = {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3}
NUM_CLASSES = 10
TARGETS = {"cnn1d": 0.80, "cnn2d": 0.95}  # ours / authors' step time, at most
EQUALITY_ATOL = 1e-10
SHAPES = {"cnn1d": (1, 40), "cnn2d": (3, 32, 32)}


class SmallCNN2D(nn.Module):
    """A small image CNN: three conv-BN-ReLU blocks (16, 32, 64 channels), a linear head."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = (3, 16, 32, 64)
        for i in range(3):
            layers += [
                nn.Conv2d(channels[i], channels[i + 1], 3, padding=1, bias=False),
                nn.BatchNorm2d(channels[i + 1]),
                nn.ReLU(inplace=True),
            ]
            if i < 2:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


def make_model(name: str, seed: int, dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(seed)
    model = build_model("cnn1d", SHAPES[name], NUM_CLASSES) if name == "cnn1d" else SmallCNN2D()
    return model.to(dtype).train()


def load_authors(authors_dir: Path) -> types.ModuleType:
    """Import `utils/xsam.py` from a checkout of the authors' repository."""
    path = authors_dir / "utils" / "xsam.py"
    if not path.is_file():
        raise SystemExit(f"--authors-dir {authors_dir}: no utils/xsam.py there")
    # Their module imports matplotlib.pyplot at the top but never uses it in the
    # optimizer: a stand-in keeps the benchmark free of that dependency.
    if importlib.util.find_spec("matplotlib") is None:
        sys.modules.setdefault("matplotlib", types.ModuleType("matplotlib"))
        sys.modules.setdefault("matplotlib.pyplot", types.ModuleType("matplotlib.pyplot"))
    spec = importlib.util.spec_from_file_location("authors_xsam", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------ the two steps
class Ours:
    """`trainables.optim.XSAM` with the training loop's closure."""

    def __init__(self, model: nn.Module, k: int) -> None:
        self.model = model
        self.opt = XSAM(
            model.parameters(),
            torch.optim.SGD,
            steps=k,
            alpha=ALPHA0,
            eps=EPS,
            model=model,
            **HP,
            **BASE_KWARGS,
        )

    def step(self, x: torch.Tensor, y: torch.Tensor, search: bool = False) -> None:
        model = self.model

        def closure() -> torch.Tensor:
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss

        def probe() -> torch.Tensor:
            return F.cross_entropy(model(x), y)

        self.opt.step(closure, probe=probe if search else None)


class Authors:
    """The authors' XSAM, driven as their `train.py` drives it."""

    def __init__(self, module: types.ModuleType, model: nn.Module, k: int) -> None:
        self.module, self.model, self.k = module, model, k
        self.opt = module.XSAM(
            model.parameters(),
            torch.optim.SGD,
            steps=k,
            rho=HP["rho"] / k,
            rho_max=HP["rho_max"],
            alpha=ALPHA0,
            alpha_max=HP["alpha_max"],
            alpha_delta=HP["alpha_delta"],
            eps=EPS,
            **BASE_KWARGS,
        )
        self.criterion = nn.CrossEntropyLoss()

    def step(self, x: torch.Tensor, y: torch.Tensor, search: bool = False) -> None:
        model, opt, criterion = self.model, self.opt, self.criterion
        with torch.enable_grad():
            self.module.enable_running_stats(model)
            opt.backup_param()
            for i in range(self.k):
                loss = criterion(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.first_step(step=i)
                if i == 0:
                    self.module.disable_running_stats(model)
            loss = criterion(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.second_step(
                update_alpha=search, model=model, inputs=x, targets=y, criterion=criterion
            )


class Passes:
    """The floor of any XSAM step: its k + 1 forward/backward passes alone, nothing else.

    Gradients are set to None before each pass, as the authors' loop does. No
    optimizer can be faster than this with the same model, so `floor` =
    passes / authors is the lowest ratio any implementation could reach.
    """

    def __init__(self, model: nn.Module, k: int) -> None:
        self.model, self.k = model, k

    def step(self, x: torch.Tensor, y: torch.Tensor, search: bool = False) -> None:
        for _ in range(self.k + 1):
            self.model.zero_grad(set_to_none=True)
            F.cross_entropy(self.model(x), y).backward()


def batches(name: str, n: int, batch: int, seed: int, dtype: torch.dtype):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x = torch.randn(batch, *SHAPES[name], generator=g).to(dtype)
        yield x, torch.randint(0, NUM_CLASSES, (batch,), generator=g)


# ------------------------------------------------------------- measurements
def check_equal(module: types.ModuleType, name: str, k: int, batch: int, n: int) -> dict:
    """Both optimizers from one float64 state over `n` steps (searches at steps 0 and 3)."""
    ours = Ours(make_model(name, 0, torch.float64), k)
    theirs = Authors(module, make_model(name, 0, torch.float64), k)
    diff = 0.0
    for i, (x, y) in enumerate(batches(name, n, batch, 7, torch.float64)):
        search = i in (0, 3)
        ours.step(x, y, search)
        theirs.step(x, y, search)
        if search and ours.opt.alpha != theirs.opt.alpha:
            raise SystemExit(
                f"{name} k={k}: α* differs at step {i}: {ours.opt.alpha} vs {theirs.opt.alpha}"
            )
        for p, q in zip(ours.model.parameters(), theirs.model.parameters(), strict=True):
            diff = max(diff, float((p - q).detach().abs().max()))
    return {"max_abs_diff": diff, "steps": n, "alphas": [ours.opt.alpha]}


def time_pair(
    steppers: dict[str, Callable[[torch.Tensor, torch.Tensor], None]],
    name: str,
    batch: int,
    warmup: int,
    timed: int,
) -> dict[str, list[float]]:
    """Interleaved CPU time of each stepper's plain steps (fresh batch each, drawn first)."""
    seconds: dict[str, list[float]] = {key: [] for key in steppers}
    data = batches(name, (warmup + timed) * len(steppers), batch, 11, torch.float32)
    for i in range(warmup + timed):
        for key, step in steppers.items():
            x, y = next(data)
            start = time.process_time()
            step(x, y)
            elapsed = time.process_time() - start
            if i >= warmup:
                seconds[key].append(elapsed)
    return seconds


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    module = None if args.smoke_test else load_authors(Path(args.authors_dir))
    rows: list[dict[str, Any]] = []
    for name in args.models:
        for k in args.ks:
            row: dict[str, Any] = {"model": name, "k": k, "batch": args.batch}
            steppers: dict[str, Callable] = {
                "ours": Ours(make_model(name, 0, torch.float32), k).step
            }
            if module is not None:
                eq = check_equal(module, name, k, args.batch, args.equality_steps)
                row["equality"] = eq
                if eq["max_abs_diff"] > EQUALITY_ATOL:
                    raise SystemExit(
                        f"{name} k={k}: parameters differ from the authors' by "
                        f"{eq['max_abs_diff']:.3g} > {EQUALITY_ATOL:g}"
                    )
                steppers["authors"] = Authors(module, make_model(name, 0, torch.float32), k).step
            steppers["passes"] = Passes(make_model(name, 0, torch.float32), k).step
            print(f"timing {name} k={k} ...", file=sys.stderr, flush=True)
            seconds = time_pair(steppers, name, args.batch, args.warmup, args.timed)
            row["seconds"] = seconds
            row["median_ms"] = {key: 1e3 * median(v) for key, v in seconds.items()}
            if "authors" in seconds:
                row["ratio"] = median(seconds["ours"]) / median(seconds["authors"])
                row["paired_ratio"] = median(
                    [a / b for a, b in zip(seconds["ours"], seconds["authors"], strict=True)]
                )
                row["target"] = TARGETS[name]
                row["floor"] = median(seconds["passes"]) / median(seconds["authors"])
            rows.append(row)
    return {"machine": machine_info(torch.device("cpu")), "args": vars(args), "rows": rows}


def render(result: dict[str, Any]) -> str:
    headers = [
        "model",
        "k",
        "ours ms",
        "authors ms",
        "ratio",
        "paired ratio",
        "target",
        "met",
        "max |Δθ| float64",
        "passes ms",
        "floor",
    ]
    table = []
    for r in result["rows"]:
        ratio = r.get("ratio", math.nan)
        table.append(
            [
                f"{r['model']} (batch {r['batch']})",
                r["k"],
                f"{r['median_ms']['ours']:.3f}",
                f"{r['median_ms'].get('authors', math.nan):.3f}",
                f"{ratio:.3f}",
                f"{r.get('paired_ratio', math.nan):.3f}",
                r.get("target", "-"),
                "-" if "target" not in r else ("yes" if ratio <= r["target"] else "no"),
                f"{r['equality']['max_abs_diff']:.2g}" if "equality" in r else "-",
                f"{r['median_ms']['passes']:.3f}",
                f"{r.get('floor', math.nan):.3f}",
            ]
        )
    return markdown_table(headers, table)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--authors-dir", help="a checkout of github.com/Cccjl219/XSAM")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--models", nargs="+", default=["cnn1d", "cnn2d"], choices=list(SHAPES))
    parser.add_argument("--ks", nargs="+", type=int, default=[1, 3])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--timed", type=int, default=200, help="timed steps per optimizer")
    parser.add_argument("--equality-steps", type=int, default=6)
    parser.add_argument("--out", help="write the result as JSON here")
    parser.add_argument(
        "--smoke-test", action="store_true", help="ours only, a few steps, no --authors-dir needed"
    )
    args = parser.parse_args(argv)
    if args.smoke_test:
        args.warmup, args.timed, args.ks = 1, 3, [1]
    elif not args.authors_dir:
        parser.error("--authors-dir is required (a checkout of github.com/Cccjl219/XSAM)")
    result = run(args)
    if args.out:
        write_json(args.out, result)
    print(render(result))


if __name__ == "__main__":
    main()
