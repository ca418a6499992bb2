"""Numerical safety: parallel and anti-parallel directions, zero and missing gradients, bf16."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.trainables.optim.conftest import closures, make_batches, make_model
from trainables.optim import GSAM, SAM, WSAM, XSAM
from trainables.optim._functional import SIN_PSI_MIN


def scripted_xsam(g0: torch.Tensor, gk: torch.Tensor, alpha: float, probe_losses=None):
    """One XSAM step (k = 1, lr = 1, plain SGD) whose gradients are g0 then gk: returns d."""
    theta = torch.zeros_like(g0, requires_grad=True)
    opt = XSAM([theta], torch.optim.SGD, rho=0.1, steps=1, alpha=alpha, lr=1.0)
    grads = iter([g0, gk])

    def closure():
        theta.grad = next(grads).clone()
        return torch.zeros(())

    probe = None
    if probe_losses is not None:
        losses = iter(probe_losses)

        def probe():
            return next(losses)

    opt.step(closure, probe=probe)
    return -theta.detach(), opt


def plane(dim: int, psi: float, n0: float, nk: float, seed: int):
    """Two vectors of norms n0 and nk at angle psi, in a random plane of R^dim."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, 2, generator=g, dtype=torch.float64))
    e1, e2 = q[:, 0], q[:, 1]
    return n0 * e1, nk * (math.cos(psi) * e1 + math.sin(psi) * e2)


angles = st.one_of(
    st.sampled_from([0.0, 1e-12, 1e-9, 1e-8, 1e-6, math.pi / 2, math.pi - 1e-9, math.pi]),
    st.floats(0.0, math.pi),
)


@settings(max_examples=150, deadline=None)
@given(
    psi=angles,
    alpha=st.floats(0.0, 2.0),
    dim=st.integers(2, 40),
    n0=st.sampled_from([0.0, 1e-30, 1e-6, 1.0, 1e6]),
    nk=st.sampled_from([0.0, 1e-30, 1e-6, 1.0, 1e6]),
    seed=st.integers(0, 2**16),
)
def test_direction_is_finite_and_has_the_length_of_gk(psi, alpha, dim, n0, nk, seed) -> None:
    g0, gk = plane(dim, psi, n0, nk, seed)
    d, _ = scripted_xsam(g0, gk, alpha)
    assert torch.isfinite(d).all()
    if min(n0, nk) < 1e-3:
        # the eps of 1e-12 in each normalisation bends the measured angle of (near) zero
        # gradients; the update must stay finite and of the order of ‖gk‖
        assert torch.linalg.vector_norm(d) <= 2 * nk * (1 + 1e-9)
        return
    sin_psi = math.sin(psi)
    norm = float(torch.linalg.vector_norm(d))
    if sin_psi >= 1e-6:
        # on the great circle: ‖d‖ = ‖gk‖ (up to the float rounding of nearly opposite vectors)
        assert norm == pytest.approx(nk, rel=1e-6)
    else:
        # the (v0 + v1)/2 fallback: at most ‖gk‖, never NaN
        assert norm <= nk * (1 + 1e-9)


@settings(max_examples=60, deadline=None)
@given(psi=angles, dim=st.integers(2, 20), seed=st.integers(0, 2**16))
def test_alpha_one_gives_gk_and_alpha_zero_gives_v0(psi, dim, seed) -> None:
    g0, gk = plane(dim, psi, 2.0, 3.0, seed)
    d1, _ = scripted_xsam(g0, gk, 1.0)
    if math.sin(psi) >= SIN_PSI_MIN:
        assert torch.equal(d1, gk)
        d0, _ = scripted_xsam(g0, gk, 0.0)
        torch.testing.assert_close(d0, 3.0 * g0 / 2.0, atol=1e-12, rtol=1e-9)


@settings(max_examples=60, deadline=None)
@given(losses=st.lists(st.sampled_from([0.0, 1.0, 2.0, float("nan")]), min_size=21, max_size=21))
def test_alpha_star_is_first_maximum(losses) -> None:
    g0, gk = plane(5, 1.0, 1.0, 1.0, 0)
    _, opt = scripted_xsam(g0, gk, 1.0, probe_losses=[torch.tensor(v) for v in losses])
    finite = [v for v in losses if not math.isnan(v)]
    search = opt.last_search
    if losses[0] != losses[0]:  # NaN at α = 0: the scan compares against NaN, keeping α = 0
        assert search.alpha == 0.0
        return
    best = max(finite)
    # strict ">" while scanning upward: ties and NaNs keep the earlier α
    expected = 0
    for i, v in enumerate(losses):
        if v > losses[expected]:
            expected = i
    assert search.alpha == pytest.approx(expected * 0.1)
    assert search.loss_best == losses[expected] == best


def test_constant_probe_curve_picks_alpha_zero() -> None:
    g0, gk = plane(5, 1.0, 1.0, 1.0, 0)
    _, opt = scripted_xsam(g0, gk, 1.0, probe_losses=[torch.tensor(2.0)] * 21)
    assert opt.alpha == 0.0


@pytest.mark.parametrize("concave", [False, True], ids=["parallel", "anti-parallel"])
def test_real_parallel_and_antiparallel_gradients(concave: bool) -> None:
    """A 1-D problem: θk − θ0 and gk are exactly parallel or opposite (ψ = 0 or π)."""
    theta = torch.tensor([0.9], dtype=torch.float64, requires_grad=True)
    opt = XSAM([theta], torch.optim.SGD, rho=0.5, steps=1, lr=0.1)

    def loss_fn():
        return -((theta - 1) ** 2).sum() if concave else ((theta - 1) ** 2).sum()

    def closure():
        loss = loss_fn()
        loss.backward()
        return loss

    with torch.no_grad():
        for _ in range(3):  # the concave case ascends past the maximum at θ = 1 each time
            theta.fill_(0.9)
            opt.step(closure, probe=lambda: loss_fn())
            assert torch.isfinite(theta).all()
            psi = opt.last_search.psi
            # eps = 1e-12 in the normalisations puts cos ψ a hair inside ±1: ψ is within 1e-5
            assert psi == pytest.approx(math.pi if concave else 0.0, abs=1e-5)
            assert all(math.isfinite(v) for v in opt.last_search.losses)


@pytest.mark.parametrize("cls", [SAM, XSAM, GSAM, WSAM])
def test_zero_gradient_moves_only_by_weight_decay(cls) -> None:
    theta = torch.ones(4, dtype=torch.float64, requires_grad=True)
    opt = cls([theta], torch.optim.SGD, rho=0.1, lr=0.1, weight_decay=0.5)

    def closure():
        loss = (theta * 0).sum()
        loss.backward()
        return loss

    step_kwargs = {"probe": lambda: (theta * 0).sum()} if cls in (SAM, XSAM) else {}
    opt.step(closure, **step_kwargs)
    assert torch.equal(theta.detach(), torch.full((4,), 1 - 0.1 * 0.5, dtype=torch.float64))


@pytest.mark.parametrize("cls", [SAM, XSAM, GSAM, WSAM])
def test_parameters_without_gradient_are_left_alone(cls) -> None:
    model = make_model()
    unused = torch.nn.Linear(3, 3).double()
    params = [*model.parameters(), *unused.parameters()]
    before = [p.detach().clone() for p in unused.parameters()]
    opt = cls(params, torch.optim.SGD, rho=0.1, steps=2, model=model, lr=0.1, momentum=0.9)
    for x, y in make_batches(3):
        c, p = closures(model, x, y)
        opt.step(c, **({"probe": p} if cls in (SAM, XSAM) else {}))
    assert all(torch.equal(a, b) for a, b in zip(unused.parameters(), before, strict=True))
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("cls", [SAM, XSAM, GSAM, WSAM])
def test_bf16_autocast(cls) -> None:
    model = make_model(dtype=torch.float32)
    opt = cls(
        model.parameters(), torch.optim.SGD, rho=0.15, steps=2, model=model, lr=0.05, momentum=0.9
    )
    losses = []
    x, y = make_batches(1, dtype=torch.float32)[0]

    def closure():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    def probe():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return F.cross_entropy(model(x), y)

    for i in range(20):
        kw = {"probe": probe} if cls in (SAM, XSAM) and i % 5 == 0 else {}
        losses.append(float(opt.step(closure, **kw)))
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]
    assert all(p.dtype == torch.float32 for p in model.parameters())
