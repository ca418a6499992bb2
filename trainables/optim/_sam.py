"""SAM with k ascent steps (Foret et al. 2021); ASAM with `adaptive=True`."""

from __future__ import annotations

from typing import Any

import torch

from trainables.optim._base import Probe, SharpnessAware, _Vectors
from trainables.optim._functional import alpha_grid


class SAM(SharpnessAware):
    """k-step SAM: ascend k times by ρ/k, then descend from θ0 with gk.

    With `probe` given to `step`, XSAM's α search runs as a diagnostic (its
    result lands in `last_search`, timed as `probe`) and the update stays SAM's.

    Args:
        rho_max: ρm of the diagnostic α search.
        alpha_max: a, the upper end of its grid.
        alpha_delta: δ, its grid step.
        **kwargs: see `SharpnessAware`.
    """

    def __init__(
        self,
        params: Any,
        base_optimizer: type[torch.optim.Optimizer],
        *,
        rho_max: float = 0.3,
        alpha_max: float = 2.0,
        alpha_delta: float = 0.1,
        **kwargs: Any,
    ) -> None:
        super().__init__(params, base_optimizer, **kwargs)
        self.rho_max = rho_max
        self.alphas = alpha_grid(alpha_max, alpha_delta)

    def _direction(self, vec: _Vectors, probe: Probe | None) -> None:
        with self.timer.phase("update"):
            if probe is None:
                # d = gk already sits in p.grad; only θ0 needs restoring.
                torch._foreach_copy_(vec.params, vec.theta0)
                return
            # The diagnostic needs θk − θ0: that buffer exists only when asked for.
            vec.extra["direction"] = self._buffer("direction", vec.params)
            norm_u, norm_g, psi = self._prepare_directions(vec)
        with self.timer.phase("probe"):
            self.last_search = self._search_alpha(
                vec, probe, norm_u, norm_g, psi, self.rho_max, self.alphas
            )
