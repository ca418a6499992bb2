"""Epoch time of SGD, SAM and XSAM through the real training loop: the paper's timing table.

The paper reports hours per 200 epochs, SAM → XSAM: VGG-11/CIFAR-10 +3.2%,
ResNet-18/CIFAR-100 +1.3%, DenseNet-121/CIFAR-100 +0.2%. This script runs
whole epochs of `trainables.loop.Trial` on CIFAR-shaped data (random uint8
images held on the device, the paper's augmentation on the device, 50,000
training images, batch 128 → 391 steps, one α search per epoch) and reports
the epoch time of each optimizer, XSAM over SAM, and the floor that the 21
probe forwards alone impose (their measured time over SAM's epoch). A second
pass with phase timing on gives the per-phase breakdown.

    python benchmarks/epoch_overhead.py --device cuda --out epoch.json
    python benchmarks/epoch_overhead.py --smoke-test        # seconds, on the CPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainables.data import Dataset, PaperAugment
from trainables.loop import TIME_COLUMNS, Trial

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def random_cifar(n_train: int, n_test: int, classes: int, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    return Dataset(
        name="fake",
        x_train=torch.randint(0, 256, (n_train, 3, 32, 32), generator=g, dtype=torch.uint8),
        y_train=torch.randint(0, classes, (n_train,), generator=g),
        x_test=torch.randint(0, 256, (n_test, 3, 32, 32), generator=g, dtype=torch.uint8),
        y_test=torch.randint(0, classes, (n_test,), generator=g),
        num_classes=classes,
        input_shape=(3, 32, 32),
        augment=PaperAugment(),
        mean=CIFAR_MEAN,
        std=CIFAR_STD,
    )


def epoch_times(config: dict[str, Any], data: Dataset, epochs: int) -> list[dict[str, Any]]:
    """Rows of `epochs` epochs after one warm-up epoch."""
    trial = Trial({**config, "epochs": epochs + 1}, dataset=data)
    rows = list(trial.rows())
    return rows[1:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke-test", action="store_true", help="tiny sizes, CPU, seconds")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--models", nargs="+", default=["resnet18"])
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs after one warm-up")
    parser.add_argument("--train-size", type=int, default=50_000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.smoke_test:
        # the code path only: a CPU ResNet-18 step takes seconds
        args.device, args.epochs, args.train_size, args.models = "cpu", 1, 64, ["mlp"]
    data = random_cifar(args.train_size, max(64, args.train_size // 5), args.classes)
    base = {
        "dataset": "fake",
        "batch_size": 16 if args.smoke_test else 128,
        "device": args.device,
        "precision": args.precision,
        "seed": 0,
    }
    results = []
    for model in args.models:
        timed: dict[str, float] = {}
        phases: dict[str, dict[str, float]] = {}
        for opt in ("sgd", "sam", "xsam"):
            cfg = {**base, "model": model, "optimizer": opt, "timing": False}
            rows = epoch_times(cfg, data, args.epochs)
            timed[opt] = statistics.median(r["time_epoch"] for r in rows)
            row = epoch_times({**cfg, "timing": True}, data, 1)[0]
            phases[opt] = {k: row[k] for k in row if k.startswith("time_")}
            phases[opt]["n_forward"] = row["n_forward"]
            phases[opt]["n_backward"] = row["n_backward"]
        probe_forwards = phases["xsam"]["n_forward"] - phases["xsam"]["n_backward"]
        floor = phases["xsam"]["time_probe"] / phases["sam"]["time_epoch"]
        results.append(
            {
                "model": model,
                "epoch_s": timed,
                "xsam_over_sam_pct": 100 * (timed["xsam"] / timed["sam"] - 1),
                "floor_pct": 100 * floor,
                "probe_forwards_per_epoch": probe_forwards,
                "phases": phases,
            }
        )
    device = (
        torch.cuda.get_device_name(0)
        if torch.cuda.is_available() and args.device != "cpu"
        else "cpu"
    )
    print(f"device: {device}; torch {torch.__version__}; precision {args.precision}\n")
    print("| model | SGD s/epoch | SAM s/epoch | XSAM s/epoch | XSAM/SAM − 1 | probe floor |")
    print("|---|---|---|---|---|---|")
    for r in results:
        e = r["epoch_s"]
        print(
            f"| {r['model']} | {e['sgd']:.2f} | {e['sam']:.2f} | {e['xsam']:.2f} | "
            f"{r['xsam_over_sam_pct']:+.2f}% | {r['floor_pct']:.2f}% |"
        )
    print("\nphase breakdown (s per epoch, timing on):")
    cols = TIME_COLUMNS
    print("| model | optimizer | " + " | ".join(c[5:] for c in cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for r in results:
        for opt, ph in r["phases"].items():
            print(f"| {r['model']} | {opt} | " + " | ".join(f"{ph[c]:.2f}" for c in cols) + " |")
    if args.out:
        args.out.write_text(
            json.dumps({"device": device, "time": time.time(), "results": results}, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
