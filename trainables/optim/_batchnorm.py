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

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch.nn.modules.batchnorm import _NormBase


@contextmanager
def frozen_running_stats(model: torch.nn.Module | None) -> Iterator[None]:
    """Within the block, BatchNorm layers of `model` update no running statistic."""
    if model is None:
        yield
        return
    switched = [m for m in model.modules() if isinstance(m, _NormBase) and m.track_running_stats]
    for m in switched:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in switched:
            m.track_running_stats = True
