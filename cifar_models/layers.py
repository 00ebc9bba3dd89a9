"""Building blocks shared by several model families: channel attention, Ghost module, width."""

from __future__ import annotations

import math

import torch
from torch import nn


def scale_channels(channels: int, width: float) -> int:
    """Channel count after the ``width`` multiplier; never below 1 so tiny widths still build."""
    return max(1, round(channels * width))


class SqueezeExcite(nn.Module):
    """Squeeze-and-Excitation (Hu et al. 2018): channel gates from an MLP on pooled features."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(channels, hidden)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, channels)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.pool(x).flatten(1)
        weights = self.gate(self.fc2(self.relu(self.fc1(weights))))
        return x * weights[:, :, None, None]


class EfficientChannelAttention(nn.Module):
    """ECA (Wang et al. 2020): channel gates from a 1-D conv across pooled channels.

    Unlike SE there is no dimensionality reduction and only ``kernel_size`` weights.
    """

    def __init__(self, kernel_size: int = 3) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, 1, 1) -> (B, 1, C): channels become the sequence the conv slides over.
        weights = self.pool(x).flatten(1).unsqueeze(1)
        weights = self.gate(self.conv(weights))
        return x * weights.squeeze(1)[:, :, None, None]


def make_attention(
    kind: str, channels: int, se_reduction: int = 16, eca_kernel: int = 3
) -> nn.Module:
    """Attention module for ``kind`` ("se", "eca" or "none" -> parameter-free Identity)."""
    if kind == "se":
        return SqueezeExcite(channels, se_reduction)
    if kind == "eca":
        return EfficientChannelAttention(eca_kernel)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown attention kind {kind!r}")


class GhostModule(nn.Module):
    """Ghost module (Han et al. 2020): a few real conv channels plus cheap depthwise "ghosts".

    A ``kernel_size`` conv makes ``ceil(out / ratio)`` channels and a depthwise conv
    derives the rest from them, standing in for a conv + BatchNorm (+ ReLU when
    ``relu``) at about ``1 / ratio`` of its FLOPs and parameters.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        ratio: int = 2,
        cheap_kernel: int = 3,
        relu: bool = True,
    ) -> None:
        super().__init__()
        self.out_channels = out_channels
        primary = math.ceil(out_channels / ratio)
        cheap = primary * (ratio - 1)
        self.primary = nn.Sequential(
            nn.Conv2d(in_channels, primary, kernel_size, stride, kernel_size // 2, bias=False),
            nn.BatchNorm2d(primary),
            nn.ReLU(inplace=True) if relu else nn.Identity(),
        )
        self.cheap = nn.Sequential(
            nn.Conv2d(
                primary, cheap, cheap_kernel, 1, cheap_kernel // 2, groups=primary, bias=False
            ),
            nn.BatchNorm2d(cheap),
            nn.ReLU(inplace=True) if relu else nn.Identity(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        primary = self.primary(x)
        out = torch.cat([primary, self.cheap(primary)], dim=1)
        # Rounding up in ceil(out / ratio) can overshoot by up to ratio - 1 channels.
        return out[:, : self.out_channels]


class ClassifierHead(nn.Module):
    """Global average pool -> Dropout(p) -> Linear; the pooling accepts any input size."""

    def __init__(self, in_features: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.pool(x).flatten(1)))
