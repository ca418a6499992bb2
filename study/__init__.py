"""The driver side of xsam-tune: study files, search spaces, the Tuner, the CLI.

Typical use::

    from study import load_study, run_study

    cfg = load_study("configs/quickstart.yaml", ["trial.epochs=5"])
    results = run_study(cfg)          # a Ray Tune ResultGrid
    print(results.experiment_path)    # the study directory

Importing this package does not import Ray, Optuna or torch, and imports each
public name's module on first use (``xsam-tune --help`` needs none of them).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from study._errors import StudyConfigError, StudyError, StudyLaunchError

if TYPE_CHECKING:
    from study.config import StudyConfig, apply_overrides, load_study, parse_study
    from study.launch import read_study_config, resume_study, run_study
    from study.space import build_tune_space, expand_grid

__all__ = [
    "StudyConfig",
    "StudyConfigError",
    "StudyError",
    "StudyLaunchError",
    "apply_overrides",
    "build_tune_space",
    "expand_grid",
    "load_study",
    "parse_study",
    "read_study_config",
    "resume_study",
    "run_study",
]

# Public name → the module that defines it, imported on first access (PEP 562).
_LAZY = {
    "StudyConfig": "study.config",
    "apply_overrides": "study.config",
    "load_study": "study.config",
    "parse_study": "study.config",
    "read_study_config": "study.launch",
    "resume_study": "study.launch",
    "run_study": "study.launch",
    "build_tune_space": "study.space",
    "expand_grid": "study.space",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'study' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later accesses skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
