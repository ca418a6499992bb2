"""Multi-tensor vector arithmetic over lists of parameter-shaped tensors.

Every function treats a list of tensors as one flattened vector, the way
`xsam-algorithm.md` defines θ, g and ‖·‖. Reductions return 0-d float64
tensors on the parameters' device so the caller never forces a host sync.
"""

from __future__ import annotations

import math

import torch

Tensors = list[torch.Tensor]

#: Below this sin ψ the two directions count as parallel (or anti-parallel).
SIN_PSI_MIN = 1e-8


def global_norm(tensors: Tensors) -> torch.Tensor:
    """‖x‖ over all tensors, as a 0-d float64 tensor."""
    if not tensors:
        return torch.zeros((), dtype=torch.float64)
    norms = torch._foreach_norm(tensors)
    return torch.linalg.vector_norm(torch.stack(norms).double())


def global_dot(xs: Tensors, ys: Tensors) -> torch.Tensor:
    """⟨x, y⟩ over all tensors, as a 0-d float64 tensor (no full-size temporaries)."""
    if not xs:
        return torch.zeros((), dtype=torch.float64)
    dots = [torch.dot(x.reshape(-1), y.reshape(-1)) for x, y in zip(xs, ys, strict=True)]
    return torch.stack(dots).double().sum()


def angle(cos_psi: torch.Tensor) -> torch.Tensor:
    """ψ = arccos(cos ψ) with the cosine clamped to [-1, 1] (never NaN)."""
    return torch.arccos(cos_psi.clamp(-1.0, 1.0))


def slerp_coefficients(psi: torch.Tensor, alpha: float | torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(c0, c1) with v(α) = c0·v0 + c1·v1 on the great circle through v0 and v1.

    v(α) = [sin((1-α)ψ)·v0 + sin(αψ)·v1] / sin ψ, and (v0 + v1)/2 when
    sin ψ < 1e-8, as `xsam-algorithm.md` step 4 prescribes.
    """
    sin_psi = torch.sin(psi)
    parallel = sin_psi < SIN_PSI_MIN
    safe = torch.where(parallel, torch.ones_like(sin_psi), sin_psi)
    c0 = torch.where(parallel, torch.full_like(psi, 0.5), torch.sin((1.0 - alpha) * psi) / safe)
    c1 = torch.where(parallel, torch.full_like(psi, 0.5), torch.sin(alpha * psi) / safe)
    return c0, c1


def alpha_grid(alpha_max: float, alpha_delta: float) -> list[float]:
    """The α search grid {0, δ, 2δ, …, a}, built as i·δ so it does not drift."""
    n = math.floor(alpha_max / alpha_delta + 1e-9)
    return [i * alpha_delta for i in range(n + 1)]
