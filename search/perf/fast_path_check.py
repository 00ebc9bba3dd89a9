"""Does the fast path learn as well as plain fp32 on real images?

Every seed trains the same config twice on the same stratified holdout of the training
split: once the way a search trial runs (bf16 autocast and channels_last, and
torch.compile when the config asks for it) and once in fp32 with the default memory
layout. The two arms are compared seed by seed (``search.stats``, a paired design), so a
precision effect is told apart from seed noise. The test split is never read.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from search import stats
from search.config import TrialConfig
from search.training import Dataset, NonFiniteLossError, TrainData, resolve_device, train_one
from search.training import device as device_mod
from search.training.protocols import fold_indices, make_fold

FAST, FP32 = "fast", "fp32"
ARMS = {
    FAST: {"runtime.bf16": True, "runtime.channels_last": True},
    FP32: {"runtime.bf16": False, "runtime.channels_last": False, "runtime.compile": False},
}


@dataclass(frozen=True)
class ArmRun:
    """One training run of one arm; losses are the training loss of the first and last
    epoch, ``val_acc`` a fraction in [0, 1]. A run that diverged has NaN figures and says
    where in ``diverged``."""

    arm: str
    seed: int
    first_loss: float
    last_loss: float
    val_acc: float
    seconds: float
    images_per_s: float
    diverged: str | None = None


@dataclass(frozen=True)
class FastPathCheck:
    runs: list[ArmRun]
    comparison: stats.Comparison  # the fast arm's validation accuracy against fp32's
    chance: float  # accuracy of guessing the most frequent class
    fast_path_applied: bool  # False where the device ignores bf16/channels_last

    def not_learning(self) -> list[ArmRun]:
        """Runs that diverged, or whose loss did not fall, or whose accuracy is not above
        chance (NaN figures compare false, so diverged runs are among them)."""
        return [
            r for r in self.runs if not (r.last_loss < r.first_loss and r.val_acc > self.chance)
        ]


def check_fast_path(
    cfg: TrialConfig,
    dataset: Dataset,
    seeds: Sequence[int],
    on_run: Callable[[ArmRun], None] | None = None,
) -> FastPathCheck:
    """Train ``cfg`` with each seed in both arms and compare their validation accuracy."""
    cfg = cfg.with_overrides({"data.kfold": 0})  # one holdout: the same split for every run
    pairs = fold_indices(cfg, dataset)
    runs = []
    for seed in seeds:
        for arm, overrides in ARMS.items():
            arm_cfg = cfg.with_overrides({**overrides, "runtime.seed": seed})
            record = _train(arm, seed, arm_cfg, make_fold(arm_cfg, dataset, 0, pairs))
            runs.append(record)
            if on_run is not None:
                on_run(record)
    # Seeds where either arm diverged drop out of the pairing (and fail not_learning).
    accuracy = {
        arm: {r.seed: r.val_acc for r in runs if r.arm == arm and not r.diverged} for arm in ARMS
    }
    comparison = stats.compare(accuracy[FP32], {FAST: accuracy[FAST]})[0]
    val_labels = torch.as_tensor(dataset.train_y[pairs[0][1]])
    chance = float(torch.bincount(val_labels).max()) / len(val_labels)
    device = resolve_device(cfg.runtime.device)
    return FastPathCheck(runs, comparison, chance, device.type in device_mod.FAST_PATH_DEVICES)


def _train(arm: str, seed: int, cfg: TrialConfig, fold: TrainData) -> ArmRun:
    started = time.perf_counter()
    try:
        result = train_one(cfg, fold)
    except NonFiniteLossError as exc:
        nan = float("nan")
        return ArmRun(arm, seed, nan, nan, nan, time.perf_counter() - started, nan, str(exc))
    timed = result.history[1:] or result.history  # epoch 1 pays for warm-up
    return ArmRun(
        arm,
        seed,
        result.history[0].train_loss,
        result.history[-1].train_loss,
        result.final.accuracy,
        result.train_seconds,
        sum(s.images_per_s for s in timed) / len(timed),
    )
