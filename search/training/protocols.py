"""Running one config end to end: load its dataset, put the right split on the device,
train (holdout, every fold of a k-fold, or the final train+val -> test run)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from search.config import TrialConfig
from search.training import datasets, splits
from search.training.datasets import Dataset
from search.training.device import resolve_device
from search.training.loop import EpochStats, TrainResult, train_one
from search.training.run_state import Checkpointing


def load_dataset(cfg: TrialConfig, data_dir: str | os.PathLike | None) -> Dataset:
    d = cfg.data
    return datasets.load(
        d.dataset, data_dir, synthetic_size=d.synthetic_size, synthetic_classes=d.synthetic_classes
    )


def final_run(
    cfg: TrialConfig,
    dataset: Dataset,
    on_epoch: Callable[[EpochStats], bool | None] | None = None,
    checkpointing: Checkpointing | None = None,
) -> TrainResult:
    """Train on the whole training split and evaluate once on the test split."""
    device = resolve_device(cfg.runtime.device)
    data = splits.final_data(dataset, cfg.data.seed, cfg.data.train_limit, device)
    return train_one(cfg, data, on_epoch, checkpointing)


def fold_indices(cfg: TrialConfig, dataset: Dataset) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, validation) index pairs into ``dataset.train_*``: one holdout pair, or k
    stratified folds when ``data.kfold >= 2``."""
    d = cfg.data
    pool = splits.training_indices(dataset, d.train_limit, d.seed)
    labels = dataset.train_y[pool]
    if d.kfold >= 2:
        pairs = splits.kfold_splits(labels, d.kfold, d.seed)
    else:
        pairs = [splits.holdout_split(labels, d.val_fraction, d.seed)]
    return [(pool[tr], pool[va]) for tr, va in pairs]


def make_fold(
    cfg: TrialConfig,
    dataset: Dataset,
    fold: int,
    pairs: list[tuple[np.ndarray, np.ndarray]] | None = None,
) -> splits.TrainData:
    """Fold ``fold`` of ``cfg``'s validation setups (``pairs``: precomputed ``fold_indices``)."""
    train_idx, val_idx = (pairs or fold_indices(cfg, dataset))[fold]
    return splits.make_train_data(
        dataset,
        train_idx=train_idx,
        eval_split="val",
        eval_idx=val_idx,
        device=resolve_device(cfg.runtime.device),
    )


@dataclass
class ValidationResult:
    """Per-fold results and the mean/std validation accuracy over folds."""

    folds: list[TrainResult]

    @property
    def accuracies(self) -> list[float]:
        return [r.final.accuracy for r in self.folds]

    @property
    def mean_accuracy(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def std_accuracy(self) -> float:
        return float(np.std(self.accuracies, ddof=1)) if len(self.folds) > 1 else 0.0


def validate(
    cfg: TrialConfig,
    dataset: Dataset,
    on_epoch: Callable[[int, EpochStats], bool | None] | None = None,
    checkpointing: Callable[[int], Checkpointing | None] | None = None,
) -> ValidationResult:
    """Train on each validation setup in turn; ``on_epoch(fold, stats)``;
    ``checkpointing(fold)`` says how fold ``fold`` is checkpointed (or resumed)."""
    pairs = fold_indices(cfg, dataset)
    results = []
    for fold in range(len(pairs)):
        callback = None if on_epoch is None else (lambda s, f=fold: on_epoch(f, s))
        ck = None if checkpointing is None else checkpointing(fold)
        results.append(train_one(cfg, make_fold(cfg, dataset, fold, pairs), callback, ck))
    return ValidationResult(results)
