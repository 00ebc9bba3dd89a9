"""Where a training step's time goes: one torch.profiler trace of our training loop (the
`bench` path: device-resident data, batched augmentation, bf16 + channels_last on CUDA)
over one epoch after a warm-up epoch. Prints the operators by their own time on the device
(CPU when there is none) and the share of the epoch's wall time that the device was busy.

    python benchmarks/profile_step.py --device cuda --model se_resnet18
    python benchmarks/profile_step.py --model resnet20 --width 0.25 --steps 5   # on a CPU
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
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import numpy as np
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
    busy = sum(getattr(e, key) for e in events) / 1e6
    images = args.batch_size * args.steps
    print(f"{args.model}, batch {args.batch_size}, {args.steps} steps on {device}: "
          f"{wall:.2f} s wall ({images / wall:,.0f} images/s under the profiler), "
          f"device busy {busy:.2f} s ({100 * busy / wall:.0f}% of wall)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
