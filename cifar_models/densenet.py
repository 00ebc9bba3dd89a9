"""DenseNet-BC for CIFAR (family "densenet"), as in kuangliu/pytorch-cifar.

Growth rate 32, bottleneck layers, compression 0.5, and a 3x3 stride-1 stem instead
of ImageNet's 7x7/2 conv + max-pool, which would discard most of a 32x32 image.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ClassifierHead, scale_channels
from .registry import register_model

GROWTH_RATE = 32
COMPRESSION = 0.5


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv (4k) -> BN-ReLU-3x3 conv (k); output is concatenated onto the input."""

    def __init__(self, in_channels: int, growth: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, 4 * growth, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([out, x], dim=1)


class Transition(nn.Module):
    """BN-ReLU-1x1 conv (compression) -> 2x2 average pool between dense blocks."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_channels)
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


class DenseNet(nn.Module):
    """Stem, four dense blocks with transitions between them, BN-ReLU, pooled classifier."""

    def __init__(
        self, blocks: tuple[int, int, int, int], num_classes: int, dropout: float, width: float
    ) -> None:
        super().__init__()
        growth = scale_channels(GROWTH_RATE, width)
        channels = 2 * growth
        layers: list[nn.Module] = [nn.Conv2d(3, channels, 3, padding=1, bias=False)]
        for index, count in enumerate(blocks):
            for _ in range(count):
                layers.append(DenseLayer(channels, growth))
                channels += growth
            if index < len(blocks) - 1:
                out_channels = math.floor(channels * COMPRESSION)
                layers.append(Transition(channels, out_channels))
                channels = out_channels
        layers += [nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.head = ClassifierHead(channels, num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _make_builder(name: str, blocks: tuple[int, int, int, int]) -> Callable[..., nn.Module]:
    """Create and register builder ``name`` for the given dense-block layer counts."""

    def build(num_classes: int, *, dropout: float = 0.0, width: float = 1.0) -> nn.Module:
        return DenseNet(blocks, num_classes, dropout, width)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"{name}: CIFAR DenseNet-BC, growth 32, dense blocks {blocks}."
    return register_model("densenet")(build)


densenet121 = _make_builder("densenet121", (6, 12, 24, 16))
densenet169 = _make_builder("densenet169", (6, 12, 32, 32))
densenet201 = _make_builder("densenet201", (6, 12, 48, 32))
densenet264 = _make_builder("densenet264", (6, 12, 64, 48))
