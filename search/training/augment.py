"""Batched augmentation on the training device: whole batches of uint8 images in, one
normalised float batch out. No per-image Python and no DataLoader workers, so on a GPU
the data path costs a few kernels per step instead of a CPU pipeline per image.

Order: random crop (on uint8) -> flip -> to float -> resize -> rotation -> colour jitter
-> normalisation -> random erasing (erased pixels become 0, the dataset mean).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from search.config import PRESETS, AugConfig


@dataclass(frozen=True)
class AugmentPlan:
    """Resolved augmentation toggles (preset defaults + explicit values)."""

    crop_padding: int
    flip: bool
    jitter: float
    erasing: float
    rotation: float
    resize: int

    @classmethod
    def from_config(cls, aug: AugConfig) -> AugmentPlan:
        values = dict(PRESETS[aug.preset], resize=aug.resize)
        for f in fields(aug):
            value = getattr(aug, f.name)
            if f.name in values and value is not None:
                values[f.name] = value
        return cls(**values)


def to_unit_float(images: torch.Tensor, resize: int = 1) -> torch.Tensor:
    """uint8 images -> floats in [0, 1], upsampled by ``resize`` (``aug.resize``)."""
    x = images.float().div_(255.0)
    if resize > 1:
        x = F.interpolate(x, scale_factor=resize, mode="bilinear", align_corners=False)
    return x


def normalise(
    images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, resize: int = 1
) -> torch.Tensor:
    """What a model sees at evaluation: ``(uint8 / 255, upsampled, - mean) / std`` with
    per-channel ``mean`` and ``std`` tensors shaped ``(1, C, 1, 1)``. The one definition:
    evaluation, the packaged MLflow model and Grad-CAM all call it, so that they agree
    bit for bit."""
    return (to_unit_float(images, resize) - mean) / std


class BatchAugment:
    """Applies an ``AugmentPlan`` to uint8 batches ``(B, 3, H, W)`` on their device."""

    def __init__(
        self,
        plan: AugmentPlan,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        device: torch.device,
        channels_last: bool = False,
    ) -> None:
        self.plan = plan
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def train_batch(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        p = self.plan
        x = images
        if p.crop_padding:
            x = random_crop(x, p.crop_padding, generator)
        if p.flip:
            x = random_flip(x, generator)
        x = to_unit_float(x, p.resize)
        if p.rotation:
            x = random_rotation(x, p.rotation, generator)
        if p.jitter:
            x = colour_jitter(x, p.jitter, generator)
        x = (x - self.mean) / self.std
        if p.erasing:
            x = random_erasing(x, p.erasing, generator)
        return x.contiguous(memory_format=self.memory_format)

    def eval_batch(self, images: torch.Tensor) -> torch.Tensor:
        x = normalise(images, self.mean, self.std, self.plan.resize)
        return x.contiguous(memory_format=self.memory_format)


def _uniform(n: int, lo: float, hi: float, like: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, device=like.device, generator=g) * (hi - lo) + lo


def random_crop(x: torch.Tensor, padding: int, g: torch.Generator) -> torch.Tensor:
    """Zero-pad by ``padding`` and cut a random HxW window per image (two gathers)."""
    b, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (b, 1), device=x.device, generator=g)
    dx = torch.randint(0, 2 * padding + 1, (b, 1), device=x.device, generator=g)
    rows = (dy + torch.arange(h, device=x.device)).view(b, 1, h, 1).expand(b, c, h, w + 2 * padding)
    padded = padded.gather(2, rows)
    cols = (dx + torch.arange(w, device=x.device)).view(b, 1, 1, w).expand(b, c, h, w)
    return padded.gather(3, cols)


def random_flip(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], device=x.device, generator=g) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)


def random_rotation(x: torch.Tensor, max_degrees: float, g: torch.Generator) -> torch.Tensor:
    """Rotate each image by an angle uniform in [-max, max] degrees (zeros fill corners)."""
    angle = _uniform(x.shape[0], -max_degrees, max_degrees, x, g) * (math.pi / 180)
    cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _grey(x: torch.Tensor) -> torch.Tensor:
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def colour_jitter(x: torch.Tensor, strength: float, g: torch.Generator) -> torch.Tensor:
    """Brightness, contrast and saturation, each by a factor in [1-s, 1+s] per image."""
    b = x.shape[0]
    lo, hi = max(0.0, 1 - strength), 1 + strength
    brightness, contrast, saturation = (
        _uniform(b, lo, hi, x, g).view(b, 1, 1, 1) for _ in range(3)
    )
    x = x * brightness
    mean = _grey(x).mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast + mean
    grey = _grey(x)
    x = (x - grey) * saturation + grey
    return x.clamp_(0.0, 1.0)


def random_erasing(
    x: torch.Tensor,
    probability: float,
    g: torch.Generator,
    area: tuple[float, float] = (0.02, 0.33),
    ratio: tuple[float, float] = (0.3, 3.3),
) -> torch.Tensor:
    """Zero a random rectangle (2-33% of the area) in each image with ``probability``."""
    b, _, h, w = x.shape
    share = _uniform(b, *area, x, g)
    aspect = torch.exp(_uniform(b, math.log(ratio[0]), math.log(ratio[1]), x, g))
    eh = (torch.sqrt(share * aspect) * h).clamp(1, h).floor()
    ew = (torch.sqrt(share / aspect) * w).clamp(1, w).floor()
    y0 = (torch.rand(b, device=x.device, generator=g) * (h - eh + 1)).floor()
    x0 = (torch.rand(b, device=x.device, generator=g) * (w - ew + 1)).floor()
    apply = torch.rand(b, device=x.device, generator=g) < probability
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (
        (rows >= y0.view(b, 1, 1))
        & (rows < (y0 + eh).view(b, 1, 1))
        & (cols >= x0.view(b, 1, 1))
        & (cols < (x0 + ew).view(b, 1, 1))
    )
    mask = (inside & apply.view(b, 1, 1)).unsqueeze(1)
    return x.masked_fill(mask, 0.0)
