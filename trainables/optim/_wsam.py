"""WSAM (Yue et al. 2023): weighted sharpness as a regularisation term."""

from __future__ import annotations

from typing import Any

import torch

from trainables.optim._base import Probe, SharpnessAware, _check, _Vectors


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

    _extra_buffers = ("g0",)
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

    def _after_first_pass(self, vec: _Vectors) -> None:
        torch._foreach_copy_(vec.extra["g0"], vec.grads)

    def _direction(self, vec: _Vectors, probe: Probe | None) -> None:
        g0, gk = vec.extra["g0"], vec.grads
        with self.timer.phase("update"):
            torch._foreach_copy_(vec.params, vec.theta0)
            if not self.wsam_decouple:
                torch._foreach_lerp_(gk, g0, 1.0 - self.weight)
                return
            # θ0 is restored, so its buffer is free to hold the sharpness gk − g0.
            sharpness = vec.theta0
            torch._foreach_copy_(sharpness, gk)
            torch._foreach_sub_(sharpness, g0)
            torch._foreach_copy_(gk, g0)

    def _after_base_step(self, vec: _Vectors) -> None:
        if not self.wsam_decouple:
            return
        by_param = dict(zip(map(id, vec.params), vec.theta0, strict=True))
        for group in self.param_groups:
            params = [p for p in group["params"] if id(p) in by_param]
            if params:
                torch._foreach_add_(
                    params, [by_param[id(p)] for p in params], alpha=-group["lr"] * self.weight
                )
