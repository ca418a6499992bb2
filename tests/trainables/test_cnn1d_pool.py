"""CNN1D skips its adaptive pool when the feature map already has the pooled length."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from trainables.models import CNN1D, build_model


def _pooled_forward(model: CNN1D, x: torch.Tensor) -> torch.Tensor:
    """The forward pass with the pool always applied (the model before the skip)."""
    return model.head(torch.flatten(model.pool(model.features(x)), 1))


def test_mnist1d_features_already_have_the_pooled_length() -> None:
    model = build_model("cnn1d", (1, 40), 10)
    assert model.features(torch.randn(2, 1, 40)).shape[-1] == model.pooled_length == 10


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_skipping_the_pool_is_bit_identical(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    model = build_model("cnn1d", (1, 40), 10).to(dtype).train()
    x = torch.randn(32, 1, 40, dtype=dtype)
    y = torch.randint(0, 10, (32,))
    grads = []
    for forward in (model, lambda t: _pooled_forward(model, t)):
        model.zero_grad(set_to_none=True)
        out = forward(x)
        F.cross_entropy(out, y).backward()
        grads.append((out.detach(), [p.grad.clone() for p in model.parameters()]))
    (out_skip, g_skip), (out_pool, g_pool) = grads
    assert torch.equal(out_skip, out_pool)
    assert all(torch.equal(a, b) for a, b in zip(g_skip, g_pool, strict=True))


def test_pool_still_runs_for_other_lengths() -> None:
    torch.manual_seed(0)
    model = build_model("cnn1d", (2, 100), 5).eval()
    x = torch.randn(3, 2, 100)
    assert model.features(x).shape[-1] != model.pooled_length
    with torch.no_grad():
        assert torch.equal(model(x), _pooled_forward(model, x))
