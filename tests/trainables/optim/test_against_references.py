"""The core against independent implementations: pytorch_optimizer and naive float64 code."""

from __future__ import annotations

import copy

import pytest
import torch
from pytorch_optimizer import SAM as OracleSAM
from pytorch_optimizer import WSAM as OracleWSAM
from pytorch_optimizer.optimizer import sam as oracle_sam_module

from tests.trainables.optim.conftest import assert_same_state, closures, make_batches, make_model
from tests.trainables.optim.naive import NaiveGSAM, NaiveXSAM
from trainables.optim import GSAM, SAM, WSAM, XSAM, frozen_running_stats

SGD_KW = dict(lr=0.05, momentum=0.9, weight_decay=1e-3)
N_STEPS = 50


@pytest.fixture
def float64_oracle_norm(monkeypatch: pytest.MonkeyPatch) -> None:
    """pytorch_optimizer sums squared norms in float32; make it float64 like the run itself."""

    def norm_sq(param_groups, device=None, *, weight_adaptive=False):
        total = torch.zeros(1, dtype=torch.float64)
        for group in param_groups:
            adaptive = weight_adaptive and group.get("adaptive", False)
            for p in group["params"]:
                if p.grad is not None:
                    g = p.grad * p.abs() if adaptive else p.grad
                    total += (g.double() ** 2).sum()
        return total

    monkeypatch.setattr(oracle_sam_module, "get_global_gradient_norm", norm_sq)


def oracle_step(opt, model, closure) -> None:
    """pytorch_optimizer's two-step protocol with our BatchNorm treatment on the second pass."""
    opt.zero_grad()
    with torch.enable_grad():
        closure()
    opt.first_step(zero_grad=True)
    with torch.enable_grad(), frozen_running_stats(model):
        closure()
    opt.second_step(zero_grad=True)


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_matches_pytorch_optimizer(adaptive: bool, float64_oracle_norm: None) -> None:
    ours_model = make_model()
    ref_model = copy.deepcopy(ours_model)
    # pytorch_optimizer's ASAM scales by |θ| (η = 0); ours by |θ| + η.
    ours = SAM(
        ours_model.parameters(),
        torch.optim.SGD,
        rho=0.1,
        adaptive=adaptive,
        eta=0.0,
        model=ours_model,
        **SGD_KW,
    )
    ref = OracleSAM(
        ref_model.parameters(), torch.optim.SGD, rho=0.1, adaptive=adaptive, foreach=False, **SGD_KW
    )
    for x, y in make_batches(N_STEPS):
        ours.step(closures(ours_model, x, y)[0])
        oracle_step(ref, ref_model, closures(ref_model, x, y)[0])
    assert_same_state(ours_model, ref_model, atol=1e-10)
    # the run moved: the comparison is not between two untouched models
    assert not torch.allclose(ours_model[-1].weight, make_model()[-1].weight, atol=1e-3)


@pytest.mark.parametrize("decouple", [True, False])
def test_wsam_matches_pytorch_optimizer(decouple: bool, float64_oracle_norm: None) -> None:
    ours_model = make_model()
    ref_model = copy.deepcopy(ours_model)
    ours = WSAM(
        ours_model.parameters(),
        torch.optim.SGD,
        rho=0.1,
        wsam_gamma=0.8,
        wsam_decouple=decouple,
        model=ours_model,
        **SGD_KW,
    )
    ref = OracleWSAM(
        ref_model,
        ref_model.parameters(),
        torch.optim.SGD,
        rho=0.1,
        gamma=0.8,
        decouple=decouple,
        foreach=False,
        **SGD_KW,
    )
    for x, y in make_batches(N_STEPS):
        ours.step(closures(ours_model, x, y)[0])
        oracle_step(ref, ref_model, closures(ref_model, x, y)[0])
    assert_same_state(ours_model, ref_model, atol=1e-10)


@pytest.mark.parametrize("steps", [1, 2, 5])
def test_xsam_matches_naive_implementation(steps: int) -> None:
    ours_model = make_model()
    ref_model = copy.deepcopy(ours_model)
    hp = dict(rho=0.15, steps=steps, rho_max=0.3, alpha_max=2.0, alpha_delta=0.1, alpha=1.0)
    ours = XSAM(ours_model.parameters(), torch.optim.SGD, model=ours_model, **hp, **SGD_KW)
    ref = NaiveXSAM(ref_model, list(ref_model.parameters()), **hp, **SGD_KW)
    alphas_seen = set()
    for i, (x, y) in enumerate(make_batches(N_STEPS)):
        refresh = i % 7 == 0
        c, p = closures(ours_model, x, y)
        ours.step(c, probe=p if refresh else None)
        rc, rp = closures(ref_model, x, y)
        ref.step(rc, probe=rp if refresh else None)
        if refresh:
            search = ours.last_search
            ref_alpha, ref_losses = ref.history[-1]
            assert search.alpha == ref_alpha
            torch.testing.assert_close(
                torch.tensor(search.losses), torch.tensor(ref_losses), atol=1e-10, rtol=0
            )
            # α* is the brute-force argmax over the grid, first maximum on ties
            brute = search.alphas[search.losses.index(max(search.losses))]
            assert search.alpha == brute
            assert search.loss_best == max(search.losses)
            assert search.loss_v0 == search.losses[0]
            assert search.loss_v1 == search.losses[10]
            alphas_seen.add(search.alpha)
        assert ours.alpha == ref.alpha
    assert_same_state(ours_model, ref_model, atol=1e-10)
    assert alphas_seen != {1.0}, "the run never left SAM's direction: the test proves nothing"


@pytest.mark.parametrize("steps", [1, 3])
def test_gsam_matches_naive_implementation(steps: int) -> None:
    ours_model = make_model()
    ref_model = copy.deepcopy(ours_model)
    ours = GSAM(
        ours_model.parameters(),
        torch.optim.SGD,
        rho=0.1,
        steps=steps,
        gsam_alpha=0.3,
        model=ours_model,
        **SGD_KW,
    )
    ref = NaiveGSAM(
        ref_model, list(ref_model.parameters()), rho=0.1, steps=steps, gsam_alpha=0.3, **SGD_KW
    )
    for x, y in make_batches(N_STEPS):
        ours.step(closures(ours_model, x, y)[0])
        ref.step(closures(ref_model, x, y)[0])
    assert_same_state(ours_model, ref_model, atol=1e-10)


def test_xsam_with_alpha_one_is_sam_bit_for_bit() -> None:
    for steps in (1, 3):
        a, b = make_model(), make_model()
        xsam = XSAM(
            a.parameters(), torch.optim.SGD, rho=0.15, steps=steps, alpha=1.0, model=a, **SGD_KW
        )
        sam = SAM(b.parameters(), torch.optim.SGD, rho=0.15, steps=steps, model=b, **SGD_KW)
        for x, y in make_batches(20):
            xsam.step(closures(a, x, y)[0])
            sam.step(closures(b, x, y)[0])
        assert_same_state(a, b, atol=0.0)


def test_one_step_sam_equals_multistep_sam_with_k1() -> None:
    """k-step SAM with k = 1 is Foret et al.'s SAM: checked against a naive XSAM fixed at α = 1."""
    ours_model = make_model()
    ref_model = copy.deepcopy(ours_model)
    ours = SAM(
        ours_model.parameters(), torch.optim.SGD, rho=0.15, steps=1, model=ours_model, **SGD_KW
    )
    ref = NaiveXSAM(
        ref_model,
        list(ref_model.parameters()),
        rho=0.15,
        steps=1,
        rho_max=0.3,
        alpha_max=2.0,
        alpha_delta=0.1,
        alpha=1.0,
        **SGD_KW,
    )
    for x, y in make_batches(N_STEPS):
        ours.step(closures(ours_model, x, y)[0])
        ref.step(closures(ref_model, x, y)[0])
    assert_same_state(ours_model, ref_model, atol=1e-10)
