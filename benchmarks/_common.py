"""Helpers shared by the scripts in `benchmarks/`: device, clocks, machine, tables, JSON.

Only the standard library and torch are imported here, so that a benchmark
runs on a machine whose image has torch but none of the study's other
dependencies (ray, optuna, pandas); torch only inside the functions that use it,
so that a script timing other processes does not pay for it.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

#: The repository root (the folder that holds `trainables/`).
REPO_ROOT = Path(__file__).resolve().parents[1]


def add_repo_to_path() -> None:
    """Make `trainables` importable when a script runs as `python benchmarks/x.py`."""
    root = str(REPO_ROOT)
    if root not in sys.path:
        sys.path.insert(0, root)


def resolve_device(name: str) -> torch.device:
    """`cpu`, `cuda` or `auto` (the GPU when one is present) as a torch device."""
    import torch  # here, not at the top: the scripts that time subprocesses need no torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible")
    return torch.device(name)


def synchronizer(device: torch.device) -> Callable[[], None] | None:
    """What to call before each clock reading so device work is finished."""
    import torch

    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return None


class Clock:
    """Clock readings that wait for the device first (CUDA) when asked.

    Args:
        synchronize: called before each reading, e.g. `torch.cuda.synchronize`.
        kind: `wall` (`time.perf_counter`) or `cpu` (`time.process_time`, the
            CPU time of this process: on a CPU shared with other jobs and with
            one torch thread, it leaves out the time the process waits for a
            core, which wall time cannot).
    """

    KINDS = ("wall", "cpu")

    def __init__(self, synchronize: Callable[[], None] | None = None, kind: str = "wall") -> None:
        if kind not in self.KINDS:
            raise ValueError(f"clock kind {kind!r}; expected one of {self.KINDS}")
        self.synchronize = synchronize or (lambda: None)
        self.kind = kind
        self._read = time.perf_counter if kind == "wall" else time.process_time

    def now(self) -> float:
        self.synchronize()
        return self._read()


def median(values: Sequence[float]) -> float:
    """The median, NaN for no values."""
    return statistics.median(values) if values else float("nan")


def machine_info(device: torch.device) -> dict[str, Any]:
    """CPU model, cores, threads, torch version and GPU (when used)."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def loadavg() -> str:
    """The system's load averages as `/proc/loadavg` gives them, `n/a` where it cannot be read."""
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return "n/a"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub Markdown table; floats are printed as given (format them first)."""
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
    ]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: str | Path, payload: dict[str, Any]) -> None:
    """Write `payload` as indented JSON (NaN and infinity become null)."""

    def clean(value: Any) -> Any:
        if isinstance(value, float) and (value != value or value in (float("inf"), -float("inf"))):
            return None
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    Path(path).write_text(json.dumps(clean(payload), indent=2) + "\n")
