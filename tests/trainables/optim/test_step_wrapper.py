"""PyTorch's `step` wrapper (step hooks, the profiler's label) around the sharpness-aware
optimizers: skipped when it has nothing to do, entered whenever it has."""

from __future__ import annotations

import pytest
import torch

from tests.trainables.optim.conftest import closures, make_batches, make_model
from trainables.optim import GSAM, SAM, WSAM, XSAM, SharpnessAware

SGD_KW = dict(lr=0.05, momentum=0.9, weight_decay=1e-3)
ALL = [SAM, XSAM, GSAM, WSAM]
IDS = ["sam", "xsam", "gsam", "wsam"]


def one_step(opt: SharpnessAware, model: torch.nn.Module) -> None:
    (x, y), *_ = make_batches(1)
    closure, _ = closures(model, x, y)
    opt.step(closure)


@pytest.mark.parametrize("cls", ALL, ids=IDS)
def test_step_hooks_of_the_optimizer_run_around_the_step(cls: type[SharpnessAware]) -> None:
    model = make_model()
    opt = cls(model.parameters(), torch.optim.SGD, rho=0.1, model=model, **SGD_KW)
    calls: list[tuple[str, int]] = []
    pre = opt.register_step_pre_hook(lambda o, a, k: calls.append(("pre", o.n_steps)))
    post = opt.register_step_post_hook(lambda o, a, k: calls.append(("post", o.n_steps)))
    one_step(opt, model)
    assert calls == [("pre", 0), ("post", 1)]
    pre.remove()
    post.remove()
    one_step(opt, model)
    assert calls == [("pre", 0), ("post", 1)]  # removed: not called again


def test_global_step_hooks_run_around_the_step() -> None:
    from torch.optim.optimizer import (
        register_optimizer_step_post_hook,
        register_optimizer_step_pre_hook,
    )

    model = make_model()
    opt = XSAM(model.parameters(), torch.optim.SGD, rho=0.1, model=model, **SGD_KW)
    seen: list[tuple[str, str]] = []
    handles = [
        register_optimizer_step_pre_hook(lambda o, a, k: seen.append(("pre", type(o).__name__))),
        register_optimizer_step_post_hook(lambda o, a, k: seen.append(("post", type(o).__name__))),
    ]
    try:
        one_step(opt, model)
    finally:
        for h in handles:
            h.remove()
    # the flat SGD path takes the descent step itself, so only XSAM's own step is seen
    assert seen == [("pre", "XSAM"), ("post", "XSAM")]


def test_a_pre_hook_may_replace_the_arguments() -> None:
    model = make_model()
    opt = XSAM(model.parameters(), torch.optim.SGD, rho=0.1, model=model, **SGD_KW)
    (x, y), *_ = make_batches(1)
    closure, probe = closures(model, x, y)
    opt.register_step_pre_hook(lambda o, args, kwargs: (args, {**kwargs, "probe": probe}))
    opt.step(closure)
    assert opt.last_search is not None  # the probe the hook added ran the α search


def test_the_profiler_sees_the_step_label() -> None:
    model = make_model()
    opt = XSAM(model.parameters(), torch.optim.SGD, rho=0.1, model=model, **SGD_KW)
    one_step(opt, model)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        one_step(opt, model)
    names = {e.name for e in prof.events()}
    assert "Optimizer.step#XSAM.step" in names
