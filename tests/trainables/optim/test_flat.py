"""The flat-buffer core: gradients as views of one buffer, and what must survive around it."""

from __future__ import annotations

import copy

import pytest
import torch

from tests.trainables.optim.conftest import assert_same_state, closures, make_batches, make_model
from trainables.optim import GSAM, SAM, WSAM, XSAM, SharpnessAware, _base

SGD_KW = dict(lr=0.05, momentum=0.9, weight_decay=1e-3)
ALL = [(SAM, {}), (XSAM, {}), (XSAM, {"adaptive": True}), (GSAM, {}), (WSAM, {})]
IDS = ["sam", "xsam", "xsam+asam", "gsam", "wsam"]


def run(opt: SharpnessAware, model: torch.nn.Module, batches, between=None) -> None:
    for i, (x, y) in enumerate(batches):
        c, p = closures(model, x, y)
        opt.step(c, **({"probe": p} if i % 3 == 0 and isinstance(opt, SAM) else {}))
        if between is not None:
            between()


def test_gradients_are_views_of_one_flat_buffer() -> None:
    model = make_model()
    opt = XSAM(model.parameters(), torch.optim.SGD, rho=0.1, model=model, **SGD_KW)
    run(opt, model, make_batches(2))
    (group,) = opt._layout.groups
    flat = group.flat["grad"]
    assert flat.dim() == 1 and flat.numel() == sum(p.numel() for p in model.parameters())
    for p in model.parameters():
        assert p.grad.untyped_storage().data_ptr() == flat.untyped_storage().data_ptr()
    ptrs = [p.grad.data_ptr() for p in model.parameters()]
    run(opt, model, make_batches(2, seed=3))  # later steps accumulate into the same views
    assert [p.grad.data_ptr() for p in model.parameters()] == ptrs


@pytest.mark.parametrize(("cls", "kw"), ALL, ids=IDS)
def test_gradients_replaced_between_steps_change_nothing(cls, kw) -> None:
    """zero_grad(set_to_none=True) between steps: same trajectory, bit for bit."""
    a = make_model()
    b = copy.deepcopy(a)
    opt_a = cls(a.parameters(), torch.optim.SGD, rho=0.1, steps=2, model=a, **kw, **SGD_KW)
    opt_b = cls(b.parameters(), torch.optim.SGD, rho=0.1, steps=2, model=b, **kw, **SGD_KW)
    batches = make_batches(6)
    run(opt_a, a, batches)
    run(opt_b, b, batches, between=lambda: opt_b.zero_grad(set_to_none=True))
    assert_same_state(a, b, atol=0.0)


@pytest.mark.parametrize(("cls", "kw"), ALL, ids=IDS)
def test_device_scalars_equal_host_scalars(cls, kw, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA code path (0-d tensor scalars), run on the CPU, agrees with host floats."""
    a = make_model()
    b = copy.deepcopy(a)
    opt_a = cls(a.parameters(), torch.optim.SGD, rho=0.1, steps=2, model=a, **kw, **SGD_KW)
    opt_b = cls(b.parameters(), torch.optim.SGD, rho=0.1, steps=2, model=b, **kw, **SGD_KW)
    batches = make_batches(8)
    run(opt_a, a, batches)
    monkeypatch.setattr(_base, "_host_scalars", lambda params: False)
    run(opt_b, b, batches)
    assert not opt_b._layout.host and opt_a._layout.host
    assert_same_state(a, b, atol=1e-12)
    if cls is XSAM:
        assert opt_a.alpha == opt_b.alpha
        assert opt_a.last_search.losses == pytest.approx(opt_b.last_search.losses, abs=1e-12)


def test_model_to_another_dtype_mid_run_lays_out_afresh() -> None:
    """After model.to(float32) the step equals a fresh optimizer loaded from the state dict."""
    a = make_model()
    opt_a = XSAM(a.parameters(), torch.optim.SGD, rho=0.1, steps=2, model=a, **SGD_KW)
    run(opt_a, a, make_batches(3))
    a.float()
    for state in opt_a.base_optimizer.state.values():
        state["momentum_buffer"] = state["momentum_buffer"].float()
    b = copy.deepcopy(a)
    opt_b = XSAM(b.parameters(), torch.optim.SGD, rho=0.1, steps=2, model=b, **SGD_KW)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))  # .to() would share buffers
    batches = [(x.float(), y) for x, y in make_batches(4, seed=9)]
    run(opt_a, a, batches)
    run(opt_b, b, batches)
    assert all(p.dtype == torch.float32 for p in a.parameters())
    assert opt_a._layout.groups[0].flat["grad"].dtype == torch.float32
    assert_same_state(a, b, atol=0.0)


def test_param_groups_frozen_and_unused_parameters_against_hand_written_sam() -> None:
    """k = 1 SAM, plain SGD, two groups with their own lr, one frozen and one unused parameter."""
    torch.manual_seed(0)
    w1 = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    w2 = torch.randn(3, dtype=torch.float64, requires_grad=True)
    frozen = torch.randn(5, dtype=torch.float64, requires_grad=False)
    unused = torch.randn(4, dtype=torch.float64, requires_grad=True)
    x = torch.randn(8, 5, dtype=torch.float64)
    lrs, rho = (0.1, 0.02), 0.3

    def loss_at(v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
        return (torch.tanh((x + frozen) @ v1) @ v2).pow(2).mean()

    opt = SAM(
        [{"params": [w1, frozen], "lr": lrs[0]}, {"params": [w2, unused], "lr": lrs[1]}],
        torch.optim.SGD,
        rho=rho,
        lr=1.0,
    )
    ref = [w1.detach().clone(), w2.detach().clone()]
    before = (frozen.clone(), unused.detach().clone())
    for _ in range(3):

        def closure() -> torch.Tensor:
            loss = loss_at(w1, w2)
            loss.backward()
            return loss

        opt.step(closure)
        v = [r.clone().requires_grad_(True) for r in ref]
        g = torch.autograd.grad(loss_at(*v), v)
        norm = torch.sqrt(sum((gi**2).sum() for gi in g))
        v = [
            (r + rho * gi / (norm + 1e-12)).requires_grad_(True)
            for r, gi in zip(ref, g, strict=True)
        ]
        gk = torch.autograd.grad(loss_at(*v), v)
        ref = [r - lr * gi for r, gi, lr in zip(ref, gk, lrs, strict=True)]
        torch.testing.assert_close(w1.detach(), ref[0], atol=1e-12, rtol=0)
        torch.testing.assert_close(w2.detach(), ref[1], atol=1e-12, rtol=0)
    assert torch.equal(frozen, before[0]) and torch.equal(unused.detach(), before[1])
    assert unused.grad is None


def test_parameters_are_views_of_one_flat_theta_buffer() -> None:
    """After the first step θ is one buffer: the step's vector arithmetic is one kernel."""
    model = make_model()
    opt = XSAM(model.parameters(), torch.optim.SGD, rho=0.1, model=model, **SGD_KW)
    run(opt, model, make_batches(2))
    (group,) = opt._layout.groups
    theta = group.flat["theta"]
    assert theta.numel() == sum(p.numel() for p in model.parameters())
    for p, view in zip(model.parameters(), group.views["theta"], strict=True):
        assert p.untyped_storage().data_ptr() == theta.untyped_storage().data_ptr()
        assert p.data_ptr() == view.data_ptr() and isinstance(p, torch.nn.Parameter)
    for buf in opt.base_optimizer.state.values():  # SGD's momentum: views of one buffer too
        assert buf["momentum_buffer"].untyped_storage().data_ptr() == (
            group.flat["momentum"].untyped_storage().data_ptr()
        )


SGD_SETTINGS = [
    dict(lr=0.05, momentum=0.9, weight_decay=1e-3),
    dict(lr=0.05, momentum=0.9, weight_decay=1e-3, nesterov=True),
    dict(lr=0.05, momentum=0.5, dampening=0.3),
    dict(lr=0.1),
    dict(lr=0.1, weight_decay=5e-4),
]


@pytest.mark.parametrize(
    "kw", SGD_SETTINGS, ids=["momentum", "nesterov", "dampening", "plain", "wd"]
)
@pytest.mark.parametrize("foreach", [True, False], ids=["foreach", "for-loop"])
@pytest.mark.parametrize(("cls", "extra"), ALL, ids=IDS)
def test_flat_sgd_equals_sgds_own_step(cls, extra, foreach: bool, kw, monkeypatch) -> None:
    """The flat SGD update against `torch.optim.SGD.step` itself, both of its code paths."""
    a = make_model()
    b = copy.deepcopy(a)
    opt_a = cls(a.parameters(), torch.optim.SGD, rho=0.1, steps=2, model=a, **extra, **kw)
    opt_b = cls(
        b.parameters(), torch.optim.SGD, rho=0.1, steps=2, model=b, foreach=foreach, **extra, **kw
    )
    own_steps = []
    real_step = opt_b.base_optimizer.step
    monkeypatch.setattr(opt_b.base_optimizer, "step", lambda: own_steps.append(real_step()))
    monkeypatch.setattr(_base, "_flat_sgd_step", lambda base, vec: False)
    batches = make_batches(6)
    run(opt_b, b, batches)
    monkeypatch.undo()
    flat_steps = []
    monkeypatch.setattr(opt_a.base_optimizer, "step", lambda: flat_steps.append(1))
    run(opt_a, a, batches)
    assert len(own_steps) == 6 and not flat_steps  # each took the path it was meant to
    assert_same_state(a, b, atol=1e-15)
    state_a, state_b = opt_a.base_optimizer.state, opt_b.base_optimizer.state
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        if "momentum_buffer" in state_b[pb]:
            torch.testing.assert_close(
                state_a[pa]["momentum_buffer"], state_b[pb]["momentum_buffer"], atol=1e-15, rtol=0
            )


def test_flat_sgd_resumes_from_a_loaded_state_and_from_sgds_own_step(monkeypatch) -> None:
    """A state dict saved mid-run, loaded into a fresh optimizer: the same trajectory, and a
    step taken by SGD itself in between (momentum buffers outside the flat buffer) is adopted."""
    a = make_model()
    b = copy.deepcopy(a)
    opt_a = XSAM(a.parameters(), torch.optim.SGD, rho=0.1, steps=2, model=a, **SGD_KW)
    batches = make_batches(6)
    run(opt_a, a, batches[:3])
    saved = copy.deepcopy(opt_a.state_dict())
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    opt_b = XSAM(b.parameters(), torch.optim.SGD, rho=0.1, steps=2, model=b, **SGD_KW)
    opt_b.load_state_dict(saved)
    run(opt_b, b, batches[3:4])
    with monkeypatch.context() as patch:  # one step by SGD's own code, then flat again
        patch.setattr(_base, "_flat_sgd_step", lambda base, vec: False)
        run(opt_a, a, batches[3:4])  # (`run` searches α on its first batch: same calls)
    run(opt_a, a, batches[4:5])
    with monkeypatch.context() as patch:
        patch.setattr(_base, "_flat_sgd_step", lambda base, vec: False)
        run(opt_b, b, batches[4:5])
    run(opt_a, a, batches[5:])
    run(opt_b, b, batches[5:])
    assert_same_state(a, b, atol=1e-15)


def test_several_param_groups_take_sgds_own_step() -> None:
    model = make_model()
    decay = [p for p in model.parameters() if p.dim() > 1]
    rest = [p for p in model.parameters() if p.dim() <= 1]
    opt = SAM(
        [{"params": decay}, {"params": rest, "weight_decay": 0.0}],
        torch.optim.SGD,
        rho=0.1,
        **SGD_KW,
    )
    calls = []
    real_step = opt.base_optimizer.step
    opt.base_optimizer.step = lambda: calls.append(real_step())
    run(opt, model, make_batches(2))
    assert len(calls) == 2


def test_eps_must_be_positive() -> None:
    with pytest.raises(ValueError, match=r"^eps=0.0 is not allowed; expected > 0$"):
        SAM(make_model().parameters(), torch.optim.SGD, lr=0.1, eps=0.0)
