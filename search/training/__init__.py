from search.training.augment import AugmentPlan, BatchAugment, PRESETS
from search.training.loop import EpochStats, EvalReport, NonFiniteLossError, TrainResult, build_model, lr_factor, peak_memory_mb, resolve_device, threads_per_process, train_one

__all__ = [
    "AugmentPlan",
    "BatchAugment",
    "EpochStats",
    "EvalReport",
    "NonFiniteLossError",
    "PRESETS",
    "TrainResult",
    "build_model",
    "lr_factor",
    "peak_memory_mb",
    "resolve_device",
    "threads_per_process",
    "train_one",
]
