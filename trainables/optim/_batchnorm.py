"""Keep BatchNorm running statistics to the clean pass at θ0.

The perturbed passes (θ1…θk) and the α probes must use batch statistics in
train mode but leave `running_mean`, `running_var` and `num_batches_tracked`
exactly as the first pass left them. Switching `track_running_stats` off for
the duration does precisely that: in train mode PyTorch then normalises with
batch statistics and touches no buffer. (The authors set BN momentum to 0,
which gives the same outputs but still counts `num_batches_tracked` and turns
a non-finite batch statistic into NaN running statistics.)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch.nn.modules.batchnorm import _NormBase


def norm_layers(model: torch.nn.Module | None) -> list[_NormBase]:
    """The BatchNorm-type layers of `model` (none for None), found once per optimizer:
    walking the modules on every pass costs more than the rest of the step's bookkeeping."""
    return [] if model is None else [m for m in model.modules() if isinstance(m, _NormBase)]


@contextmanager
def frozen_running_stats(model: torch.nn.Module | Sequence[_NormBase] | None) -> Iterator[None]:
    """Within the block, the BatchNorm layers of `model` (or the given layers) update no
    running statistic."""
    layers = model if isinstance(model, Sequence) else norm_layers(model)
    switched = [m for m in layers if m.track_running_stats]
    for m in switched:
        # a plain attribute: skip Module.__setattr__'s parameter/buffer/module lookups
        object.__setattr__(m, "track_running_stats", False)
    try:
        yield
    finally:
        for m in switched:
            object.__setattr__(m, "track_running_stats", True)
