"""What checkpoints cost: each model trained once with a checkpoint after every epoch
(``runtime.checkpoint_every = 1``, the real atomic write: temporary file, fsync, rename),
on CIFAR-shaped data. Prints per model the bytes and milliseconds per checkpoint (the
write runs while the next epoch trains), the milliseconds the training loop stood still
for each (copying the state off the device, waiting for the write before), the seconds per
epoch, and the share of training time the loop stood still (target: at most 2%).

    python benchmarks/checkpoint_cost.py                          # resnet20, se_resnet18
    python benchmarks/checkpoint_cost.py --data-dir ../shared/data/cifar-sample
    python benchmarks/checkpoint_cost.py --device cuda --images 50000 --epochs 3

Without --data-dir the images are synthetic (CIFAR-10 shape); the time per epoch grows with
--images, the checkpoint's size and write time do not (they depend on the model only).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(model: str, args: argparse.Namespace, folder: Path) -> dict:
    from search.config import TrialConfig
    from search.store.checkpoints import COST, Checkpoint
    from search.training import Checkpointing, final_run, load_dataset
    from search.training.run_state import SAVE_WAIT

    dataset = "cifar10" if args.data_dir else "synthetic"
    cfg = TrialConfig.from_flat(
        {
            "model.name": model,
            "data.dataset": dataset,
            "data.synthetic_size": args.images,
            "optim.epochs": args.epochs,
            "optim.batch_size": args.batch_size,
            "aug.preset": "full",
            "runtime.device": args.device,
        }
    )
    data = load_dataset(cfg, args.data_dir)
    checkpoint = Checkpoint(folder / f"{model}.pt", "benchmark")
    before = (COST.writes, COST.bytes, COST.seconds, SAVE_WAIT.seconds)
    result = final_run(cfg, data, checkpointing=Checkpointing(save=checkpoint.save))
    writes = COST.writes - before[0]
    stood_still = SAVE_WAIT.seconds - before[3]
    return {
        "model": model,
        "images": len(data.train_y),
        "epoch_s": result.train_seconds / len(result.history),
        "mb": (COST.bytes - before[1]) / writes / 2**20,
        "ms": 1000 * (COST.seconds - before[2]) / writes,
        "wait_ms": 1000 * stood_still / writes,
        # the waits happen inside train_seconds: share of the training run's wall time
        "share": stood_still / result.train_seconds,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet20,se_resnet18")
    parser.add_argument("--data-dir", default=None, help="a CIFAR-10 folder; default synthetic")
    parser.add_argument("--images", type=int, default=2000, help="synthetic training images")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    print(
        "model         images   s/epoch   MB/checkpoint   ms/write   ms stood still   "
        "share of training"
    )
    worst = 0.0
    with tempfile.TemporaryDirectory(prefix="checkpoint-cost-") as tmp:
        for model in args.models.split(","):
            r = measure(model, args, Path(tmp))
            worst = max(worst, r["share"])
            print(
                f"{r['model']:<12}  {r['images']:>6}  {r['epoch_s']:>8.2f}  {r['mb']:>14.2f}  "
                f"{r['ms']:>9.1f}  {r['wait_ms']:>15.1f}  {100 * r['share']:>16.2f}%",
                flush=True,
            )
    print(f"target: at most 2% of training time; worst here {100 * worst:.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
