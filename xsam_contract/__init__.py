"""The names the three layers share, owned once: trial keys, registries, metrics, the study record.

This package imports neither torch, Ray nor pandas, so the study layer can
validate a study file and the analysis layer can read a study directory
without the trial layer. ``docs/contract.md`` documents every name here and
``tests/test_contract.py`` holds the two to each other.

- :data:`TRIAL_KEYS`: every trial setting with its default, dtype and what is
  allowed; :func:`validate_trial_config` checks a config against it.
- :data:`OPTIMIZERS`, :data:`DATASETS`, :data:`MODELS`: registries, name →
  ``"module:attribute"`` of the builder, imported only when a trial builds it.
- :data:`METRICS`: the metrics row, one per trial and epoch; :data:`PROBE_FIELDS`:
  one α search in a row's ``probes`` list.
- :data:`STUDY_FIELDS`: the fields of ``study.json``; :data:`STATUSES`: trial labels.
- :data:`ACCURACY_UNIT`: accuracy is a fraction in [0, 1] in rows and frames.
"""

from __future__ import annotations

from xsam_contract._io import atomic_write, atomic_write_with
from xsam_contract._metrics import (
    ACCURACY_COLUMNS,
    ACCURACY_UNIT,
    CPU_TIME_COLUMNS,
    METRICS,
    PROBE_FIELDS,
    TIME_COLUMNS,
    Field,
)
from xsam_contract._registry import (
    DATASETS,
    MODELS,
    OPTIMIZERS,
    Registry,
    RegistryError,
)
from xsam_contract._study import STATUSES, STUDY_FIELDS, STUDY_FILES, error_line
from xsam_contract._trial import (
    TRIAL_KEYS,
    ConfigError,
    Key,
    trial_defaults,
    validate_trial_config,
)

__all__ = [
    "ACCURACY_COLUMNS",
    "ACCURACY_UNIT",
    "CPU_TIME_COLUMNS",
    "DATASETS",
    "METRICS",
    "MODELS",
    "OPTIMIZERS",
    "PROBE_FIELDS",
    "STATUSES",
    "STUDY_FIELDS",
    "STUDY_FILES",
    "TIME_COLUMNS",
    "TRIAL_KEYS",
    "ConfigError",
    "Field",
    "Key",
    "Registry",
    "RegistryError",
    "atomic_write",
    "atomic_write_with",
    "error_line",
    "trial_defaults",
    "validate_trial_config",
]
