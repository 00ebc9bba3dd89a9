"""Where a training step's time goes: one torch.profiler trace of our training loop (the
`bench` path: device-resident data, batched augmentation, bf16 + channels_last on CUDA)
over one epoch after a warm-up epoch. Prints the operators by their own time on the device
(CPU when there is none) and the share of the epoch's wall time that the device was busy.
With --ops, instead: the operators one training step dispatches, per phase (augmentation,
forward, backward, optimizer): each is a kernel launch on a GPU, paid in Python and the
dispatcher on the CPU, which is what bounds a small model's step there.

    python benchmarks/profile_step.py --device cuda --model se_resnet18
    python benchmarks/profile_step.py --model resnet20 --width 0.25 --steps 5   # on a CPU
    python benchmarks/profile_step.py --ops --fast-path --batch-size 32 --device cpu

--fast-path runs the CUDA path's bf16 autocast and channels_last on the CPU too (as the
tests do), so that the CPU counts the casts a GPU step launches; the optimizer stays
unfused there (on CUDA it is one fused kernel).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="se_resnet18")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20, help="steps of the profiled epoch")
    parser.add_argument("--width", type=float, default=None)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("--ops", action="store_true", help="count one step's operators")
    parser.add_argument("--fast-path", action="store_true", help="bf16 + channels_last on a CPU")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import numpy as np
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    from search.perf.bench import _synthetic, bench_config
    from search.training import resolve_device, train_one
    from search.training.splits import make_train_data

    extra = {"width": args.width} if args.width else None
    cfg = bench_config(
        args.model, args.batch_size, args.device, compile=args.compile, model_args=extra
    )
    device = resolve_device(cfg.runtime.device)
    ds = _synthetic(args.batch_size * args.steps)
    if args.fast_path:
        from search.training import device as device_mod

        device_mod.FAST_PATH_DEVICES = device_mod.FAST_PATH_DEVICES | {device.type}
    if args.ops:
        return count_ops(cfg, device, ds)
    data = make_train_data(
        ds,
        train_idx=np.arange(len(ds.train_y)),
        eval_split="test",  # no validation pass inside the profiled epoch
        eval_idx=np.arange(len(ds.test_y)),
        device=device,
    )
    train_one(cfg.with_overrides({"optim.epochs": 1}), data)  # warm-up: autotuning, compile
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    start = time.perf_counter()
    with profile(activities=activities) as trace:
        train_one(cfg.with_overrides({"optim.epochs": 1}), data)
    wall = time.perf_counter() - start
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    events = trace.key_averages()
    try:
        print(events.table(sort_by=key, row_limit=args.rows, max_name_column_width=60))
    except (AttributeError, KeyError, ValueError):  # torch before the "device" names
        key = "self_cuda_time_total"
        print(events.table(sort_by=key, row_limit=args.rows, max_name_column_width=60))
    # kernels are their own events (device_type CUDA); an operator's row repeats their time
    on_device = [e for e in events if not cuda or e.device_type != DeviceType.CPU]
    busy = sum(getattr(e, key) for e in on_device) / 1e6
    images = args.batch_size * args.steps
    print(f"{args.model}, batch {args.batch_size}, {args.steps} steps on {device}: "
          f"{wall:.2f} s wall under the profiler, device busy {busy:.2f} s "
          f"({100 * busy / wall:.0f}%); the device's own work is {1000 * busy / args.steps:.1f} "
          f"ms per step, {images / busy:,.0f} images/s if nothing else waited")  # fmt: skip
    return 0


def count_ops(cfg, device, ds) -> int:
    """One training step of ``train_one``'s pieces, its dispatched operators counted per
    phase (the second step: the first one creates the optimizer's state)."""
    import collections

    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from search.training import AugmentPlan, BatchAugment
    from search.training import device as device_mod
    from search.training.loop import _model_for, _optimizer, autocast

    class Count(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops: collections.Counter = collections.Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops[func.overloadpacket.__name__] += 1
            return func(*args, **(kwargs or {}))

    fast = cfg.runtime.channels_last and device.type in device_mod.FAST_PATH_DEVICES
    memory_format = torch.channels_last if fast else torch.contiguous_format
    model, step_model = _model_for(cfg, ds.num_classes, device, memory_format)
    mean, std = ds.mean_std
    augment = BatchAugment(AugmentPlan.from_config(cfg.aug), mean, std, device, fast)
    optimizer = _optimizer(cfg, model, device)
    criterion = torch.nn.CrossEntropyLoss()
    batch = cfg.optim.batch_size
    images = torch.as_tensor(ds.train_x[:batch], device=device)
    labels = torch.as_tensor(ds.train_y[:batch], device=device).long()
    generator = torch.Generator(device=device).manual_seed(0)
    for _ in range(2):
        phases = {name: Count() for name in ("augmentation", "forward", "backward", "optimizer")}
        with phases["augmentation"]:
            inputs = augment.train_batch(images, generator)
        with phases["forward"], autocast(cfg, device):
            loss = criterion(step_model(inputs).float(), labels)
        with phases["backward"]:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        with phases["optimizer"]:
            optimizer.step()
    print(f"{cfg.model.name}, batch {batch} on {device} (bf16 and channels_last: {fast}):")
    for name, counted in phases.items():
        top = ", ".join(f"{op} {n}" for op, n in counted.ops.most_common(6))
        print(f"  {name:<13} {sum(counted.ops.values()):>5} operators  ({top})")
    print(f"  one step      {sum(sum(c.ops.values()) for c in phases.values()):>5} operators")
    return 0


if __name__ == "__main__":
    sys.exit(main())
