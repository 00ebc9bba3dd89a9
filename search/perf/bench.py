"""Training throughput: our step (data resident on the device, batched augmentation,
bf16 + channels_last on CUDA) against the loop users write today (torchvision
``DataLoader`` + PIL transforms, fp32), same model, batch size, augmentations and device.

A benchmark, not a test: it prints figures and asserts nothing about them.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from search.config import TrialConfig
from search.training import (
    Dataset,
    build_model,
    peak_memory_mb,
    resolve_device,
    threads_per_process,
    train_one,
)
from search.training.costs import train_flops_per_image
from search.training.splits import make_train_data

# Dense bf16 tensor-core peaks (FLOP/s, vendor datasheets) for the model FLOP utilisation
# estimate, matched as whole words against torch.cuda.get_device_name in this order
# (PCIe/NVL before SXM). A GPU not listed (an A10G, say) gets no MFU rather than a wrong one.
BF16_PEAK_FLOPS = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
    ("A10", 125e12),
)


@dataclass(frozen=True)
class BenchResult:
    model: str
    batch_size: int
    device: str
    ours_images_per_s: float
    reference_images_per_s: float
    ours_peak_memory_mb: float
    reference_peak_memory_mb: float
    train_flops_per_image: float
    mfu: float | None  # fraction of the device's bf16 peak, CUDA only
    compile_mode: str | None = None  # torch.compile's mode for ours; None: not compiled

    @property
    def ratio(self) -> float:
        return self.ours_images_per_s / self.reference_images_per_s


def bench_config(
    model: str,
    batch_size: int,
    device: str,
    *,
    compile_mode: str | None = None,
    model_args: dict | None = None,
) -> TrialConfig:
    """What is measured: SGD, cosine, 'full' augmentation (crop+flip+jitter+erasing);
    compiled in ``compile_mode`` unless it is None."""
    flat = {
        "model.name": model,
        "optim.batch_size": batch_size,
        "aug.preset": "full",
        "runtime.device": device,
        "runtime.compile": compile_mode is not None,
        "data.dataset": "synthetic",
    }
    if compile_mode is not None:
        flat["runtime.compile_mode"] = compile_mode
    flat.update({f"model.{k}": v for k, v in (model_args or {}).items()})
    return TrialConfig.from_flat(flat)


def _synthetic(n: int) -> Dataset:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
    y = (np.arange(n) % 10).astype(np.int64)
    return Dataset("bench", x, y, x[:256], y[:256], tuple(str(i) for i in range(10)))


@dataclass(frozen=True)
class Span:
    """Images trained between two times of the machine-wide monotonic clock
    (``time.monotonic()``, seconds: comparable across processes on one machine)."""

    images: int
    start: float
    end: float


def aggregate_images_per_s(spans: list[Span]) -> float:
    """All spans' images over the window from the first start to the last end. Processes
    are never credited with the sum of rates measured at different moments; a straggler
    that finishes alone lengthens the window, so the figure is a lower bound."""
    window = max(s.end for s in spans) - min(s.start for s in spans)
    return sum(s.images for s in spans) / window


def measure_ours(
    cfg: TrialConfig, steps: int, timed_epochs: int = 2, ready=None
) -> tuple[Span, float]:
    """``train_one``'s own epoch loop: the span of ``timed_epochs`` epochs of ``steps``
    steps after one untimed epoch (which pays for CUDA start-up, cudnn autotuning and
    compilation), and the peak memory in MB. ``ready`` (a barrier) is waited on after the
    untimed epoch, so that concurrent processes time the same window."""
    device = resolve_device(cfg.runtime.device)
    ds = _synthetic(cfg.optim.batch_size * steps)
    # "test" as the evaluation split: no validation pass between the timed epochs.
    td = make_train_data(
        ds,
        train_idx=np.arange(len(ds.train_y)),
        eval_split="test",
        eval_idx=np.arange(len(ds.test_y)),
        device=device,
    )
    times: list[float] = []

    def on_epoch(stats) -> None:
        if stats.epoch == 1 and ready is not None:
            ready.wait()
        times.append(time.monotonic())  # the epoch's metrics were just synced to the host

    train_one(cfg.with_overrides({"optim.epochs": 1 + timed_epochs}), td, on_epoch)
    images = timed_epochs * steps * cfg.optim.batch_size
    return Span(images, times[0], times[-1]), peak_memory_mb(device)


class _Pictures(torch.utils.data.Dataset):
    """The usual CIFAR Dataset: a PIL image per item through torchvision transforms."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform) -> None:
        self.images, self.labels, self.transform = images.transpose(0, 2, 3, 1), labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def measure_reference(cfg: TrialConfig, steps: int, warmup: int = 3) -> tuple[float, float]:
    """images/s of the standard loop: DataLoader workers + PIL transforms + fp32."""
    import torchvision.transforms as T

    device = resolve_device(cfg.runtime.device)
    ds = _synthetic(cfg.optim.batch_size * (steps + warmup))
    mean, std = ds.mean_std
    transform = T.Compose(
        [
            T.RandomCrop(32, padding=4),
            T.RandomHorizontalFlip(),
            T.ColorJitter(0.4, 0.4, 0.4),
            T.ToTensor(),
            T.Normalize(mean, std),
            T.RandomErasing(p=0.25),
        ]
    )
    loader = torch.utils.data.DataLoader(
        _Pictures(ds.train_x, ds.train_y, transform),
        batch_size=cfg.optim.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=min(4, os.cpu_count() or 1),
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    torch.manual_seed(0)
    model = build_model(cfg, 10).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    criterion = torch.nn.CrossEntropyLoss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model.train()
    start, seen = 0.0, 0
    for i, (x, y) in enumerate(loader):
        if i == warmup:
            _sync(device)
            start = time.perf_counter()
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = criterion(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss.item()  # as users' loops do, to print a running loss
        if i >= warmup:
            seen += x.shape[0]
    _sync(device)
    return seen / (time.perf_counter() - start), peak_memory_mb(device)


def bf16_peak_flops(gpu_name: str) -> float | None:
    """The dense bf16 peak of the GPU called ``gpu_name``, or None when not listed."""
    return next(
        (peak for key, peak in BF16_PEAK_FLOPS if re.search(rf"\b{re.escape(key)}\b", gpu_name)),
        None,
    )


def device_peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return bf16_peak_flops(torch.cuda.get_device_name(device))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_bench(
    model: str,
    batch_size: int = 512,
    device: str = "auto",
    steps: int = 20,
    compile_mode: str | None = None,
    model_args: dict | None = None,
) -> BenchResult:
    cfg = bench_config(model, batch_size, device, compile_mode=compile_mode, model_args=model_args)
    span, ours_mem = measure_ours(cfg, steps)
    ours = aggregate_images_per_s([span])
    reference, ref_mem = measure_reference(cfg, steps)
    flops = train_flops_per_image(cfg)
    dev = resolve_device(device)
    peak = device_peak_flops(dev)
    return BenchResult(
        model,
        batch_size,
        str(dev),
        ours,
        reference,
        ours_mem,
        ref_mem,
        flops,
        None if peak is None else flops * ours / peak,
        cfg.runtime.compile_mode if cfg.runtime.compile else None,
    )


def _concurrent_worker(args: tuple) -> Span:
    cfg_flat, steps, threads, ready = args
    torch.set_num_threads(threads)  # as a search's worker processes do (OMP_NUM_THREADS)
    try:
        return measure_ours(TrialConfig.from_flat(cfg_flat), steps, ready=ready)[0]
    except BaseException:
        ready.abort()  # the others stop waiting for this process at once
        raise


def concurrent_throughput(
    model: str,
    batch_size: int,
    device: str,
    steps: int,
    processes: int,
    compile_mode: str | None = None,
    model_args: dict | None = None,
) -> float:
    """Aggregate training images/s of ``processes`` worker processes training the same
    model side by side on one device (several small trials per GPU)."""
    import multiprocessing as mp

    cfg = bench_config(model, batch_size, device, compile_mode=compile_mode, model_args=model_args)
    ctx = mp.get_context("spawn")  # CUDA cannot be used in forked children
    with ctx.Manager() as manager:
        # The timeout bounds the wait if a process dies without reaching the barrier.
        ready = manager.Barrier(processes, timeout=300)
        with ctx.Pool(processes) as pool:
            work = (cfg.to_flat(), steps, threads_per_process(processes), ready)
            spans = pool.map(_concurrent_worker, [work] * processes)
    return aggregate_images_per_s(spans)


def measure_models(
    models: list[str],
    batch_size: int,
    device: str,
    steps: int,
    compile_mode: str | None = None,
    model_args: dict | None = None,
    concurrency: list[int] | None = None,
    on_measured: Callable[[str, BenchResult | dict[int, float]], None] = lambda m, r: None,
) -> dict[str, BenchResult | dict[int, float]]:
    """``cli.py bench``: per model, ``run_bench``'s figures, or with ``concurrency`` the
    aggregate images/s of each number of processes. Every name is checked before any
    timing starts (a typo in the last one must not cost the first one's minutes).
    ``on_measured(model, figures so far)`` follows each measurement, so that a run stopped
    by a time limit has already shown what it measured."""
    for name in models:
        bench_config(name, batch_size, device, compile_mode=compile_mode, model_args=model_args)
    args = (batch_size, device, steps)
    measured = {}
    for name in models:
        if concurrency:
            rates: dict[int, float] = {}
            for n in concurrency:
                rates[n] = concurrent_throughput(name, *args, n, compile_mode, model_args)
                on_measured(name, rates)
            measured[name] = rates
        else:
            measured[name] = run_bench(name, *args, compile_mode, model_args)
            on_measured(name, measured[name])
    return measured
