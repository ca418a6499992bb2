"""The driver side of xsam-tune: study files, search spaces, the Tuner, the CLI.

Typical use::

    from study import load_study, run_study

    cfg = load_study("configs/quickstart.yaml", ["trial.epochs=5"])
    results = run_study(cfg)          # a Ray Tune ResultGrid
    print(results.experiment_path)    # the study directory

Importing this package does not import Ray, Optuna or torch.
"""

from __future__ import annotations

from study._errors import StudyConfigError, StudyError, StudyLaunchError
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
