"""Model registry: the networks a trial can train.

:func:`build_model` takes a registry name, the per-sample input shape of the
dataset (``Dataset.input_shape``) and the number of classes. The names are
those of the registry ``xsam_contract.MODELS``, whose entries point at the
``_build_<name>(input_shape, num_classes)`` functions at the end of this
module.

Input shapes
    ``cnn1d``
        1-D signals ``(channels, length)`` with ``length >= 4``, e.g. MNIST-1D
        ``(1, 40)``.
    ``mlp``
        Any shape (the input is flattened).
    ``resnet18``, ``densenet121``, ``wrn28_10``
        Images ``(channels, height, width)`` with any channel count and
        ``height, width >= 8`` (CIFAR 32x32, Tiny-ImageNet 64x64, digits 8x8).
    ``vgg11_bn``
        Images with ``height, width >= 32`` (five 2x2 max-poolings).

All image models end with adaptive average pooling, so the classifier does
not depend on the input size. Architectures, written from their papers:

- ``cnn1d``: three convolutions (32 channels, kernel 5, BatchNorm + ReLU;
  the last two with stride 2), flattened to 32 x 10 features by adaptive
  average pooling (the identity for length 40), linear head.
- ``mlp``: flatten, two hidden layers of 100 units with ReLU, linear head.
- ``resnet18``: He et al. 2016 with the CIFAR stem (3x3 convolution,
  stride 1, no max-pooling), BasicBlocks [2, 2, 2, 2], widths 64-512
  (11.2M parameters for 10 classes).
- ``vgg11_bn``: Simonyan & Zisserman 2015 configuration A with BatchNorm,
  convolutions only, then a single 512 -> classes linear layer (9.2M).
- ``densenet121``: Huang et al. 2017, growth 32, blocks 6-12-24-16,
  bottleneck 4 x growth, compression 0.5, CIFAR stem (one 3x3 convolution to
  64 channels, no pooling) (7.0M).
- ``wrn28_10``: Zagoruyko & Komodakis 2016, depth 28, widen factor 10,
  pre-activation blocks, dropout 0 (36.5M).

Convolutions use Kaiming-normal initialisation (fan-out, ReLU), BatchNorm
starts at weight 1 and bias 0, linear biases at 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from xsam_contract import MODELS, RegistryError

__all__ = ["ModelError", "build_model", "count_parameters"]

_IMAGE_MODELS = ("resnet18", "vgg11_bn", "densenet121", "wrn28_10")
_MIN_IMAGE_SIDE = {"resnet18": 8, "vgg11_bn": 32, "densenet121": 8, "wrn28_10": 8}
_MIN_SIGNAL_LENGTH = 4


class ModelError(ValueError):
    """A model cannot be built for the given name, input shape or class count."""


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters.

    Args:
        model: Any module.

    Returns:
        Sum of ``numel`` over parameters that require a gradient.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------
# 1-D and generic


class CNN1D(nn.Module):
    """Three-layer 1-D CNN for MNIST-1D-like signals.

    Args:
        in_channels: Signal channels.
        num_classes: Output classes.
        width: Channels of every convolution.
        kernel_size: Convolution kernel size.
        pooled_length: Length the features are pooled to before the head.

    The pool is skipped when the feature map already has `pooled_length`
    positions (MNIST-1D's 40 samples give 40 → 20 → 10): adaptive average
    pooling to its own length averages one element per bin, an identity in
    value and gradient that still cost ~14% of a forward+backward pass.
    Outputs are bit-identical either way (tests/trainables/test_models.py).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        width: int = 32,
        kernel_size: int = 5,
        pooled_length: int = 10,
    ) -> None:
        super().__init__()
        pad = kernel_size // 2
        layers: list[nn.Module] = []
        for i, stride in enumerate((1, 2, 2)):
            layers += [
                nn.Conv1d(
                    in_channels if i == 0 else width, width, kernel_size, stride, pad, bias=False
                ),
                nn.BatchNorm1d(width),
                nn.ReLU(inplace=True),
            ]
        self.features = nn.Sequential(*layers)
        # Keeps position information (MNIST-1D classes depend on it) while
        # fixing the head's size for any input length.
        self.pooled_length = pooled_length
        self.pool = nn.AdaptiveAvgPool1d(pooled_length)
        self.head = nn.Linear(width * pooled_length, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Maps ``(B, C, L)`` signals to ``(B, num_classes)`` logits."""
        h = self.features(x)
        if h.shape[-1] != self.pooled_length:  # else the pool is an identity: skip its cost
            h = self.pool(h)
        return self.head(torch.flatten(h, 1))


class MLP(nn.Module):
    """Flatten, two hidden ReLU layers, linear head.

    Args:
        in_features: Product of the input shape.
        num_classes: Output classes.
        hidden: Units of each hidden layer.
    """

    def __init__(self, in_features: int, num_classes: int, hidden: int = 100) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_features, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Maps ``(B, *input_shape)`` to ``(B, num_classes)`` logits."""
        return self.net(x)


# --------------------------------------------------------------------------
# ResNet-18 (CIFAR stem)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (post-activation).

    Args:
        in_planes: Input channels.
        planes: Output channels.
        stride: Stride of the first convolution (and of the projection).
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            # Projection shortcut where the shape changes (option B).
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Applies the block."""
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet with BasicBlocks and the CIFAR stem.

    Args:
        in_channels: Image channels.
        num_classes: Output classes.
        blocks: Blocks per stage.
        widths: Channels per stage.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        blocks: Sequence[int] = (2, 2, 2, 2),
        widths: Sequence[int] = (64, 128, 256, 512),
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        stages: list[nn.Module] = []
        in_planes = widths[0]
        for i, (n, planes) in enumerate(zip(blocks, widths, strict=True)):
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                stages.append(BasicBlock(in_planes, planes, stride))
                in_planes = planes
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Maps ``(B, C, H, W)`` images to ``(B, num_classes)`` logits."""
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


# --------------------------------------------------------------------------
# A features trunk, global average pooling and one linear layer (VGG, DenseNet)


class _PooledClassifier(nn.Module):
    """Base of the image models that end in global average pooling and a linear layer."""

    features: nn.Sequential
    pool: nn.AdaptiveAvgPool2d
    classifier: nn.Linear

    def _set_head(self, layers: list[nn.Module], channels: int, num_classes: int) -> None:
        """The trunk `layers` ending in `channels` maps, then the pooled linear head."""
        self.features = nn.Sequential(*layers)
        # 32x32 inputs may end at 1x1 already; larger ones are averaged down.
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Maps ``(B, C, H, W)`` images to ``(B, num_classes)`` logits."""
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


# --------------------------------------------------------------------------
# VGG-11 with BatchNorm


_VGG11: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG(_PooledClassifier):
    """VGG feature extractor with BatchNorm and a single linear classifier.

    Args:
        in_channels: Image channels.
        num_classes: Output classes.
        config: Channel counts and ``"M"`` for 2x2 max-pooling.
    """

    def __init__(
        self, in_channels: int, num_classes: int, config: Sequence[int | str] = _VGG11
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for item in config:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                out = int(item)
                layers += [
                    nn.Conv2d(channels, out, 3, padding=1),
                    nn.BatchNorm2d(out),
                    nn.ReLU(inplace=True),
                ]
                channels = out
        self._set_head(layers, channels, num_classes)


# --------------------------------------------------------------------------
# DenseNet-121 (CIFAR stem)


class _DenseLayer(nn.Module):
    """Bottleneck layer BN-ReLU-Conv1x1-BN-ReLU-Conv3x3, output concatenated to the input."""

    def __init__(self, in_channels: int, growth: int, bottleneck: int = 4) -> None:
        super().__init__()
        inner = bottleneck * growth
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, inner, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(inner)
        self.conv2 = nn.Conv2d(inner, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(torch.relu(self.bn1(x)))
        out = self.conv2(torch.relu(self.bn2(out)))
        return torch.cat([x, out], dim=1)


class _Transition(nn.Module):
    """BN-ReLU-Conv1x1 compression followed by 2x2 average pooling."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_channels)
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.pool = nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv(torch.relu(self.bn(x))))


class DenseNet(_PooledClassifier):
    """DenseNet-BC with the CIFAR stem.

    Args:
        in_channels: Image channels.
        num_classes: Output classes.
        blocks: Layers per dense block.
        growth: Growth rate k.
        reduction: Compression of the transitions.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        blocks: Sequence[int] = (6, 12, 24, 16),
        growth: int = 32,
        reduction: float = 0.5,
    ) -> None:
        super().__init__()
        channels = 2 * growth
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 3, padding=1, bias=False)]
        for i, n in enumerate(blocks):
            for _ in range(n):
                layers.append(_DenseLayer(channels, growth))
                channels += growth
            if i < len(blocks) - 1:
                out = math.floor(channels * reduction)
                layers.append(_Transition(channels, out))
                channels = out
        layers += [nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
        self._set_head(layers, channels, num_classes)


# --------------------------------------------------------------------------
# WideResNet-28-10


class _WideBlock(nn.Module):
    """Pre-activation wide block: BN-ReLU-Conv3x3-(Dropout)-BN-ReLU-Conv3x3 + shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = torch.relu(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(self.dropout(torch.relu(self.bn2(out))))
        # The projection sees the pre-activated input, as in the paper's code.
        return out + (x if self.shortcut is None else self.shortcut(pre))


class WideResNet(nn.Module):
    """WideResNet-depth-k for CIFAR-style inputs.

    Args:
        in_channels: Image channels.
        num_classes: Output classes.
        depth: Total depth, 6n + 4.
        widen: Widening factor k.
        dropout: Dropout between the convolutions of a block.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        depth: int = 28,
        widen: int = 10,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ModelError(f"WideResNet depth must be 6n + 4, got {depth}")
        n = (depth - 4) // 6
        widths = (16, 16 * widen, 32 * widen, 64 * widen)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)]
        in_planes = widths[0]
        for stage, planes in enumerate(widths[1:]):
            for j in range(n):
                stride = 2 if stage > 0 and j == 0 else 1
                layers.append(_WideBlock(in_planes, planes, stride, dropout))
                in_planes = planes
        layers += [nn.BatchNorm2d(in_planes), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Maps ``(B, C, H, W)`` images to ``(B, num_classes)`` logits."""
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


# --------------------------------------------------------------------------
# Registry: the builders xsam_contract.MODELS points at, each (input_shape, num_classes)


def _build_cnn1d(shape: tuple[int, ...], num_classes: int) -> nn.Module:
    if len(shape) != 2 or shape[1] < _MIN_SIGNAL_LENGTH:
        raise ModelError(
            f"model 'cnn1d' takes 1-D signals of shape (channels, length) with length >= "
            f"{_MIN_SIGNAL_LENGTH}, e.g. (1, 40) for mnist1d; got input shape {shape}. "
            f"For images use one of {', '.join(_IMAGE_MODELS)} (or mlp)."
        )
    return _initialised(CNN1D(shape[0], num_classes))


def _build_mlp(shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return _initialised(MLP(math.prod(shape), num_classes))


def _build_resnet18(shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return _initialised(ResNet(_image_channels("resnet18", shape), num_classes))


def _build_vgg11_bn(shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return _initialised(VGG(_image_channels("vgg11_bn", shape), num_classes))


def _build_densenet121(shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return _initialised(DenseNet(_image_channels("densenet121", shape), num_classes))


def _build_wrn28_10(shape: tuple[int, ...], num_classes: int) -> nn.Module:
    channels = _image_channels("wrn28_10", shape)
    return _initialised(WideResNet(channels, num_classes, depth=28, widen=10, dropout=0.0))


def _initialised(model: nn.Module) -> nn.Module:
    _init_weights(model)
    return model


def _image_channels(name: str, shape: tuple[int, ...]) -> int:
    """The channel count of an image shape the model accepts, else a ModelError with a hint."""
    side = _MIN_IMAGE_SIDE[name]
    if len(shape) == 3 and min(shape[1:]) >= side:
        return shape[0]
    smaller = [m for m in _IMAGE_MODELS if _MIN_IMAGE_SIDE[m] < side]
    hint = (
        f"For smaller images use {', '.join(smaller)} (or mlp)."
        if len(shape) == 3 and smaller
        else "For 1-D signals use cnn1d (or mlp)."
        if len(shape) == 2
        else "mlp takes any shape."
    )
    raise ModelError(
        f"model {name!r} takes images of shape (channels, height, width) with height and "
        f"width >= {side}, e.g. (3, 32, 32); got input shape {shape}. {hint}"
    )


def build_model(name: str, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """Builds a freshly initialised model (on the CPU; seed torch first for reproducibility).

    Args:
        name: One of ``xsam_contract.MODELS``.
        input_shape: Per-sample input shape, ``Dataset.input_shape``.
        num_classes: Number of output logits (>= 2).

    Returns:
        The model, mapping ``(B, *input_shape)`` to ``(B, num_classes)``.

    Raises:
        ModelError: Unknown name (the message lists the registered ones), bad
            class count, or an input shape the model does not accept (the
            message names the accepted shapes).
    """
    try:
        builder = MODELS.load(name)
    except RegistryError as err:
        raise ModelError(f"model: {err}") from None
    shape = tuple(int(s) for s in input_shape)
    if not shape or min(shape) < 1:
        raise ModelError(f"model {name!r}: input shape must be non-empty and positive, got {shape}")
    if int(num_classes) < 2:
        raise ModelError(f"model {name!r}: num_classes must be >= 2, got {num_classes}")
    return builder(shape, int(num_classes))
