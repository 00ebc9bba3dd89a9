"""Where a FINAL model goes wrong, from its test-split outputs: the most confused class
pairs, calibration (expected calibration error and a reliability diagram's bins), per-class
accuracy and the most confidently wrong images.

Computed once from the final evaluation (softmax probabilities and labels of the test
split), never during a search. numpy only: the figures are in ``error_figures`` and the
class-activation maps in ``gradcam``; ``write_json`` / ``read_json`` carry an analysis to
MLflow (``error_analysis.json``) and back to ``report``, which never recomputes it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

JSON_NAME = "error_analysis.json"


class ConfusedPair(NamedTuple):
    """``count`` test images of class ``true`` predicted as ``predicted``; ``share``: that
    count as a fraction of the true class's test images."""

    true: str
    predicted: str
    count: int
    share: float


class CalibrationBin(NamedTuple):
    """Predictions whose confidence (max probability) lies in ``(lower, upper]`` (the
    first bin includes 0); ``confidence`` and ``accuracy`` are NaN for an empty bin."""

    lower: float
    upper: float
    count: int
    confidence: float
    accuracy: float


class Mistake(NamedTuple):
    """A wrong prediction: test image ``index``, its class, the predicted class and the
    probability given to the prediction."""

    index: int
    true: str
    predicted: str
    confidence: float


@dataclass(frozen=True)
class ErrorAnalysis:
    """Error analysis of one model on the test split; fractions are in [0, 1].

    ``per_class_accuracy`` is NaN for a class without test images; ``confident_mistakes``
    are the wrong predictions with the highest confidence, most confident first."""

    classes: tuple[str, ...]
    n_images: int
    accuracy: float
    mean_confidence: float
    ece: float
    bins: tuple[CalibrationBin, ...]
    confused_pairs: tuple[ConfusedPair, ...]
    per_class_accuracy: tuple[float, ...]
    confident_mistakes: tuple[Mistake, ...]

    @property
    def mistake_indices(self) -> np.ndarray:
        """Test-image indices of ``confident_mistakes`` (for the image figures)."""
        return np.array([m.index for m in self.confident_mistakes], dtype=np.int64)


def _check(probabilities: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels)
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise ValueError(f"probabilities must be (N, C) with C >= 2, got shape {probs.shape}")
    if y.shape != (probs.shape[0],):
        raise ValueError(f"labels must be ({probs.shape[0]},), got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integers, got {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= probs.shape[1]):
        raise ValueError(f"labels must lie in [0, {probs.shape[1]}), got {y.min()}..{y.max()}")
    return probs, y.astype(np.int64)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts with true classes in rows and predicted classes in columns."""
    flat = np.asarray(labels, dtype=np.int64) * n_classes + np.asarray(predictions, np.int64)
    return np.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def confused_pairs(
    confusion: np.ndarray, classes: Sequence[str], top: int = 10
) -> list[ConfusedPair]:
    """The ``top`` off-diagonal cells of ``confusion`` (true rows, predicted columns) with
    the most images, most first; ties by share of the true class, then class order."""
    confusion = np.asarray(confusion)
    n = len(classes)
    if confusion.shape != (n, n):
        raise ValueError(f"confusion must be ({n}, {n}) for {n} classes, got {confusion.shape}")
    support = confusion.sum(axis=1)
    cells = [
        (-int(confusion[t, p]), -confusion[t, p] / support[t], t, p)
        for t in range(n)
        for p in range(n)
        if t != p and confusion[t, p] > 0
    ]
    return [
        ConfusedPair(classes[t], classes[p], -count, float(-share))
        for count, share, t, p in sorted(cells)[: max(0, top)]
    ]


def calibration(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = 15
) -> tuple[float, tuple[CalibrationBin, ...]]:
    """Expected calibration error (Guo et al. 2017) and the bins of a reliability diagram.

    Confidence is the top probability; ``bins`` equal-width bins ``(lower, upper]`` over
    [0, 1]; ECE = sum over bins of (bin size / N) * |accuracy - mean confidence|."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    probs, y = _check(probabilities, labels)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    # right-closed bins: a confidence equal to an inner edge belongs to the bin below it
    which = np.searchsorted(edges[1:-1], confidence, side="left")
    out, ece = [], 0.0
    for b in range(bins):
        members = which == b
        count = int(members.sum())
        conf = float(confidence[members].mean()) if count else math.nan
        acc = float(correct[members].mean()) if count else math.nan
        if count:
            ece += count / len(y) * abs(acc - conf)
        out.append(CalibrationBin(float(edges[b]), float(edges[b + 1]), count, conf, acc))
    return float(ece), tuple(out)


def most_confident_mistakes(
    probabilities: np.ndarray, labels: np.ndarray, n: int = 25
) -> np.ndarray:
    """Indices of the wrong predictions, most confident (top probability) first; ties by
    index. At most ``n``."""
    probs, y = _check(probabilities, labels)
    wrong = np.flatnonzero(probs.argmax(axis=1) != y)
    order = np.argsort(-probs[wrong].max(axis=1), kind="stable")
    return wrong[order][: max(0, n)]


def per_class_accuracy(confusion: np.ndarray) -> np.ndarray:
    """Recall of each class (diagonal over row sums); NaN where a class has no images."""
    support = confusion.sum(axis=1)
    out = np.full(len(support), np.nan)
    np.divide(np.diag(confusion), support, out=out, where=support > 0)
    return out


def analyse(
    probabilities: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str],
    *,
    top: int = 10,
    bins: int = 15,
    mistakes: int = 25,
) -> ErrorAnalysis:
    """The error analysis of a final model from its test-split softmax ``probabilities``
    (N, C) and integer ``labels`` (N,)."""
    probs, y = _check(probabilities, labels)
    if probs.shape[1] != len(classes):
        raise ValueError(f"probabilities have {probs.shape[1]} columns for {len(classes)} classes")
    predictions = probs.argmax(axis=1)
    confusion = confusion_matrix(y, predictions, len(classes))
    ece, calibration_bins = calibration(probs, y, bins)
    wrong = most_confident_mistakes(probs, y, mistakes)
    return ErrorAnalysis(
        classes=tuple(classes),
        n_images=len(y),
        accuracy=float((predictions == y).mean()) if len(y) else math.nan,
        mean_confidence=float(probs.max(axis=1).mean()) if len(y) else math.nan,
        ece=ece,
        bins=calibration_bins,
        confused_pairs=tuple(confused_pairs(confusion, classes, top)),
        per_class_accuracy=tuple(per_class_accuracy(confusion).tolist()),
        confident_mistakes=tuple(
            Mistake(int(i), classes[y[i]], classes[predictions[i]], float(probs[i].max()))
            for i in wrong
        ),
    )


# text ----------------------------------------------------------------------------------
def _pct(x: float) -> str:
    return "-" if math.isnan(x) else f"{100 * x:.2f}%"


def _calibration_sentence(analysis: ErrorAnalysis) -> str:
    gap = analysis.mean_confidence - analysis.accuracy
    lean = "over-confident" if gap > 0 else "under-confident" if gap < 0 else "calibrated"
    return (
        f"ECE {_pct(analysis.ece)} ({len(analysis.bins)} bins): mean confidence "
        f"{_pct(analysis.mean_confidence)} vs accuracy {_pct(analysis.accuracy)}, {lean}"
    )


def error_lines(analysis: ErrorAnalysis, top: int = 5) -> list[str]:
    """A few lines for the terminal summary: calibration and the most confused pairs."""
    lines = [f"calibration: {_calibration_sentence(analysis)}"]
    pairs = analysis.confused_pairs[:top]
    if not pairs:
        return [*lines, "no confusions: every test image is classified correctly"]
    lines.append("most confused (true -> predicted: images, % of the true class):")
    width = max(len(f"{p.true} -> {p.predicted}") for p in pairs)
    lines += [
        f"  {f'{p.true} -> {p.predicted}':<{width}}  {p.count:>5}  {_pct(p.share):>7}"
        for p in pairs
    ]
    return lines


def error_markdown(
    analysis: ErrorAnalysis,
    classes: Sequence[str] | None = None,
    figures: Mapping[str, str] | None = None,
    worst: int = 10,
) -> str:
    """A report.md section: confused pairs, calibration, the ``worst`` classes by accuracy,
    and ``figures`` (caption -> file name next to report.md) as images."""
    names = tuple(classes) if classes is not None else analysis.classes
    lines = [
        "## Error analysis (test split)",
        "",
        f"{analysis.n_images} test images, accuracy {_pct(analysis.accuracy)}.",
        "",
        "### Most confused classes",
        "",
    ]
    if analysis.confused_pairs:
        lines += ["| true | predicted | images | % of true class |", "|---|---|---:|---:|"]
        lines += [
            f"| {p.true} | {p.predicted} | {p.count} | {_pct(p.share)} |"
            for p in analysis.confused_pairs
        ]
    else:
        lines.append("No confusions: every test image is classified correctly.")
    lines += ["", "### Calibration", "", _calibration_sentence(analysis) + ".", ""]
    ranked = sorted(
        (acc, i) for i, acc in enumerate(analysis.per_class_accuracy) if not math.isnan(acc)
    )[:worst]
    lines += [f"### Per-class accuracy, worst {len(ranked)}", "", "| class | accuracy |"]
    lines += ["|---|---:|", *(f"| {names[i]} | {_pct(acc)} |" for acc, i in ranked), ""]
    for caption, name in (figures or {}).items():
        lines += [f"![{caption}]({name})", ""]
    return "\n".join(lines)


# JSON (an MLflow artifact) -------------------------------------------------------------
def _clean(x: float) -> float | None:
    return None if math.isnan(x) else x


def _nan(x: float | None) -> float:
    return math.nan if x is None else float(x)


def to_dict(analysis: ErrorAnalysis) -> dict:
    """A JSON-ready dict (NaN written as null)."""
    return {
        "classes": list(analysis.classes),
        "n_images": analysis.n_images,
        "accuracy": _clean(analysis.accuracy),
        "mean_confidence": _clean(analysis.mean_confidence),
        "ece": analysis.ece,
        "bins": [
            {**b._asdict(), "confidence": _clean(b.confidence), "accuracy": _clean(b.accuracy)}
            for b in analysis.bins
        ],
        "confused_pairs": [p._asdict() for p in analysis.confused_pairs],
        "per_class_accuracy": {
            c: _clean(a) for c, a in zip(analysis.classes, analysis.per_class_accuracy)
        },
        "confident_mistakes": [m._asdict() for m in analysis.confident_mistakes],
    }


def write_json(analysis: ErrorAnalysis, path: Path) -> Path:
    """``analysis`` as JSON at ``path`` (``error_analysis.json`` for MLflow)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_dict(analysis), indent=2, allow_nan=False) + "\n")
    return path


def read_json(path: Path) -> ErrorAnalysis:
    """The analysis ``write_json`` wrote (e.g. downloaded from MLflow by ``report``)."""
    data = json.loads(Path(path).read_text())
    classes = tuple(data["classes"])
    return ErrorAnalysis(
        classes=classes,
        n_images=int(data["n_images"]),
        accuracy=_nan(data["accuracy"]),
        mean_confidence=_nan(data["mean_confidence"]),
        ece=float(data["ece"]),
        bins=tuple(
            CalibrationBin(
                b["lower"], b["upper"], b["count"], _nan(b["confidence"]), _nan(b["accuracy"])
            )
            for b in data["bins"]
        ),
        confused_pairs=tuple(ConfusedPair(**p) for p in data["confused_pairs"]),
        per_class_accuracy=tuple(_nan(data["per_class_accuracy"][c]) for c in classes),
        confident_mistakes=tuple(Mistake(**m) for m in data["confident_mistakes"]),
    )
