"""What data a run read, recorded on its MLflow run as dataset inputs: for a trial its
training and validation rows, for a final run its training rows and the test split. The
trial objective and the final retrain both call ``log_data_inputs``."""

from __future__ import annotations

import numpy as np

from search.config import TrialConfig
from search.store import Tracker
from search.store.tracker import DataUse
from search.training import Dataset
from search.training.protocols import fold_indices
from search.training.splits import training_indices


def log_data_inputs(
    tracker: Tracker, run_id: str, dataset: Dataset, cfg: TrialConfig, *, final: bool = False
) -> None:
    """Record on ``run_id`` the data that ``cfg`` reads from ``dataset``, as MLflow dataset
    inputs (``Tracker.log_dataset``): for a trial, its training and its validation rows (of
    every fold with ``data.kfold``); for a final run (``final``: train + validation, then
    the test split once), its training rows and the test split. Each input carries the
    fingerprint and count of its rows; every one the dataset's name, source, whole-content
    digest and split sizes."""
    d = cfg.data
    if final:
        train_idx = training_indices(dataset, d.train_limit, d.seed)
        uses = [
            DataUse("training", dataset.rows_digest("train", train_idx), {"rows": len(train_idx)}),
            DataUse("test", dataset.rows_digest("test"), {"rows": len(dataset.test_y)}),
        ]
    else:
        pairs = fold_indices(cfg, dataset)
        uses = [
            _data_use("training", dataset, [train for train, _ in pairs]),
            _data_use("validation", dataset, [val for _, val in pairs]),
        ]
    sizes = {"dataset_train_rows": len(dataset.train_y), "classes": dataset.num_classes}
    if final:  # a trial never reads the test split, not even to count it
        sizes["dataset_test_rows"] = len(dataset.test_y)
    tracker.log_dataset(
        run_id,
        dataset.name,
        dataset.digest,
        dataset.source,
        uses,
        sizes=sizes,
        image_shape=dataset.train_x.shape[1:],
    )


def _data_use(context: str, dataset: Dataset, folds: list[np.ndarray]) -> DataUse:
    """The rows of the training split that ``folds`` (one index set per fold) read."""
    sizes: dict = {"rows": len(folds[0])}
    if len(folds) > 1:
        sizes.update(folds=len(folds), rows_per_fold=[len(f) for f in folds])
    return DataUse(context, dataset.rows_digest("train", *folds), sizes)
