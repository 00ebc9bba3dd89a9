"""Small plain CNN baselines (family "cnn"): LeNet-style and 3-block VGG-style networks."""

from __future__ import annotations

import torch
from torch import nn

from .layers import ClassifierHead, scale_channels
from .registry import register_model


class LeNet(nn.Module):
    """LeNet-5 as in the PyTorch CIFAR tutorial: two 5x5 conv/pool stages and a 3-layer MLP."""

    def __init__(self, num_classes: int, dropout: float, width: float) -> None:
        super().__init__()
        c1, c2 = scale_channels(6, width), scale_channels(16, width)
        h1, h2 = scale_channels(120, width), scale_channels(84, width)
        self.features = nn.Sequential(
            nn.Conv2d(3, c1, 5),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            # Identity at 32x32 (maps are already 5x5); lets larger inputs reach the 400-wide fc.
            nn.AdaptiveAvgPool2d(5),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c2 * 5 * 5, h1),
            nn.ReLU(inplace=True),
            nn.Linear(h1, h2),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(h2, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class ConvStack(nn.Module):
    """Three 3x3 conv -> (BatchNorm) -> ReLU -> maxpool stages, then a pooled linear classifier."""

    def __init__(self, num_classes: int, dropout: float, width: float, batch_norm: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 3
        for channels in (32, 64, 128):
            out_channels = scale_channels(channels, width)
            # The conv bias is redundant when BatchNorm's shift follows.
            layers.append(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers += [nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        self.head = ClassifierHead(in_channels, num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register_model("cnn")
def base_cnn(num_classes: int, *, dropout: float = 0.0, width: float = 1.0) -> nn.Module:
    """LeNet-style baseline (~62k parameters at width 1)."""
    return LeNet(num_classes, dropout, width)


@register_model("cnn")
def simple_cnn(num_classes: int, *, dropout: float = 0.0, width: float = 1.0) -> nn.Module:
    """Three conv/ReLU/maxpool stages (32/64/128 channels) without normalisation."""
    return ConvStack(num_classes, dropout, width, batch_norm=False)


@register_model("cnn")
def improved_cnn(num_classes: int, *, dropout: float = 0.0, width: float = 1.0) -> nn.Module:
    """simple_cnn with BatchNorm after each conv, which trains faster and more stably."""
    return ConvStack(num_classes, dropout, width, batch_norm=True)
