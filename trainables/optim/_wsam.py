"""WSAM (Yue et al. 2023): weighted sharpness as a regularisation term."""

from __future__ import annotations

from typing import Any

import torch

from trainables.optim._base import Probe, SharpnessAware, _check, _Layout


class WSAM(SharpnessAware):
    """Weighted SAM: L + γ/(1−γ)·(L(θk) − L(θ0)).

    With w = γ/(1−γ), the coupled update descends with w·gk + (1−w)·g0; the
    decoupled one (the paper's default) lets the base optimizer step with g0
    and then moves θ by −lr·w·(gk − g0), outside the base optimizer's state.

    Args:
        wsam_gamma: γ in [0, 1); γ = 0.5 is SAM, γ = 0 plain training.
        wsam_decouple: the decoupled update.
        **kwargs: see `SharpnessAware`.
    """

    _extra_buffers = ("g0",)  # filled with the clean gradient by the base class
    config_keys = (*SharpnessAware.config_keys, "wsam_gamma", "wsam_decouple")

    def __init__(
        self,
        params: Any,
        base_optimizer: type[torch.optim.Optimizer],
        *,
        wsam_gamma: float = 0.9,
        wsam_decouple: bool = True,
        **kwargs: Any,
    ) -> None:
        _check(0 <= wsam_gamma < 1, "wsam_gamma", wsam_gamma, "in [0, 1)")
        super().__init__(params, base_optimizer, **kwargs)
        self.wsam_gamma = wsam_gamma
        self.wsam_decouple = wsam_decouple

    @property
    def weight(self) -> float:
        return self.wsam_gamma / (1.0 - self.wsam_gamma)

    def _direction(self, vec: _Layout, probe: Probe | None) -> None:
        with self.timer.phase("update"):
            self._restore_theta0(vec)
            for g0, gk, theta0 in zip(
                vec.flats("g0"), vec.flats("grad"), vec.flats("theta0"), strict=True
            ):
                if not self.wsam_decouple:
                    gk.lerp_(g0, 1.0 - self.weight)
                    continue
                # θ0 is restored, so its buffer is free to hold the sharpness gk − g0.
                torch.sub(gk, g0, out=theta0)
                gk.copy_(g0)

    def _after_base_step(self, vec: _Layout) -> None:
        if not self.wsam_decouple:
            return
        # θ −= lr·w·(gk − g0), with each parameter group's own learning rate
        for group in self.param_groups:
            params = [p for p in group["params"] if vec.contains(p)]
            if params:
                sharpness = [vec.view_of("theta0", p) for p in params]
                torch._foreach_add_(params, sharpness, alpha=-group["lr"] * self.weight)
