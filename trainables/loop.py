"""The training loop of one trial, free of Ray: config in, one metrics row per epoch out.

    trial = Trial(config)             # validated config → data, model, optimizer
    for row in trial.rows():          # trains epoch by epoch until done or diverged
        ...                           # row: xsam_contract.METRICS, in that order
    trial.state_dict()                # everything needed to resume bit for bit

`trainables.tune` wraps this for Ray Tune; tests and benchmarks use it directly.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import xsam_contract
from trainables.data import Dataset, iterate_batches, load_dataset, make_dataloader
from trainables.models import build_model
from trainables.optim import SAM, XSAM, NullTimer, PhaseTimer, SharpnessAware, alpha_grid
from xsam_contract import (
    CPU_TIME_COLUMNS,
    OPTIMIZERS,
    PROBE_FIELDS,
    TIME_COLUMNS,
    ConfigError,
    RegistryError,
    atomic_write_with,
    validate_trial_config,
)

# ConfigError and validate_trial_config are xsam_contract's, re-exported for callers of
# the trial layer.
__all__ = [
    "METRICS",
    "TIME_COLUMNS",
    "CheckpointError",
    "ConfigError",
    "Trial",
    "build_optimizer",
    "read_state",
    "validate_trial_config",
]

#: The column names of the metrics row, in order (``xsam_contract.METRICS`` has their types).
METRICS: tuple[str, ...] = tuple(xsam_contract.METRICS)

#: The trial keys a dataset depends on (a loader reading a new key adds it here), and
#: ``seed`` for ``fake``.
DATA_KEYS = (
    "dataset",
    "data_dir",
    "image_size",
    "fake_shape",
    "fake_classes",
    "fake_train_size",
    "fake_test_size",
    "augment",
)

# Datasets stay loaded across trials of one process (Ray reuses actors).
_DATASETS: dict[tuple, Dataset] = {}


def _dataset_key(config: dict[str, Any]) -> tuple:
    key = tuple(str(config[k]) for k in DATA_KEYS)
    # FakeData depends on the seed; the other datasets do not.
    return (*key, config["seed"]) if config["dataset"] == "fake" else key


def cached_dataset(config: dict[str, Any]) -> Dataset:
    """The trial's dataset on the CPU, loaded once per process."""
    key = _dataset_key(config)
    if key not in _DATASETS:
        _DATASETS[key] = load_dataset(config)
    return _DATASETS[key]


def pick_device(name: str) -> torch.device:
    """`auto`: the GPU Ray assigned to this trial (CUDA_VISIBLE_DEVICES), else the CPU.

    `auto` takes CUDA only when torch sees a device: a trial given a fractional
    GPU on a node whose driver or devices torch cannot use trains on the CPU,
    and its rows say so (``device``)."""
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", 0)
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class RefreshPolicy:
    """When α is re-estimated: every `period` steps, on the first step of each period.

    `refresh_every` E with unit `epoch` means a period of E·S steps (S steps per
    epoch), so E = 1 is the paper's "first minibatch of every epoch" and E = 0.5
    twice per epoch; with unit `step` the period is E steps; E = 0 never refreshes.
    """

    def __init__(self, every: float, unit: str, steps_per_epoch: int) -> None:
        self.period = every * (steps_per_epoch if unit == "epoch" else 1)

    def due(self, step: int) -> bool:
        if self.period <= 0:
            return False
        if step == 0:
            return True
        return math.floor(step / self.period + 1e-9) != math.floor((step - 1) / self.period + 1e-9)


def build_optimizer(config: dict[str, Any], model: torch.nn.Module) -> torch.optim.Optimizer:
    """The optimizer a validated config names, around SGD (momentum, coupled decay) or AdamW.

    The builder comes from the registry ``xsam_contract.OPTIMIZERS``; every builder is
    called as ``build(params, base, base_kwargs, config, model)``.

    Raises:
        ConfigError: ``optimizer`` is not a registered name.
    """
    if config["base_optimizer"] == "sgd":
        base: type[torch.optim.Optimizer] = torch.optim.SGD
        base_kwargs: dict[str, Any] = dict(
            lr=config["lr"],
            momentum=config["momentum"],
            weight_decay=config["weight_decay"],
            nesterov=config["nesterov"] and config["momentum"] > 0,
        )
    else:
        base = torch.optim.AdamW
        base_kwargs = dict(lr=config["lr"], weight_decay=config["weight_decay"])
    try:
        build = OPTIMIZERS.load(config["optimizer"])
    except RegistryError:
        raise ConfigError(
            "optimizer", config["optimizer"], "one of " + ", ".join(OPTIMIZERS)
        ) from None
    return build(model.parameters(), base, base_kwargs, config, model)


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up over `warmup` steps, then cosine annealing to zero at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


class Trial:
    """One trial: data, model, optimizer and schedule built from a config.

    Args:
        config: trial settings (see ``xsam_contract.TRIAL_KEYS``); validated here.
        dataset: an already loaded dataset to use instead of loading one.
    """

    def __init__(self, config: dict[str, Any], dataset: Dataset | None = None) -> None:
        self.config = cfg = validate_trial_config(config)
        if cfg["threads"]:
            torch.set_num_threads(cfg["threads"])
        seed_everything(cfg["seed"])
        self.device = pick_device(cfg["device"])
        self.data = (dataset or cached_dataset(cfg)).to(
            self.device if cfg["data_on_device"] else "cpu"
        )
        self.model = build_model(cfg["model"], self.data.input_shape, self.data.num_classes).to(
            self.device
        )
        self.optimizer = build_optimizer(cfg, self.model)
        self.sharp = self.optimizer if isinstance(self.optimizer, SharpnessAware) else None
        self.steps_per_epoch = math.ceil(self.data.num_train / cfg["batch_size"])
        total = cfg["epochs"] * self.steps_per_epoch
        warmup = cfg["warmup_epochs"] * self.steps_per_epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda t: _lr_factor(t, total, warmup)
        )
        self.refresh = RefreshPolicy(
            cfg["refresh_every"], cfg["refresh_unit"], self.steps_per_epoch
        )
        self.alphas = alpha_grid(cfg["alpha_max"], cfg["alpha_delta"])
        # Diagnostics for optimizers that do not search α themselves (SAM and its
        # subclasses do): a SAM twin over the same parameters that only measures.
        self.diagnostic: SAM | None = None
        if cfg["diagnostics"] and not isinstance(self.optimizer, SAM):
            self.diagnostic = SAM(
                self.model.parameters(),
                torch.optim.SGD,
                rho=cfg["rho"],
                steps=cfg["steps"],
                adaptive=cfg["adaptive"],
                eta=cfg["eta"],
                model=self.model,
                lr=cfg["lr"],
            )
        self.generator = torch.Generator().manual_seed(cfg["seed"])
        amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg["precision"])
        self.autocast_dtype = amp
        self.scaler = torch.amp.GradScaler(self.device.type) if cfg["precision"] == "fp16" else None
        sync = torch.cuda.synchronize if self.device.type == "cuda" else None
        self.timer: PhaseTimer | NullTimer = PhaseTimer(sync) if cfg["timing"] else NullTimer()
        if self.sharp is not None:
            self.sharp.timer = self.timer
        self.epoch = 0  # epochs completed
        self.step = 0  # optimizer steps completed
        self.best_test_acc = 0.0
        self.last_search: dict[str, Any] | None = None
        self.diverged = False

    # ----------------------------------------------------------------- rows
    def rows(self) -> Iterator[dict[str, Any]]:
        """Train the remaining epochs, yielding one metrics row after each."""
        while self.epoch < self.config["epochs"] and not self.diverged:
            yield self.run_epoch()

    def run_epoch(self) -> dict[str, Any]:
        """Train one epoch, evaluate, and return its metrics row."""
        timer = self.timer
        if isinstance(timer, PhaseTimer):
            timer.reset()
        epoch_start, epoch_cpu_start = time.perf_counter(), time.process_time()
        self.model.train()
        totals = {
            "loss": torch.zeros((), device=self.device),
            "correct": torch.zeros((), device=self.device),
        }
        seen = 0
        counts = {"forward": 0, "backward": 0}
        probes: list[dict[str, Any]] = []
        batches = self._train_batches()
        while True:
            with timer.phase("data"):
                batch = next(batches, None)
            if batch is None:
                break
            x, y = batch
            self._train_step(x, y, self.refresh.due(self.step), totals, counts, probes)
            seen += y.shape[0]
            self.step += 1
            self.scheduler.step()
        with timer.phase("eval"):
            test_loss, test_acc = self.evaluate()
        self.epoch += 1
        train_loss = float(totals["loss"]) / seen
        train_acc = float(totals["correct"]) / seen
        self.diverged = not (math.isfinite(train_loss) and math.isfinite(test_loss))
        if not self.diverged:
            self.best_test_acc = max(self.best_test_acc, test_acc)
        times = timer.seconds if isinstance(timer, PhaseTimer) else {}
        cpu_times = timer.cpu_seconds if isinstance(timer, PhaseTimer) else {}
        search = self.last_search or {}
        row: dict[str, Any] = {
            "epoch": self.epoch,
            "step": self.step,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": train_loss,
            "train_acc": train_acc,
            "test_loss": test_loss,
            "test_acc": test_acc,
            "best_test_acc": self.best_test_acc,
            "diverged": self.diverged,
            "alpha": self._alpha_in_use(),
            "alpha_refreshed": bool(probes),
            "psi": search.get("psi", math.nan),
            "probe_loss_v0": search.get("loss_v0", math.nan),
            "probe_loss_v1": search.get("loss_v1", math.nan),
            "probe_loss_best": search.get("loss_best", math.nan),
            "probes": probes,
            "n_forward": counts["forward"],
            "n_backward": counts["backward"],
            "device": str(self.device),
        }
        for column in TIME_COLUMNS[:-1]:
            row[column] = times.get(column.removeprefix("time_"), 0.0)
        row["time_epoch"] = time.perf_counter() - epoch_start
        for column in CPU_TIME_COLUMNS[:-1]:
            row[column] = cpu_times.get(column.removeprefix("cpu_"), 0.0)
        row["cpu_epoch"] = time.process_time() - epoch_cpu_start
        return row

    def _alpha_in_use(self) -> float:
        if isinstance(self.optimizer, XSAM):
            return self.optimizer.alpha
        # SAM descends along v1, which is α = 1; other optimizers have no α.
        return 1.0 if isinstance(self.optimizer, SAM) else math.nan

    def _train_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        cfg = self.config
        if cfg["data_on_device"]:
            yield from iterate_batches(self.data, True, cfg["batch_size"], self.generator)
            return
        loader = make_dataloader(
            self.data, True, cfg["batch_size"], cfg["num_workers"], self.generator
        )
        for x, y in loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def _autocast(self) -> AbstractContextManager[None]:
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _closures(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        totals: dict[str, torch.Tensor] | None,
        counts: dict[str, int] | None,
        count_probes: bool,
    ) -> tuple[Callable[[], torch.Tensor], Callable[[], torch.Tensor]]:
        """The (closure, probe) pair of one minibatch.

        Train metrics come from the first (clean) pass only; `totals` and
        `counts` are None for diagnostic passes, which are not the trial's own.
        """
        first = True

        def closure() -> torch.Tensor:
            nonlocal first
            with self._autocast():
                logits = self.model(x)
                loss = F.cross_entropy(logits, y)
            if first and totals is not None:
                totals["loss"] += loss.detach().float() * y.shape[0]
                totals["correct"] += (logits.argmax(1) == y).sum()
            first = False
            (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            if counts is not None:
                counts["forward"] += 1
                counts["backward"] += 1
            return loss

        def probe() -> torch.Tensor:
            with self._autocast():
                loss = F.cross_entropy(self.model(x), y)
            if counts is not None and count_probes:
                counts["forward"] += 1
            return loss

        return closure, probe

    def _train_step(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        refresh_due: bool,
        totals: dict[str, torch.Tensor],
        counts: dict[str, int],
        probes: list[dict[str, Any]],
    ) -> None:
        cfg = self.config
        # XSAM's search steers its update (its probe forwards are the trial's own);
        # any other search is a diagnostic.
        is_xsam = isinstance(self.optimizer, XSAM)
        search = refresh_due and (is_xsam or cfg["diagnostics"])
        if search and self.diagnostic is not None:
            # timed apart as probe time; its passes are not counted as the trial's
            diag_closure, diag_probe = self._closures(x, y, None, None, False)
            with self.timer.phase("probe"):
                found = self.diagnostic.measure(
                    diag_closure, diag_probe, cfg["rho_max"], self.alphas
                )
            self._record(found.to_dict(), probes)
        closure, probe = self._closures(x, y, totals, counts, count_probes=is_xsam)
        if self.sharp is None:
            with self.timer.phase("descent"):
                self.optimizer.zero_grad(set_to_none=False)
                closure()
            with self.timer.phase("update"):
                if self.scaler is not None:
                    self.scaler.step(self.optimizer)
                else:
                    self.optimizer.step()
        else:
            in_step = search and self.diagnostic is None
            self.sharp.step(closure, probe=probe if in_step else None, grad_scaler=self.scaler)
            if in_step:
                self._record(self.sharp.last_search.to_dict(), probes)
        if self.scaler is not None:
            self.scaler.update()

    def _record(self, search: dict[str, Any], probes: list[dict[str, Any]]) -> None:
        found = {**search, "epoch": self.epoch + 1}
        record = {name: found[name] for name in PROBE_FIELDS}  # the contract's fields, in order
        self.last_search = record
        probes.append(record)

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        """Test loss and accuracy (eval mode, running statistics)."""
        self.model.eval()
        loss = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device)
        for x, y in iterate_batches(self.data, False, max(self.config["batch_size"], 256)):
            x, y = x.to(self.device), y.to(self.device)
            with self._autocast():
                logits = self.model(x)
            loss += F.cross_entropy(logits.float(), y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
        self.model.train()
        n = self.data.num_test
        return float(loss) / n, float(correct) / n

    # ------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, Any]:
        """Everything that steers the rest of the run, for a bit-exact resume.

        Only tensors and plain Python values (dict, list, tuple, str, numbers,
        bool, None): :meth:`load` reads it back with ``weights_only=True``, which
        refuses anything else (docs: README "Trust").
        """
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state = {
            "config": self.config,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "rng": {
                "python": random.getstate(),
                # NumPy's key as a tensor: weights_only refuses ndarrays
                "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            },
            "epoch": self.epoch,
            "step": self.step,
            "best_test_acc": self.best_test_acc,
            "last_search": self.last_search,
            "diverged": self.diverged,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
        }
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        rng = state["rng"]
        random.setstate(rng["python"])
        kind, keys, pos, has_gauss, cached = rng["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.epoch, self.step = state["epoch"], state["step"]
        self.best_test_acc = state["best_test_acc"]
        self.last_search = state["last_search"]
        self.diverged = state["diverged"]
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])

    def save(self, path: Path) -> None:
        """Write the state atomically (a crash never leaves half a checkpoint)."""
        state = self.state_dict()
        atomic_write_with(path, lambda fh: torch.save(state, fh))

    def load(self, path: Path) -> None:
        """Resume from what :meth:`save` wrote.

        Raises:
            CheckpointError: ``path`` is not such a file (damaged, or holding
                anything but tensors and plain values); nothing in it ran.
        """
        self.load_state_dict(read_state(path, self.device))


class CheckpointError(ValueError):
    """A trial state file that cannot be trusted or read; the message names the file."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Ray copies and pickles a trial's exception: rebuild it from its message.
        return (type(self), self.args)


def read_state(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """A trial state file written by :meth:`Trial.save`, read without running anything in it.

    ``torch.load(weights_only=True)`` unpickles tensors and plain Python values
    only: a file naming any other callable (a crafted ``__reduce__``) is refused
    before it is called. ``mmap`` keeps checking a large file cheap.

    Raises:
        CheckpointError: The file is missing, damaged or not a trial state.
    """
    import pickle
    import zipfile

    try:
        state = torch.load(path, map_location=device, weights_only=True, mmap=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, OSError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        if "Weights only load failed" in reason:
            reason = "it holds objects other than tensors and plain values (refused unread)"
        elif "mmap can only be used" in reason:  # a plain or legacy pickle: never unpickled
            reason = "cut short, or not in torch's zip format (refused unread)"
        raise CheckpointError(f"trial state {path}: cannot be loaded: {reason[:200]}") from None
    if not isinstance(state, dict) or not set(state) >= _STATE_KEYS:
        raise CheckpointError(f"trial state {path}: not a trial state written by xsam-tune")
    return state


_STATE_KEYS = frozenset({"config", "model", "optimizer", "scheduler", "generator", "rng", "epoch"})
