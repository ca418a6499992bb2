"""Behaviour of the core that the references do not cover: BatchNorm, memory, resume, timers."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from tests.trainables.optim.conftest import assert_same_state, closures, make_batches, make_model
from trainables.optim import GSAM, SAM, WSAM, XSAM, PhaseTimer, SharpnessAware

SGD_KW = dict(lr=0.05, momentum=0.9, weight_decay=1e-3)
ALL = [
    (SAM, {}),
    (SAM, {"adaptive": True}),
    (XSAM, {}),
    (XSAM, {"adaptive": True}),
    (GSAM, {}),
    (WSAM, {}),
]
IDS = ["sam", "asam", "xsam", "xsam+asam", "gsam", "wsam"]


def build(cls, model, steps=2, **kw) -> SharpnessAware:
    return cls(
        model.parameters(), torch.optim.SGD, rho=0.15, steps=steps, model=model, **kw, **SGD_KW
    )


@pytest.mark.parametrize(("cls", "kw"), ALL, ids=IDS)
def test_batchnorm_statistics_are_those_of_the_clean_pass(cls, kw) -> None:
    model = make_model()
    clean = copy.deepcopy(model)
    opt = build(cls, model, steps=3, **kw)
    for x, y in make_batches(3):
        # what the running statistics must be: one train-mode pass at θ0
        clean.load_state_dict(model.state_dict())
        with torch.no_grad():
            clean(x)
        c, p = closures(model, x, y)
        opt.step(c, probe=p)
        for name, buf in model.named_buffers():
            assert torch.equal(buf, dict(clean.named_buffers())[name]), name
    assert int(model[1].num_batches_tracked) == 3


@pytest.mark.parametrize(("cls", "kw"), ALL, ids=IDS)
def test_theta0_is_restored_in_place(cls, kw) -> None:
    """With a zero step the parameters come back bit for bit, and after the first step
    (which moves them into the flat θ buffer) they stay in the same storage."""
    model = make_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = cls(model.parameters(), torch.optim.SGD, rho=0.5, steps=3, model=model, lr=0.0, **kw)
    ptrs: dict[str, int] = {}
    for i, (x, y) in enumerate(make_batches(4)):
        c, p = closures(model, x, y)
        opt.step(c, probe=p)
        if i == 0:
            ptrs = {n: p.data_ptr() for n, p in model.named_parameters()}
    for n, p in model.named_parameters():
        assert p.data_ptr() == ptrs[n]
        assert torch.equal(p, before[n]), n


@pytest.mark.parametrize(
    ("cls", "kw", "n_buffers"),
    [(SAM, {}, 1), (XSAM, {}, 2), (GSAM, {}, 2), (WSAM, {}, 2)],
    ids=["sam", "xsam", "gsam", "wsam"],
)
def test_parameter_sized_buffers(cls, kw, n_buffers: int) -> None:
    model = make_model()
    opt = build(cls, model, **kw)
    for x, y in make_batches(3):
        opt.step(closures(model, x, y)[0])
    n_param = sum(p.numel() for p in model.parameters())
    n_kept = sum(b.numel() for store in opt._buffers.values() for b in store.values())
    assert n_kept == n_buffers * n_param
    # nothing parameter-sized hides in the optimizer's own state beyond the base optimizer's
    assert not any(opt.state.values())


def test_sam_diagnostics_leave_the_update_unchanged() -> None:
    a, b = make_model(), make_model()
    probed, plain = build(SAM, a), build(SAM, b)
    for i, (x, y) in enumerate(make_batches(12)):
        c, p = closures(a, x, y)
        probed.step(c, probe=p if i % 3 == 0 else None)
        plain.step(closures(b, x, y)[0])
    assert_same_state(a, b, atol=0.0)
    assert probed.last_search is not None and len(probed.last_search.losses) == 21


@pytest.mark.parametrize(("cls", "kw"), ALL, ids=IDS)
def test_resume_from_state_dict_equals_uninterrupted(cls, kw) -> None:
    batches = make_batches(20)
    ref_model = make_model()
    ref = build(cls, ref_model, **kw)
    for i, (x, y) in enumerate(batches):
        c, p = closures(ref_model, x, y)
        ref.step(c, probe=p if i % 4 == 0 else None)

    model = make_model()
    opt = build(cls, model, **kw)
    for i, (x, y) in enumerate(batches[:10]):
        c, p = closures(model, x, y)
        opt.step(c, probe=p if i % 4 == 0 else None)
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())

    model2 = make_model(seed=5)  # different initial weights: everything must come from the state
    model2.load_state_dict(saved_model)
    opt2 = build(cls, model2, alpha=0.3, **kw) if cls is XSAM else build(cls, model2, **kw)
    opt2.load_state_dict(saved_opt)
    for i, (x, y) in enumerate(batches[10:], start=10):
        c, p = closures(model2, x, y)
        opt2.step(c, probe=p if i % 4 == 0 else None)
    assert_same_state(model2, ref_model, atol=0.0)
    assert opt2.n_steps == ref.n_steps == 20


def test_xsam_resume_keeps_alpha_between_refreshes() -> None:
    model = make_model()
    opt = build(XSAM, model)
    x, y = make_batches(1)[0]
    c, p = closures(model, x, y)
    opt.step(c, probe=p)
    state = opt.state_dict()
    opt2 = build(XSAM, make_model(), alpha=0.25)
    opt2.load_state_dict(state)
    assert opt2.alpha == opt.alpha == opt.last_search.alpha


def test_phase_timer_sees_every_phase_and_counts_passes() -> None:
    model = make_model()
    opt = build(XSAM, model, steps=3)
    opt.timer = PhaseTimer()
    n_closure = n_probe = 0
    x, y = make_batches(1)[0]

    def closure():
        nonlocal n_closure
        n_closure += 1
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    def probe():
        nonlocal n_probe
        n_probe += 1
        return F.cross_entropy(model(x), y)

    opt.step(closure, probe=probe)
    assert (n_closure, n_probe) == (4, 21)
    assert set(opt.timer.seconds) == {"ascent", "descent", "probe", "update"}
    assert all(t > 0 for t in opt.timer.seconds.values())
    opt.timer.reset()
    opt.step(closure)  # no probe: no probe time
    assert "probe" not in opt.timer.seconds


def test_any_base_optimizer_adamw() -> None:
    model = make_model()
    opt = XSAM(
        model.parameters(), torch.optim.AdamW, rho=0.05, model=model, lr=1e-2, weight_decay=0.01
    )
    x, y = make_batches(1)[0]
    losses = []
    for i in range(30):
        c, p = closures(model, x, y)
        losses.append(float(opt.step(c, probe=p if i % 10 == 0 else None)))
    assert losses[-1] < 0.5 * losses[0]
    assert "exp_avg" in next(iter(opt.base_optimizer.state.values()))


def test_lr_scheduler_drives_the_shared_param_groups() -> None:
    model = make_model()
    opt = build(SAM, model)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=4)
    x, y = make_batches(1)[0]
    for _ in range(2):
        opt.step(closures(model, x, y)[0])
        sched.step()
    assert opt.base_optimizer.param_groups[0]["lr"] == pytest.approx(0.025)


def test_grad_scaler_gives_the_unscaled_update_and_skips_overflow() -> None:
    a, b = make_model(dtype=torch.float32), make_model(dtype=torch.float32)
    scaled, plain = build(XSAM, a), build(XSAM, b)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    x, y = (
        t.float() if t.is_floating_point() else t for t in make_batches(1, dtype=torch.float32)[0]
    )

    def scaled_closure():
        loss = F.cross_entropy(a(x), y)
        scaler.scale(loss).backward()
        return loss

    for _ in range(3):
        scaled.step(scaled_closure, grad_scaler=scaler)
        scaler.update()
        plain.step(closures(b, x, y)[0])
    assert_same_state(a, b, atol=1e-5)

    before = [p.detach().clone() for p in a.parameters()]

    def overflow():
        loss = F.cross_entropy(a(x), y) * float("inf")
        scaler.scale(loss).backward()
        return loss

    scale = scaler.get_scale()
    scaled.step(overflow, grad_scaler=scaler)
    scaler.update()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), before, strict=True))
    assert scaler.get_scale() == scale / 2
