"""GSAM (Zhuang et al. 2022): SAM's gradient minus α times g0's part orthogonal to it."""

from __future__ import annotations

from typing import Any

import torch

from trainables.optim._base import Probe, SharpnessAware, _check, _Vectors
from trainables.optim._functional import global_dot, global_norm


class GSAM(SharpnessAware):
    """Surrogate-gap guided SAM.

    d = gk − α·g0⊥ with g0⊥ = g0 − (cos θ·‖g0‖/‖gk‖)·gk, the component of
    the clean gradient orthogonal to the perturbed one (cos θ the cosine of
    g0 and gk), as in the authors' gradient decomposition.

    Args:
        gsam_alpha: α of the paper (0.1 in its CIFAR experiments' range).
        **kwargs: see `SharpnessAware`.
    """

    _extra_buffers = ("g0",)
    config_keys = (*SharpnessAware.config_keys, "gsam_alpha")

    def __init__(
        self,
        params: Any,
        base_optimizer: type[torch.optim.Optimizer],
        *,
        gsam_alpha: float = 0.1,
        **kwargs: Any,
    ) -> None:
        _check(gsam_alpha >= 0, "gsam_alpha", gsam_alpha, ">= 0")
        super().__init__(params, base_optimizer, **kwargs)
        self.gsam_alpha = gsam_alpha

    def _after_first_pass(self, vec: _Vectors) -> None:
        torch._foreach_copy_(vec.extra["g0"], vec.grads)

    def _direction(self, vec: _Vectors, probe: Probe | None) -> None:
        g0, gk = vec.extra["g0"], vec.grads
        with self.timer.phase("update"):
            torch._foreach_copy_(vec.params, vec.theta0)
            norm_0, norm_k = global_norm(g0), global_norm(gk)
            cos = global_dot(g0, gk) / (norm_0 * norm_k + self.eps)
            c = cos * norm_0 / (norm_k + self.eps)
            # d = gk − α(g0 − c·gk) = (1 + αc)·gk − α·g0, computed in place.
            torch._foreach_mul_(gk, 1.0 + self.gsam_alpha * c)
            torch._foreach_mul_(g0, self.gsam_alpha)
            torch._foreach_sub_(gk, g0)
