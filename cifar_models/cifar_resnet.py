"""He et al. (2016) CIFAR ResNets of depth 6n+2 (families "cifar_resnet" and "ghost_resnet").

3x3 stem with 16 channels, three stages of n BasicBlocks with 16/32/64 channels and
parameter-free option-A shortcuts, so resnet20 has the paper's 0.27M parameters.
The eca_/ghost_ variants add ECA attention or swap the block convs for Ghost modules.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ClassifierHead, GhostModule, make_attention, scale_channels
from .registry import register_model


class PadShortcut(nn.Module):
    """Option-A shortcut: subsample by ``stride`` and zero-pad the new channels (no parameters)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.pad_front = (out_channels - in_channels) // 2
        self.pad_back = out_channels - in_channels - self.pad_front

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_front, self.pad_back))


def _conv_bn(in_channels: int, out_channels: int, stride: int, relu: bool) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
        nn.BatchNorm2d(out_channels),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class CifarBasicBlock(nn.Module):
    """Two 3x3 conv+BN layers (Ghost modules when ``ghost_ratio`` is set), attention, shortcut."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        attention: nn.Module,
        ghost_ratio: int | None,
    ) -> None:
        super().__init__()
        if ghost_ratio is None:
            self.conv1 = _conv_bn(in_channels, out_channels, stride, relu=True)
            self.conv2 = _conv_bn(out_channels, out_channels, 1, relu=False)
        else:
            self.conv1 = GhostModule(in_channels, out_channels, 3, stride, ghost_ratio, relu=True)
            self.conv2 = GhostModule(out_channels, out_channels, 3, 1, ghost_ratio, relu=False)
        self.attention = attention
        if stride == 1 and in_channels == out_channels:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = PadShortcut(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.attention(self.conv2(self.conv1(x)))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Depth-(6n+2) ResNet: stem, three stages of ``n`` blocks, pooled classifier."""

    def __init__(
        self,
        n: int,
        num_classes: int,
        *,
        attention: str,
        se_reduction: int,
        eca_kernel: int,
        dropout: float,
        width: float,
        ghost_ratio: int | None = None,
    ) -> None:
        super().__init__()
        in_channels = scale_channels(16, width)
        self.stem = _conv_bn(3, in_channels, 1, relu=True)
        stages: list[nn.Module] = []
        for index, base in enumerate((16, 32, 64)):
            out_channels = scale_channels(base, width)
            blocks: list[nn.Module] = []
            for position in range(n):
                stride = 2 if index > 0 and position == 0 else 1
                attn = make_attention(attention, out_channels, se_reduction, eca_kernel)
                block = CifarBasicBlock(in_channels, out_channels, stride, attn, ghost_ratio)
                blocks.append(block)
                in_channels = out_channels
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.head = ClassifierHead(in_channels, num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


def _blocks_per_stage(depth: int) -> int:
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
    return (depth - 2) // 6


def _make_builder(
    name: str, family: str, depth: int, default_attention: str
) -> Callable[..., nn.Module]:
    """Create and register a plain (or attention) CIFAR ResNet builder called ``name``."""
    n = _blocks_per_stage(depth)

    def build(
        num_classes: int,
        *,
        attention: str = default_attention,
        se_reduction: int = 16,
        eca_kernel: int = 3,
        dropout: float = 0.0,
        width: float = 1.0,
    ) -> nn.Module:
        return CifarResNet(
            n,
            num_classes,
            attention=attention,
            se_reduction=se_reduction,
            eca_kernel=eca_kernel,
            dropout=dropout,
            width=width,
        )

    build.__name__ = build.__qualname__ = name
    build.__doc__ = (
        f"{name}: He et al. CIFAR ResNet-{depth} (option-A shortcuts), "
        f"attention={default_attention!r}."
    )
    return register_model(family)(build)


def _make_ghost_builder(name: str, depth: int) -> Callable[..., nn.Module]:
    """Create and register a Ghost CIFAR ResNet builder called ``name``."""
    n = _blocks_per_stage(depth)

    def build(
        num_classes: int,
        *,
        ghost_ratio: int = 2,
        attention: str = "none",
        se_reduction: int = 16,
        eca_kernel: int = 3,
        dropout: float = 0.0,
        width: float = 1.0,
    ) -> nn.Module:
        return CifarResNet(
            n,
            num_classes,
            attention=attention,
            se_reduction=se_reduction,
            eca_kernel=eca_kernel,
            dropout=dropout,
            width=width,
            ghost_ratio=ghost_ratio,
        )

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"{name}: CIFAR ResNet-{depth} with Ghost modules (Han et al. 2020) as convs."
    return register_model("ghost_resnet")(build)


resnet20 = _make_builder("resnet20", "cifar_resnet", 20, "none")
resnet32 = _make_builder("resnet32", "cifar_resnet", 32, "none")
resnet56 = _make_builder("resnet56", "cifar_resnet", 56, "none")
resnet110 = _make_builder("resnet110", "cifar_resnet", 110, "none")

eca_resnet20 = _make_builder("eca_resnet20", "cifar_resnet", 20, "eca")
eca_resnet32 = _make_builder("eca_resnet32", "cifar_resnet", 32, "eca")

ghost_resnet20 = _make_ghost_builder("ghost_resnet20", 20)
ghost_resnet32 = _make_ghost_builder("ghost_resnet32", 32)
