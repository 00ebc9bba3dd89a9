"""What a config costs, measured on its model: training FLOPs per image and inference time
per image. ``bench`` reports the FLOPs; a multi-objective study can minimize either.

Neither depends on the trained weights, so both are measured on a fresh model of the
config: the FLOPs on the CPU (counted, not timed, so the same on every machine), the
inference time on the trial's device with the precision and memory format training uses.
"""

from __future__ import annotations

import statistics
import time

import torch

from search.config import TrialConfig
from search.training.device import FAST_PATH_DEVICES, autocast, synchronize
from search.training.loop import build_model


def train_flops_per_image(cfg: TrialConfig, num_classes: int = 10) -> float:
    """Forward + backward FLOPs of one 32x32 image (counted by torch on the CPU)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model(cfg, num_classes)
    x = torch.randn(2, 3, 32, 32)
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
    two untimed ones (which pay for kernel selection and caches)."""
    batch_size = batch_size or cfg.runtime.eval_batch_size
    fast = cfg.runtime.channels_last and device.type in FAST_PATH_DEVICES
    memory_format = torch.channels_last if fast else torch.contiguous_format
    model = build_model(cfg, num_classes).to(device, memory_format=memory_format).eval()
    x = torch.randn(batch_size, 3, 32, 32, device=device).contiguous(memory_format=memory_format)
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
