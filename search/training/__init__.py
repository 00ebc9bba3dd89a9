"""How ONE config is trained and scored: torch (and scikit-learn's splits) only, no Optuna,
MLflow or click, so every piece runs on tiny tensors on the CPU."""

from search.training.augment import AugmentPlan, BatchAugment
from search.training.datasets import Dataset
from search.training.device import (
    peak_memory_mb,
    resolve_device,
    threads_per_process,
)
from search.training.evaluate import EvalReport
from search.training.loop import (
    EpochStats,
    NonFiniteLossError,
    TrainResult,
    build_model,
    lr_factor,
    train_one,
)
from search.training.protocols import (
    ValidationResult,
    final_run,
    load_dataset,
    validate,
)
from search.training.run_state import Checkpointing, StopRequested, position_of
from search.training.splits import TrainData

__all__ = [
    "AugmentPlan",
    "BatchAugment",
    "Checkpointing",
    "Dataset",
    "EpochStats",
    "EvalReport",
    "NonFiniteLossError",
    "StopRequested",
    "TrainData",
    "TrainResult",
    "ValidationResult",
    "build_model",
    "final_run",
    "load_dataset",
    "lr_factor",
    "peak_memory_mb",
    "position_of",
    "resolve_device",
    "threads_per_process",
    "train_one",
    "validate",
]
