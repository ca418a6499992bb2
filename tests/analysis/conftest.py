"""Session fixtures: one real (tiny) Ray Tune study directory, and a partial copy.

``build_study`` is the only place that makes the study. It runs a real Ray
Tune study of a small function trainable that reports rows in exactly the
format of docs/contract.md, and writes study.json/study.yaml as the driver
does. When the real trainable and ``xsam-tune run`` land, replace its body by a
call to the CLI on a tiny study file; the tests read only the directory.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

# Tests restate these numbers (12 trials, 3 epochs, …): keep them in step.
STUDY_NAME = "tiny"
OPTIMIZERS = ("sgd", "sam", "xsam")
STEPS = (1, 2)
SEEDS = (0, 1)
EPOCHS = 3
DIVERGES = ("sgd", 2, 1)  # (optimizer, steps, seed): NaN loss in epoch 2
RAISES = ("sam", 2, 1)  # raises in epoch 2 → errored

SPACE = {
    "optimizer": {"grid": list(OPTIMIZERS)},
    "steps": {"grid": list(STEPS)},
    "seed": {"grid": list(SEEDS)},
    "rho": {"loguniform": [0.05, 0.5]},
    "rho_max": {"uniform": [0.1, 0.5]},
    "refresh_every": {"choice": [1, 2]},
}
FIXED = {
    "dataset": "fake",
    "model": "mlp",
    "fake_shape": [1, 8, 8],
    "epochs": EPOCHS,
    "batch_size": 32,
    "lr": 0.05,
    "alpha_max": 2.0,
    "alpha_delta": 0.1,
    "alpha": 1.0,
    "refresh_unit": "epoch",
    "timing": True,
    "device": "cpu",
}


def _fake_trainable(config: dict) -> None:
    """Rows in the contract's format with plausible values (self-contained: Ray
    ships it to the workers by value)."""
    import math
    import random
    import tempfile

    from ray import tune

    opt, k, seed = config["optimizer"], int(config["steps"]), int(config["seed"])
    rng = random.Random(f"{opt}-{k}-{seed}")
    base = {"sgd": 0.80, "sam": 0.83, "xsam": 0.85}[opt]
    base += {"sgd": 0.0, "sam": -0.01, "xsam": 0.005}[opt] * (k - 1)
    base -= 0.02 * math.log10(config["rho"] / 0.15) ** 2
    n_steps, t_pass = 20, 0.01
    alphas = [round(i * config["alpha_delta"], 10) for i in range(21)]
    step, best, alpha, psi = 0, 0.0, (math.nan if opt == "sgd" else 1.0), math.nan
    fid = (math.nan, math.nan, math.nan)
    for epoch in range(1, config["epochs"] + 1):
        if (opt, k, seed) == ("sam", 2, 1) and epoch == 2:
            raise RuntimeError("simulated worker failure")
        diverged = (opt, k, seed) == ("sgd", 2, 1) and epoch == 2
        step += n_steps
        acc = base - 0.2 * math.exp(-epoch) + rng.uniform(-0.005, 0.005)
        if diverged:
            acc = 0.1
        best = max(best, acc)
        probes = []
        refreshed = opt == "xsam" and (epoch - 1) % int(config["refresh_every"]) == 0
        if refreshed:
            star = round(min(2.0, 0.8 + 0.1 * epoch + rng.choice([0.0, 0.1])), 1)
            psi = 0.3 + rng.uniform(-0.05, 0.05)
            losses = [1.0 + 0.5 / epoch * (1 - (a - star) ** 2 / 4) for a in alphas]
            probes.append(
                {
                    "step": step - n_steps + 1,
                    "epoch": epoch,
                    "alphas": alphas,
                    "losses": losses,
                    "alpha": star,
                    "psi": psi,
                }
            )
            alpha = star
            fid = (losses[0], losses[10], max(losses))
        passes = 1 if opt == "sgd" else k + 1
        jitter = 1 + rng.uniform(-0.05, 0.05)
        t_asc = n_steps * (passes - 1) * t_pass * jitter
        t_desc = n_steps * t_pass * jitter
        t_probe = len(probes) * len(alphas) * t_pass / 3 * 1.1
        t_upd = n_steps * (0.0015 if opt == "xsam" else 0.001)
        t_data, t_eval = 0.02, 0.05
        row = {
            "epoch": epoch,
            "lr": config["lr"] * 0.5 * (1 + math.cos(math.pi * epoch / config["epochs"])),
            "train_loss": math.nan if diverged else 1.5 / epoch + rng.uniform(0, 0.01),
            "train_acc": acc + 0.05,
            "test_loss": math.nan if diverged else 1.6 / epoch + rng.uniform(0, 0.01),
            "test_acc": acc,
            "best_test_acc": best,
            "diverged": diverged,
            "alpha": alpha,
            "alpha_refreshed": refreshed,
            "psi": psi,
            "probe_loss_v0": fid[0],
            "probe_loss_v1": fid[1],
            "probe_loss_best": fid[2],
            "probes": probes,
            "time_ascent": t_asc,
            "time_descent": t_desc,
            "time_probe": t_probe,
            "time_update": t_upd,
            "time_data": t_data,
            "time_eval": t_eval,
            "time_epoch": t_asc + t_desc + t_probe + t_upd + t_data + t_eval + 0.01,
            "n_forward": n_steps * passes + len(probes) * len(alphas),
            "n_backward": n_steps * passes,
            "step": step,
        }
        with tempfile.TemporaryDirectory() as d:
            Path(d, "state.json").write_text(json.dumps({"epoch": epoch}))
            tune.report(row, checkpoint=tune.Checkpoint.from_directory(d))
        if diverged:
            return


def build_study(storage: Path) -> Path:
    """Run the tiny study under ``storage`` and return its directory."""
    import ray
    from ray import tune

    study_dir = storage / STUDY_NAME
    study_dir.mkdir(parents=True)
    info = {
        "name": STUDY_NAME,
        "metric": {"name": "test_acc", "mode": "max"},
        "search": {"algorithm": "random"},
        "space": SPACE,
        "command": "xsam-tune run tiny.yaml",
        "versions": {"python": "3.11", "ray": ray.__version__},
        "hardware": {"cpus": os.cpu_count(), "gpus": []},
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (study_dir / "study.yaml").write_text(
        f"name: {STUDY_NAME}\nmetric: test_acc\nmode: max\nspace:\n"
        + "".join(f"  {k}: {json.dumps(v)}\n" for k, v in SPACE.items())
        + "trial:\n"
        + "".join(f"  {k}: {json.dumps(v)}\n" for k, v in FIXED.items())
    )
    (study_dir / "study.json").write_text(json.dumps(info, indent=2))
    space = {
        "optimizer": tune.grid_search(list(OPTIMIZERS)),
        "steps": tune.grid_search(list(STEPS)),
        "seed": tune.grid_search(list(SEEDS)),
        "rho": tune.loguniform(0.05, 0.5),
        "rho_max": tune.uniform(0.1, 0.5),
        "refresh_every": tune.choice([1, 2]),
        **FIXED,
    }
    # Workers cannot import this conftest: ship the trainable's module by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    started = not ray.is_initialized()  # the suite's ray_session fixture may own one
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        tuner = tune.Tuner(
            # One CPU per trial and reused actors: starting workers dominates on 2 cores.
            tune.with_resources(_fake_trainable, {"cpu": 1}),
            param_space=space,
            tune_config=tune.TuneConfig(metric="test_acc", mode="max", reuse_actors=True),
            run_config=tune.RunConfig(
                name=STUDY_NAME,
                storage_path=str(storage),
                verbose=0,
                failure_config=tune.FailureConfig(max_failures=0),
            ),
        )
        tuner.fit()
    finally:
        if started:
            ray.shutdown()
    info["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    (study_dir / "study.json").write_text(json.dumps(info, indent=2))
    return study_dir


def make_partial(src: Path, dst: Path) -> Path:
    """A copy of ``src`` as it looks mid-run: the driver has not finished,
    one trial has one epoch, one has no result.json yet, one ends in a
    half-written line; Ray's experiment state marks those three RUNNING."""
    shutil.copytree(src, dst)
    info = json.loads((dst / "study.json").read_text())
    info.pop("finished_at", None)
    (dst / "study.json").write_text(json.dumps(info, indent=2))
    finished = []
    for d in sorted(p for p in dst.iterdir() if p.is_dir()):
        lines = (d / "result.json").read_text().splitlines() if (d / "result.json").exists() else []
        if len(lines) == EPOCHS:
            finished.append((d, lines))
    (one, one_lines), (fresh, _), (torn, torn_lines) = finished[0], finished[1], finished[2]
    (one / "result.json").write_text(one_lines[0] + "\n")
    for name in ("result.json", "progress.csv"):
        (fresh / name).unlink()
    for ckpt in fresh.glob("checkpoint_*"):
        shutil.rmtree(ckpt)
    (torn / "result.json").write_text("\n".join(torn_lines[:2]) + "\n" + torn_lines[2][:40])
    running = {one.name, fresh.name, torn.name}
    for f in dst.glob("experiment_state-*.json"):
        state = json.loads(f.read_text())
        for entry in state["trial_data"]:
            head = json.loads(entry[0])
            if head.get("relative_logdir") in running:
                head["status"] = "RUNNING"
                entry[0] = json.dumps(head)
        f.write_text(json.dumps(state))
    return dst


@pytest.fixture(scope="session")
def study_dir(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny study (built once per session, on the suite's Ray instance)."""
    return build_study(tmp_path_factory.mktemp("studies"))


@pytest.fixture(scope="session")
def partial_dir(study_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny study as it looks while running (or after a driver crash)."""
    return make_partial(study_dir, tmp_path_factory.mktemp("partial") / STUDY_NAME)
