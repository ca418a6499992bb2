"""XSAM: descend along the most ascending direction on the v0–v1 great circle."""

from __future__ import annotations

from typing import Any

import torch

from trainables.optim._base import Probe, _check, _Layout
from trainables.optim._sam import SAM


class XSAM(SAM):
    """XSAM (ICLR 2026), exactly as `xsam-algorithm.md` states it.

    After the k ascent steps, v0 = (θk − θ0)/‖θk − θ0‖ and v1 = gk/‖gk‖ span
    a great circle v(α). When `step` gets a `probe`, α* = argmax over the grid
    {0, δ, …, a} of L(θ0 + ρm·v(α)); α* is then kept until the next search.
    The update descends from θ0 along d = ‖gk‖·v(α*). α = 1 is SAM.

    The constructor's search arguments, their checks and the search itself
    are `SAM`'s; XSAM adds the α it descends with and uses the search's α*.

    Args:
        alpha: the α used before the first search (>= 0).
        **kwargs: see `SAM` (rho_max, alpha_max, alpha_delta) and `SharpnessAware`.
    """

    _extra_buffers = ("direction",)
    config_keys = (*SAM.config_keys, "alpha")

    def __init__(
        self,
        params: Any,
        base_optimizer: type[torch.optim.Optimizer],
        *,
        alpha: float = 1.0,
        **kwargs: Any,
    ) -> None:
        _check(alpha >= 0, "alpha", alpha, ">= 0")
        super().__init__(params, base_optimizer, **kwargs)
        self.alpha = float(alpha)

    def _direction(self, vec: _Layout, probe: Probe | None) -> None:
        with self.timer.phase("update"):
            norm_u, norm_g, psi = self._prepare_directions(vec)
        if probe is not None:
            self._search(vec, probe, norm_u, norm_g, psi)
            assert self.last_search is not None
            self.alpha = self.last_search.alpha
        with self.timer.phase("update"):
            self._set_slerp_direction(vec, norm_u, norm_g, psi, self.alpha)

    def _extra_state(self) -> dict[str, Any]:
        return {**super()._extra_state(), "alpha": self.alpha}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        super()._load_extra_state(state)
        self.alpha = state["alpha"]
