"""What a config costs, measured on its model: training FLOPs per image, inference time per
image and training seconds per epoch. ``bench`` reports the FLOPs; a multi-objective study
can minimize any of them.

FLOPs and inference time do not depend on the trained weights, so both are measured on a
fresh model of the config at the size training feeds it (32 x 32 times ``aug.resize``): the
FLOPs on the CPU (counted, not timed, so the same on every machine), the inference time on
the trial's device with the precision and memory format training uses. The inference time
is measured once per architecture and device in a process and reused: timing noise would
otherwise decide between trials of the same model.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from search.config import TrialConfig
from search.training.device import FAST_PATH_DEVICES, autocast, synchronize
from search.training.loop import build_model

if TYPE_CHECKING:
    from search.training.loop import TrainResult

_INFERENCE_MS: dict[tuple, float] = {}  # (architecture, device, precision, ...) -> ms/image


def input_size(cfg: TrialConfig) -> int:
    """The side of the images the model sees: CIFAR's 32, upsampled by ``aug.resize``."""
    return 32 * cfg.aug.resize


def train_flops_per_image(cfg: TrialConfig, num_classes: int = 10) -> float:
    """Forward + backward FLOPs of one image (counted by torch on the CPU)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model(cfg, num_classes)
    side = input_size(cfg)
    x = torch.randn(2, 3, side, side)
    with FlopCounterMode(display=False) as counter:
        model(x).sum().backward()
    return counter.get_total_flops() / 2


@torch.no_grad()
def inference_ms_per_image(
    cfg: TrialConfig,
    num_classes: int,
    device: torch.device,
    batch_size: int | None = None,
    repeats: int = 5,
) -> float:
    """Milliseconds per image of the model's forward pass in eval mode on ``device``, with
    the trial's precision (bf16 autocast where the fast path runs) and memory format:
    the median of ``repeats`` timed batches of ``runtime.eval_batch_size`` images after
    two untimed ones (which pay for kernel selection and caches). Measured once per
    architecture, device and precision in this process."""
    batch_size = batch_size or cfg.runtime.eval_batch_size
    fast = cfg.runtime.channels_last and device.type in FAST_PATH_DEVICES
    key = (
        cfg.model.name,
        tuple(sorted(cfg.model.model_args().items())),
        num_classes,
        input_size(cfg),
        str(device),
        fast,
        cfg.runtime.bf16,
        batch_size,
        repeats,
    )
    if key not in _INFERENCE_MS:
        _INFERENCE_MS[key] = _time_inference(cfg, num_classes, device, batch_size, repeats, fast)
    return _INFERENCE_MS[key]


def _time_inference(
    cfg: TrialConfig,
    num_classes: int,
    device: torch.device,
    batch_size: int,
    repeats: int,
    channels_last: bool,
) -> float:
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model(cfg, num_classes).to(device, memory_format=memory_format).eval()
    side = input_size(cfg)
    x = torch.randn(batch_size, 3, side, side, device=device)
    x = x.contiguous(memory_format=memory_format)
    times = []
    for i in range(2 + repeats):
        synchronize(device)
        start = time.perf_counter()
        with autocast(cfg, device):
            model(x)
        synchronize(device)
        if i >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000 / batch_size


def training_seconds_per_epoch(results: Sequence[TrainResult]) -> float:
    """The median training time of an epoch (without its validation pass), over every
    fold's epochs but the first of each when there are more: the first pays for start-up,
    autotuning and compilation, which a longer run would spread thin."""
    seconds = [
        s.seconds for r in results for s in (r.history[1:] if len(r.history) > 1 else r.history)
    ]
    return statistics.median(seconds)
