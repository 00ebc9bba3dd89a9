"""Does ``runtime.deterministic = true`` give identical values twice on this device? One
config is trained twice with it on and twice with it off (CIFAR-shaped synthetic data, the
'full' augmentation); prints, per setting, whether the two runs' per-epoch metrics and final
weights are equal bit for bit, and the seconds per epoch (the price of deterministic kernels).

    python benchmarks/determinism.py                     # resnet20 on the CPU
    python benchmarks/determinism.py --device cuda --model se_resnet18 --images 10000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def train(args: argparse.Namespace, deterministic: bool):
    from search.config import TrialConfig
    from search.training import final_run, load_dataset

    cfg = TrialConfig.from_flat(
        {
            "model.name": args.model,
            "data.dataset": "synthetic",
            "data.synthetic_size": args.images,
            "optim.epochs": args.epochs,
            "optim.batch_size": args.batch_size,
            "aug.preset": "full",
            "runtime.device": args.device,
            "runtime.deterministic": deterministic,
            "runtime.seed": 0,
        }
    )
    return final_run(cfg, load_dataset(cfg, None))


def same_run(a, b) -> tuple[bool, bool]:
    """(per-epoch metrics equal, final weights equal), both bit for bit."""
    import torch

    def figures(r):
        return [{k: v for k, v in s.metrics().items() if k not in ("seconds", "images_per_s")}
                for s in r.history]  # fmt: skip

    weights = a.state_dict.keys() == b.state_dict.keys() and all(
        torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict
    )
    return figures(a) == figures(b) and a.final.accuracy == b.final.accuracy, weights


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--images", type=int, default=1000, help="synthetic training images")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    print(f"{args.model}, {args.images} images, {args.epochs} epochs, batch {args.batch_size}, "
          f"{args.device}")  # fmt: skip
    print("runtime.deterministic   metrics equal   weights equal   s/epoch   final accuracy")
    for deterministic in (True, False):
        first, second = train(args, deterministic), train(args, deterministic)
        metrics, weights = same_run(first, second)
        epoch_s = second.train_seconds / len(second.history)
        print(f"{str(deterministic).lower():<22}  {str(metrics):<14}  {str(weights):<14}  "
              f"{epoch_s:>7.2f}   {first.final.accuracy:.4f} / {second.final.accuracy:.4f}",
              flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
