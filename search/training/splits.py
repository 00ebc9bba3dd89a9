"""Which rows a run trains and is scored on: stratified holdout, stratified k-fold and
subsamples of the training split, moved to the device once as ``TrainData``. The test
split is only ever chosen by ``final_data`` (a final evaluation).

The indices are scikit-learn's, computed once per machine and then read from the cache
(``memo``): a search that starts does not import scikit-learn."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from search.errors import ConfigError
from search.training.datasets import Dataset
from search.training.memo import memoized


@dataclass(frozen=True, eq=False)
class TrainData:
    """What one training run sees, resident on its device: uint8 images and labels of the
    split it trains on and of the split it is evaluated on (``eval_split`` is "val" during
    search, "test" only for a final evaluation)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    eval_x: torch.Tensor
    eval_y: torch.Tensor
    eval_split: str
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def training_indices(dataset: Dataset, train_limit: int, seed: int) -> np.ndarray:
    """Indices of the training split this config trains on (``data.train_limit``)."""
    return subsample(dataset.train_y, train_limit, seed)


def make_train_data(
    dataset: Dataset,
    *,
    train_idx: np.ndarray,
    eval_split: str,
    eval_idx: np.ndarray | None = None,
    device: torch.device | str = "cpu",
) -> TrainData:
    """Move the chosen rows to ``device`` once. ``eval_split="val"`` evaluates on training
    rows ``eval_idx``; ``"test"`` on the whole test split."""
    if eval_split == "val":
        if eval_idx is None:
            raise ValueError("eval_split='val' needs eval_idx")
        eval_x, eval_y = dataset.train_x[eval_idx], dataset.train_y[eval_idx]
    elif eval_split == "test":
        eval_x, eval_y = dataset.test_x, dataset.test_y
    else:
        raise ValueError(f"eval_split must be 'val' or 'test', not {eval_split!r}")
    mean, std = dataset.mean_std

    def put(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(device)

    return TrainData(
        put(dataset.train_x[train_idx]),
        put(dataset.train_y[train_idx]),
        put(eval_x),
        put(eval_y),
        eval_split,
        dataset.classes,
        mean,
        std,
    )


def final_data(
    dataset: Dataset, split_seed: int, train_limit: int, device: torch.device | str
) -> TrainData:
    """The whole training split (train + validation) against the test split."""
    return make_train_data(
        dataset,
        train_idx=training_indices(dataset, train_limit, split_seed),
        eval_split="test",
        device=device,
    )


def subsample(labels: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Indices of a stratified subsample of ``limit`` items (all of them when 0/large)."""
    all_idx = np.arange(len(labels))
    if limit <= 0 or limit >= len(labels):
        return all_idx

    def compute() -> dict[str, np.ndarray]:
        from sklearn.model_selection import train_test_split

        keep, _ = train_test_split(all_idx, train_size=limit, stratify=labels, random_state=seed)
        return {"keep": np.sort(keep)}

    return memoized("subsample", {"labels": labels, "limit": limit, "seed": seed}, compute)["keep"]


def holdout_split(
    labels: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/validation indices (e.g. 45k/5k of CIFAR's 50k at 0.1).

    When the split is too small to hold every class (a few hundred CIFAR-100 images), a
    seeded random split is used instead, with a warning.
    """
    inputs = {"labels": labels, "val_fraction": val_fraction, "seed": seed}
    split = memoized("holdout", inputs, lambda: _holdout(labels, val_fraction, seed))
    if not split["stratified"]:  # said on every run, not only the one that computed it
        warnings.warn(f"validation split not stratified ({split['why'].item()})", stacklevel=2)
    return split["train"], split["val"]


def _holdout(labels: np.ndarray, val_fraction: float, seed: int) -> dict[str, np.ndarray]:
    from sklearn.model_selection import train_test_split

    indices, why = np.arange(len(labels)), ""
    try:
        train_idx, val_idx = train_test_split(
            indices, test_size=val_fraction, stratify=labels, random_state=seed
        )
    except ValueError as exc:
        why = str(exc)
        try:
            train_idx, val_idx = train_test_split(
                indices, test_size=val_fraction, random_state=seed
            )
        except ValueError as exc2:
            raise ConfigError(
                f"cannot make a validation split: {exc2}",
                key="data.val_fraction",
                value=val_fraction,
            ) from None
    return {
        "train": np.sort(train_idx),
        "val": np.sort(val_idx),
        "stratified": np.array(not why),
        "why": np.array(why),
    }


def kfold_splits(labels: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified k-fold (train, validation) indices: validation folds are disjoint and
    together cover the training split."""
    counts = np.bincount(labels)
    min_count = int(counts[counts > 0].min()) if len(labels) else 0
    if k > min_count:
        raise ConfigError(
            f"k-fold needs at least k images of every class (smallest class has {min_count})",
            key="data.kfold",
            value=k,
        )

    def compute() -> dict[str, np.ndarray]:
        from sklearn.model_selection import StratifiedKFold

        folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        split = folds.split(np.zeros(len(labels)), labels)
        return {
            f"{part}{i}": np.sort(rows)
            for i, pair in enumerate(split)
            for part, rows in zip(("train", "val"), pair)
        }

    folds = memoized("kfold", {"labels": labels, "k": k, "seed": seed}, compute)
    return [(folds[f"train{i}"], folds[f"val{i}"]) for i in range(k)]
