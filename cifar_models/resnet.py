"""ImageNet-depth ResNets adapted to CIFAR (families "resnet" and "se_resnet").

Same layout as kuangliu/pytorch-cifar: 3x3 stride-1 stem with no max-pool (a 7x7/2
stem plus pool would shrink 32x32 inputs to 8x8 before the first stage), stages of
64/128/256/512 channels and 1x1 conv + BN projection shortcuts. Optional SE/ECA
attention scales the residual branch before the addition (Hu et al. 2018).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ClassifierHead, make_attention, scale_channels
from .registry import register_model


def _projection(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """Identity when shapes match, otherwise a 1x1 conv + BN (option B shortcut)."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class BasicBlock(nn.Module):
    """Two 3x3 convs; used by resnet18/34."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int, attention: nn.Module) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.attention = attention
        self.shortcut = _projection(in_channels, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.attention(self.bn2(self.conv2(out)))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 -> 1x1 expand (x4); used by resnet50/101/152."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int, attention: nn.Module) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.attention = attention
        self.shortcut = _projection(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.attention(self.bn3(self.conv3(out)))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """Stem + four stages + pooled classifier; ``blocks`` gives the block count per stage."""

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        blocks: tuple[int, int, int, int],
        num_classes: int,
        *,
        attention: str,
        se_reduction: int,
        eca_kernel: int,
        dropout: float,
        width: float,
    ) -> None:
        super().__init__()
        in_channels = scale_channels(64, width)
        self.stem = nn.Sequential(
            nn.Conv2d(3, in_channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
        )
        stages: list[nn.Module] = []
        for index, (base, count) in enumerate(zip((64, 128, 256, 512), blocks)):
            planes = scale_channels(base, width)
            layers: list[nn.Module] = []
            for position in range(count):
                stride = 2 if index > 0 and position == 0 else 1
                out_channels = planes * block.expansion
                attn = make_attention(attention, out_channels, se_reduction, eca_kernel)
                layers.append(block(in_channels, planes, stride, attn))
                in_channels = out_channels
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.head = ClassifierHead(in_channels, num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


def _make_builder(
    name: str,
    family: str,
    block: type[BasicBlock] | type[Bottleneck],
    blocks: tuple[int, int, int, int],
    default_attention: str,
) -> Callable[..., nn.Module]:
    """Create and register builder ``name``; the builders differ only in depth and attention."""

    def build(
        num_classes: int,
        *,
        attention: str = default_attention,
        se_reduction: int = 16,
        eca_kernel: int = 3,
        dropout: float = 0.0,
        width: float = 1.0,
    ) -> nn.Module:
        return ResNet(
            block,
            blocks,
            num_classes,
            attention=attention,
            se_reduction=se_reduction,
            eca_kernel=eca_kernel,
            dropout=dropout,
            width=width,
        )

    build.__name__ = build.__qualname__ = name
    build.__doc__ = (
        f"{name}: CIFAR ResNet, {block.__name__} stages {blocks}, attention={default_attention!r}."
    )
    return register_model(family)(build)


_DEPTHS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}

resnet18 = _make_builder("resnet18", "resnet", *_DEPTHS[18], "none")
resnet34 = _make_builder("resnet34", "resnet", *_DEPTHS[34], "none")
resnet50 = _make_builder("resnet50", "resnet", *_DEPTHS[50], "none")
resnet101 = _make_builder("resnet101", "resnet", *_DEPTHS[101], "none")
resnet152 = _make_builder("resnet152", "resnet", *_DEPTHS[152], "none")

se_resnet18 = _make_builder("se_resnet18", "se_resnet", *_DEPTHS[18], "se")
se_resnet34 = _make_builder("se_resnet34", "se_resnet", *_DEPTHS[34], "se")
se_resnet50 = _make_builder("se_resnet50", "se_resnet", *_DEPTHS[50], "se")
se_resnet101 = _make_builder("se_resnet101", "se_resnet", *_DEPTHS[101], "se")
se_resnet152 = _make_builder("se_resnet152", "se_resnet", *_DEPTHS[152], "se")
