"""Vector arithmetic over flat buffers, and the slerp coefficients, on host or device scalars.

Every vector of a step (θ0, the gradient, the direction, g0) is one flat
buffer per device and dtype, so a norm or a dot is one kernel per buffer.
Scalars come back as Python floats when every buffer is on the CPU, where
`.item()` costs no synchronisation and float arithmetic is cheaper than a
0-d tensor op, and as 0-d float64 tensors on the device otherwise (CUDA),
where `.item()` would stall the host on every step.
"""

from __future__ import annotations

import math

import torch

Tensors = list[torch.Tensor]
#: a host float (CPU runs) or a 0-d float64 tensor on the parameters' device
Scalar = float | torch.Tensor

#: Below this sin ψ the two directions count as parallel (or anti-parallel).
SIN_PSI_MIN = 1e-8

#: reductions of half-precision buffers accumulate and return in float32
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def flat_norm(flats: Tensors, host: bool) -> Scalar:
    """‖x‖ over the flat buffers `flats` (one per device and dtype)."""
    norms = [
        torch.linalg.vector_norm(f, dtype=torch.float32 if f.dtype in _LOW_PRECISION else None)
        for f in flats
    ]
    if host:
        return math.sqrt(sum(n.item() ** 2 for n in norms)) if len(norms) != 1 else norms[0].item()
    if not norms:
        return torch.zeros((), dtype=torch.float64)
    device = norms[0].device
    return torch.linalg.vector_norm(torch.stack([n.to(device, torch.float64) for n in norms]))


def flat_dot(xs: Tensors, ys: Tensors, host: bool) -> Scalar:
    """⟨x, y⟩ over pairs of flat buffers."""
    dots = [
        torch.dot(x.float(), y.float()) if x.dtype in _LOW_PRECISION else torch.dot(x, y)
        for x, y in zip(xs, ys, strict=True)
    ]
    if host:
        return sum(d.item() for d in dots)
    if not dots:
        return torch.zeros((), dtype=torch.float64)
    device = dots[0].device
    return torch.stack([d.to(device, torch.float64) for d in dots]).sum()


def angle(cos_psi: Scalar) -> Scalar:
    """ψ = arccos(cos ψ) with the cosine clamped to [-1, 1] (NaN stays NaN)."""
    if isinstance(cos_psi, torch.Tensor):
        return torch.arccos(cos_psi.clamp(-1.0, 1.0))
    if math.isnan(cos_psi):
        return math.nan
    return math.acos(max(-1.0, min(1.0, cos_psi)))


def slerp_coefficients(psi: Scalar, alpha: float) -> tuple[Scalar, Scalar]:
    """(c0, c1) with v(α) = c0·v0 + c1·v1 on the great circle through v0 and v1.

    v(α) = [sin((1-α)ψ)·v0 + sin(αψ)·v1] / sin ψ, and (v0 + v1)/2 when
    sin ψ < 1e-8, as `xsam-algorithm.md` step 4 prescribes.
    """
    if not isinstance(psi, torch.Tensor):
        sin_psi = math.sin(psi)
        if sin_psi < SIN_PSI_MIN:
            return 0.5, 0.5
        return math.sin((1.0 - alpha) * psi) / sin_psi, math.sin(alpha * psi) / sin_psi
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
