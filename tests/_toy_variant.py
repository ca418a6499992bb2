"""A toy SAM variant, added the way CONTRIBUTING.md says: one optimizer class, one registry entry.

``ToySAM`` is SAM with half the ascent radius, so a test can tell it apart
from SAM and predict its trajectory exactly (``toysam`` with ρ behaves as
``sam`` with ρ/2). It inherits ``from_config`` (the registry's builder
signature) from ``SharpnessAware``.

The registry is per process. A Ray worker gets the entry from
:func:`train_with_toy_variant`, which travels to the worker by value
(``ray.cloudpickle.register_pickle_by_value``), puts this folder on the
worker's ``sys.path`` so the registered target imports there, registers and
runs the project's trainable. A variant that lives in ``trainables/optim/``
with its line in ``xsam_contract.OPTIMIZERS`` needs none of this.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from trainables.optim import SAM
from xsam_contract import OPTIMIZERS

NAME = "toysam"
#: This folder, for workers that do not have it on their path.
FOLDER = str(Path(__file__).parent)


class ToySAM(SAM):
    """SAM ascending to ρ/2 instead of ρ."""

    def __init__(
        self, params: Any, base_optimizer: type[torch.optim.Optimizer], **kwargs: Any
    ) -> None:
        kwargs["rho"] = kwargs.get("rho", 0.05) / 2
        super().__init__(params, base_optimizer, **kwargs)


def register() -> None:
    """Add ``toysam`` to the optimizer registry of this process."""
    if FOLDER not in sys.path:
        sys.path.insert(0, FOLDER)
    OPTIMIZERS.register(NAME, "_toy_variant:ToySAM.from_config")


def train_with_toy_variant(config: dict[str, Any]) -> None:
    """The project's Ray trainable, in a worker that knows ``toysam``."""
    register()
    from trainables.tune import train_trial

    train_trial(config)
