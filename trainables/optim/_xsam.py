"""XSAM: descend along the most ascending direction on the v0–v1 great circle."""

from __future__ import annotations

from typing import Any

import torch

from trainables.optim._base import Probe, SharpnessAware, _check, _Vectors
from trainables.optim._functional import alpha_grid


class XSAM(SharpnessAware):
    """XSAM (ICLR 2026), exactly as `xsam-algorithm.md` states it.

    After the k ascent steps, v0 = (θk − θ0)/‖θk − θ0‖ and v1 = gk/‖gk‖ span
    a great circle v(α). When `step` gets a `probe`, α* = argmax over the grid
    {0, δ, …, a} of L(θ0 + ρm·v(α)); α* is then kept until the next search.
    The update descends from θ0 along d = ‖gk‖·v(α*). α = 1 is SAM.

    Args:
        rho_max: ρm, the probe radius.
        alpha_max: a, the upper end of the α grid.
        alpha_delta: δ, the grid step.
        alpha: the α used before the first search.
        **kwargs: see `SharpnessAware`.
    """

    _extra_buffers = ("direction",)

    def __init__(
        self,
        params: Any,
        base_optimizer: type[torch.optim.Optimizer],
        *,
        rho_max: float = 0.3,
        alpha_max: float = 2.0,
        alpha_delta: float = 0.1,
        alpha: float = 1.0,
        **kwargs: Any,
    ) -> None:
        _check(rho_max > 0, "rho_max", rho_max, "> 0")
        _check(alpha_max >= 0, "alpha_max", alpha_max, ">= 0")
        _check(alpha_delta > 0, "alpha_delta", alpha_delta, "> 0")
        _check(alpha >= 0, "alpha", alpha, ">= 0")
        super().__init__(params, base_optimizer, **kwargs)
        self.rho_max = rho_max
        self.alphas = alpha_grid(alpha_max, alpha_delta)
        self.alpha = float(alpha)

    def _direction(self, vec: _Vectors, probe: Probe | None) -> None:
        with self.timer.phase("update"):
            norm_u, norm_g, psi = self._prepare_directions(vec)
        if probe is not None:
            with self.timer.phase("probe"):
                self.last_search = self._search_alpha(
                    vec, probe, norm_u, norm_g, psi, self.rho_max, self.alphas
                )
                self.alpha = self.last_search.alpha
        with self.timer.phase("update"):
            self._set_slerp_direction(vec, norm_u, norm_g, psi, self.alpha)

    def _extra_state(self) -> dict[str, Any]:
        return {**super()._extra_state(), "alpha": self.alpha}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        super()._load_extra_state(state)
        self.alpha = state["alpha"]
