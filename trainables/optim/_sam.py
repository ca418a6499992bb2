"""SAM with k ascent steps (Foret et al. 2021); ASAM with `adaptive=True`."""

from __future__ import annotations

from typing import Any

import torch

from trainables.optim._base import Probe, SharpnessAware, _check, _Layout
from trainables.optim._functional import alpha_grid


class SAM(SharpnessAware):
    """k-step SAM: ascend k times by ρ/k, then descend from θ0 with gk.

    With `probe` given to `step`, XSAM's α search runs as a diagnostic (its
    result lands in `last_search`, timed as `probe`) and the update stays SAM's.
    `XSAM` builds on this class: the constructor, its checks and the α search
    are shared.

    Args:
        rho_max: ρm, the probe radius of the α search (> 0).
        alpha_max: a, the upper end of its grid (>= 0).
        alpha_delta: δ, its grid step (> 0).
        **kwargs: see `SharpnessAware`.
    """

    config_keys = (*SharpnessAware.config_keys, "rho_max", "alpha_max", "alpha_delta")

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
        _check(rho_max > 0, "rho_max", rho_max, "> 0")
        _check(alpha_max >= 0, "alpha_max", alpha_max, ">= 0")
        _check(alpha_delta > 0, "alpha_delta", alpha_delta, "> 0")
        super().__init__(params, base_optimizer, **kwargs)
        self.rho_max = rho_max
        self.alphas = alpha_grid(alpha_max, alpha_delta)

    def _search(self, vec: _Layout, probe: Probe, norm_u: Any, norm_g: Any, psi: Any) -> None:
        """Run the α search over this optimizer's grid into `last_search` (timed as `probe`)."""
        with self.timer.phase("probe"):
            self.last_search = self._search_alpha(
                vec, probe, norm_u, norm_g, psi, self.rho_max, self.alphas
            )

    def _direction(self, vec: _Layout, probe: Probe | None) -> None:
        with self.timer.phase("update"):
            if probe is None:
                # d = gk already sits in p.grad; only θ0 needs restoring.
                self._restore_theta0(vec)
                return
            # The diagnostic needs θk − θ0: that buffer exists only once asked for.
            norm_u, norm_g, psi = self._prepare_directions(vec)
        self._search(vec, probe, norm_u, norm_g, psi)
