"""Shared fixtures for the optimizer-core tests: a tiny float64 BatchNorm model and batches."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F


@pytest.fixture(autouse=True, scope="package")
def one_torch_thread():
    """These models are tiny: a second intra-op thread only adds synchronisation, and on a
    loaded 2-core machine its spin-waits made this package's tests ten times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_model(seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Conv1d(1, 4, 3, padding=1),
        torch.nn.BatchNorm1d(4),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 6, 12),
        torch.nn.BatchNorm1d(12),
        torch.nn.ReLU(),
        torch.nn.Linear(12, 3),
    )
    return model.to(dtype).train()


def make_batches(n: int, seed: int = 1, dtype: torch.dtype = torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(16, 1, 6, generator=g, dtype=dtype), torch.randint(0, 3, (16,), generator=g))
        for _ in range(n)
    ]


def closures(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[Callable, Callable]:
    """(closure, probe) for one minibatch, as the training loop writes them."""

    def closure() -> torch.Tensor:
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    def probe() -> torch.Tensor:
        return F.cross_entropy(model(x), y)

    return closure, probe


@pytest.fixture
def twin_models() -> tuple[torch.nn.Module, torch.nn.Module]:
    a = make_model()
    return a, copy.deepcopy(a)


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module, atol: float) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        if sa[k].is_floating_point():
            torch.testing.assert_close(
                sa[k], sb[k], atol=atol, rtol=0, msg=lambda m, k=k: f"{k}: {m}"
            )
        else:
            assert torch.equal(sa[k], sb[k]), k
