"""Study YAML → validated :class:`StudyConfig` objects.

A study file names the fixed trial settings, the swept parameters and how to
search them, what to optimise, the scheduler, the resources per trial and
where results go (see ``configs/`` for examples)::

    name: degradation
    trial: {dataset: mnist1d, model: cnn1d, epochs: 40}
    space:
      optimizer: {grid: [sam, xsam]}
      steps: {grid: [1, 2, 5, 10]}
      rho_max: {grid: [0.3, 0.6], when: {optimizer: xsam}}
    search: {algorithm: grid}
    metric: {name: test_acc, mode: max}

The work is split by concern: :mod:`study._schema` (the config objects),
:mod:`study._overrides` (``--set``), :mod:`study._validate` (``parse_study``)
and :mod:`study._distributions` (one class per distribution kind). This
module reads a file through all three.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from study._distributions import DISTRIBUTIONS
from study._errors import StudyConfigError
from study._overrides import apply_overrides
from study._schema import Metric, Param, Resources, Scheduler, Search, StudyConfig
from study._validate import SAMPLERS, parse_study
from study._yaml import load_yaml

__all__ = [
    "DISTRIBUTIONS",
    "SAMPLERS",
    "Metric",
    "Param",
    "Resources",
    "Scheduler",
    "Search",
    "StudyConfig",
    "apply_overrides",
    "load_study",
    "parse_study",
]


def load_study(path: str | os.PathLike[str], overrides: Iterable[str] = ()) -> StudyConfig:
    """Read, override and validate a study file.

    Args:
        path: The study YAML file.
        overrides: ``KEY=VALUE`` strings (``trial.epochs=5``), applied in order
            before validation; VALUE is parsed as YAML.

    Returns:
        The validated study.

    Raises:
        FileNotFoundError: The file does not exist.
        StudyConfigError: The file or an override is invalid.
    """
    path = Path(path)
    if path.is_dir():
        raise StudyConfigError(str(path), problem="is a directory", allowed="a study YAML file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise StudyConfigError(
            str(path), problem=f"not UTF-8 text (byte {exc.start})", allowed="a UTF-8 YAML file"
        ) from None
    data = load_yaml(text, source=str(path))
    data = apply_overrides(data, overrides)
    return parse_study(data, source=str(path))
