"""GSAM (Zhuang et al. 2022): SAM's gradient minus α times g0's part orthogonal to it."""

from __future__ import annotations

from typing import Any

import torch

from trainables.optim._base import Probe, SharpnessAware, _check, _Layout


class GSAM(SharpnessAware):
    """Surrogate-gap guided SAM.

    d = gk − α·g0⊥ with g0⊥ = g0 − (cos θ·‖g0‖/‖gk‖)·gk, the component of
    the clean gradient orthogonal to the perturbed one (cos θ the cosine of
    g0 and gk), as in the authors' gradient decomposition.

    Args:
        gsam_alpha: α of the paper (0.1 in its CIFAR experiments' range).
        **kwargs: see `SharpnessAware`.
    """

    _extra_buffers = ("g0",)  # filled with the clean gradient by the base class
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

    def _direction(self, vec: _Layout, probe: Probe | None) -> None:
        with self.timer.phase("update"):
            self._restore_theta0(vec)
            norm_0, norm_k = vec.norm("g0"), vec.norm("grad")
            cos = vec.dot("g0", "grad") / (norm_0 * norm_k + self.eps)
            c = cos * norm_0 / (norm_k + self.eps)
            # d = gk − α(g0 − c·gk) = (1 + αc)·gk − α·g0, computed in place.
            for g0, gk in zip(vec.flats("g0"), vec.flats("grad"), strict=True):
                gk.mul_(1.0 + self.gsam_alpha * c)
                gk.sub_(g0.mul_(self.gsam_alpha))
