"""The optimizer core: SAM (k steps), XSAM, GSAM and WSAM around any base optimizer.

ASAM is `adaptive=True` on any of them; plain SGD runs use the base optimizer.
This package imports nothing but torch.

    from trainables.optim import XSAM
    opt = XSAM(model.parameters(), torch.optim.SGD, rho=0.15, steps=1, rho_max=0.3,
               alpha_max=2.0, alpha_delta=0.1, alpha=1.0, model=model,
               lr=0.05, momentum=0.9, weight_decay=1e-3)
    loss = opt.step(closure, probe=probe)   # probe only on α-refresh steps

The registry `xsam_contract.OPTIMIZERS` builds them from a trial config with
`build_base` (plain training) and `<Class>.from_config`, all called as
`(params, base, base_kwargs, config, model)`.
"""

from __future__ import annotations

from trainables.optim._base import AlphaSearch, SharpnessAware, build_base
from trainables.optim._batchnorm import frozen_running_stats
from trainables.optim._functional import alpha_grid
from trainables.optim._gsam import GSAM
from trainables.optim._sam import SAM
from trainables.optim._timing import PHASES, NullTimer, PhaseTimer
from trainables.optim._wsam import WSAM
from trainables.optim._xsam import XSAM

__all__ = [
    "GSAM",
    "PHASES",
    "SAM",
    "WSAM",
    "XSAM",
    "AlphaSearch",
    "NullTimer",
    "PhaseTimer",
    "SharpnessAware",
    "alpha_grid",
    "build_base",
    "frozen_running_stats",
]
