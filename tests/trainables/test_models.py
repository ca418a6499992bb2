"""Tests of the model registry: shapes accepted, outputs, parameter counts, errors."""

from __future__ import annotations

import pytest
import torch

from trainables.models import ModelError, build_model, count_parameters
from xsam_contract import MODELS

CIFAR = (3, 32, 32)
TINY = (3, 64, 64)
DIGITS = (1, 8, 8)
MNIST1D = (1, 40)

# Which input shapes each model accepts (and must give (B, classes) for).
SUPPORTED = {
    "cnn1d": [MNIST1D, (2, 100)],
    "mlp": [MNIST1D, DIGITS, CIFAR, TINY],
    "resnet18": [CIFAR, TINY, DIGITS],
    "vgg11_bn": [CIFAR, TINY, (1, 48, 40)],
    "densenet121": [CIFAR, TINY],
    "wrn28_10": [CIFAR, TINY],
}
REJECTED = {
    "cnn1d": [CIFAR, DIGITS, (40,), (1, 2)],
    "resnet18": [MNIST1D, (40,), (3, 4, 4)],
    "vgg11_bn": [MNIST1D, DIGITS, (3, 16, 16)],
    "densenet121": [MNIST1D, DIGITS[:2], (3, 4, 4)],
    "wrn28_10": [MNIST1D, (3, 32, 32, 32)],
}
# Published parameter counts for 10 classes (CIFAR variants).
PUBLISHED_PARAMS = {
    "resnet18": 11.17e6,
    "vgg11_bn": 9.23e6,
    "densenet121": 6.96e6,
    "wrn28_10": 36.48e6,
}

# Spatial size of the last feature map for a 32x32 input: the number of
# downsamplings of each architecture (3 for ResNet-18 and DenseNet-121 with the
# CIFAR stem, 2 for WRN, 5 max-poolings for VGG).
FINAL_FEATURE_SIDE = {"resnet18": 4, "densenet121": 4, "wrn28_10": 8, "vgg11_bn": 1}


def test_registry_lists_every_model() -> None:
    assert set(MODELS) == set(SUPPORTED)
    assert set(MODELS) == {"cnn1d", "mlp", "resnet18", "vgg11_bn", "densenet121", "wrn28_10"}


@pytest.mark.parametrize(
    ("name", "shape"), [(name, shape) for name, shapes in SUPPORTED.items() for shape in shapes]
)
def test_forward_gives_one_logit_per_class(name: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    classes = 7
    model = build_model(name, shape, classes)
    x = torch.randn(2, *shape)
    pools = [m for m in model.modules() if isinstance(m, torch.nn.AdaptiveAvgPool2d)]
    seen: list[tuple[int, ...]] = []
    if name in FINAL_FEATURE_SIDE:
        assert len(pools) == 1  # the classifier does not depend on the input size
        pools[0].register_forward_hook(lambda _m, inp, _out: seen.append(tuple(inp[0].shape)))
    # No autograd graph: this checks shapes; gradients are covered by the learning test.
    with torch.no_grad():
        out = model.train()(x)
        assert out.shape == (2, classes)
        assert torch.isfinite(out).all()
        if name in FINAL_FEATURE_SIDE and shape == CIFAR:
            side = FINAL_FEATURE_SIDE[name]
            assert seen[0][2:] == (side, side)
        if shape == SUPPORTED[name][0]:  # once per model, to keep the file fast
            # Evaluation mode (BatchNorm running statistics) works as well.
            assert model.eval()(x).shape == (2, classes)


@pytest.mark.parametrize(
    ("name", "shape"), [(name, shape) for name, shapes in REJECTED.items() for shape in shapes]
)
def test_wrong_input_shape_is_a_clear_error(name: str, shape: tuple[int, ...]) -> None:
    with pytest.raises(ModelError) as err:
        build_model(name, shape, 10)
    message = str(err.value)
    assert name in message and str(shape) in message
    assert "(channels, " in message  # names the accepted shapes


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_parameter_counts_match_the_literature(name: str) -> None:
    model = build_model(name, CIFAR, 10)
    n = count_parameters(model)
    assert abs(n - PUBLISHED_PARAMS[name]) / PUBLISHED_PARAMS[name] < 0.03, n
    # The head scales with the class count, the body not with the input size.
    more = count_parameters(build_model(name, CIFAR, 100)) - n
    head_in = next(m for m in reversed(list(model.modules())) if isinstance(m, torch.nn.Linear))
    assert more == 90 * (head_in.in_features + 1)
    assert count_parameters(build_model(name, TINY, 10)) == n


def test_small_models_have_the_described_layout() -> None:
    cnn = build_model("cnn1d", MNIST1D, 10)
    convs = [m for m in cnn.modules() if isinstance(m, torch.nn.Conv1d)]
    assert [c.out_channels for c in convs] == [32, 32, 32]
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in cnn.modules()) == 3
    mlp = build_model("mlp", DIGITS, 10)
    linears = [m for m in mlp.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 100), (100, 100), (100, 10)]


def test_build_is_reproducible_under_a_seed() -> None:
    torch.manual_seed(3)
    a = build_model("resnet18", DIGITS, 10)
    torch.manual_seed(3)
    b = build_model("resnet18", DIGITS, 10)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_bad_names_and_class_counts() -> None:
    with pytest.raises(ModelError) as err:
        build_model("resnet50", CIFAR, 10)
    assert str(err.value).startswith("model: unknown model 'resnet50'")
    assert all(name in str(err.value) for name in MODELS)
    with pytest.raises(ModelError, match="num_classes"):
        build_model("mlp", MNIST1D, 1)
    with pytest.raises(ModelError):
        build_model("mlp", (), 10)


def test_models_learn_a_trivial_task() -> None:
    # One batch, a few SGD steps: the loss must drop (wiring and gradients are sound).
    torch.manual_seed(0)
    x = torch.randn(16, *MNIST1D)
    y = torch.arange(16) % 4
    for name in ("cnn1d", "mlp"):
        model = build_model(name, MNIST1D, 4)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        losses = []
        for _ in range(30):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < 0.5 * losses[0], (name, losses[0], losses[-1])
