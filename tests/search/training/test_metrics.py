"""The evaluation's confusion matrix and macro precision/recall/F1, computed with numpy so
that a search does not import scikit-learn, are scikit-learn's: random predictions,
classes never predicted, classes absent from the labels, a perfect and an empty model."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from search.training import evaluate


def _cases() -> list[tuple[np.ndarray, np.ndarray, int]]:
    rng = np.random.default_rng(0)
    cases = [(rng.integers(0, n, 300), rng.integers(0, n, 300), n) for n in (2, 10, 100)]
    y = rng.integers(0, 10, 200)
    cases.append((y, y.copy(), 10))  # perfect
    cases.append((y, np.zeros_like(y), 10))  # one class predicted for everything
    absent = rng.integers(0, 5, 200)  # classes 5..9 absent from the labels
    cases.append((absent, rng.integers(0, 10, 200), 10))
    return cases


@pytest.mark.parametrize(("y_true", "y_pred", "n"), _cases())
def test_metrics_are_scikit_learns(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> None:
    labels = np.arange(n)
    confusion = evaluate.confusion_matrix(y_true, y_pred, n)
    assert np.array_equal(confusion, confusion_matrix(y_true, y_pred, labels=labels))
    want = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average="macro", zero_division=0
    )[:3]
    assert evaluate.macro_precision_recall_f1(confusion) == pytest.approx(want, abs=1e-12)
