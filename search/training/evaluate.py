"""Scoring a trained model on one split: the epoch-end quick check (one host sync) and the
full ``EvalReport`` (confusion matrix, per-class accuracy, macro P/R/F1, inference time)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from search.config import TrialConfig
from search.training.augment import BatchAugment
from search.training.device import autocast, synchronize
from search.training.splits import TrainData


@dataclass(frozen=True)
class EvalReport:
    """Metrics of a model on one split; accuracies are fractions in [0, 1]."""

    split: str
    accuracy: float
    top5: float
    loss: float
    per_class_accuracy: tuple[float, ...]
    confusion: np.ndarray
    precision_macro: float
    recall_macro: float
    f1_macro: float
    n_images: int
    inference_ms_per_image: float
    # softmax of the logits, (n_images, classes) float32: what the error analysis of a
    # final model (confusions, calibration, confident mistakes) is computed from
    probabilities: np.ndarray | None = field(default=None, repr=False, compare=False)

    def metrics(self) -> dict[str, float]:
        keys = (
            "accuracy",
            "top5",
            "loss",
            "precision_macro",
            "recall_macro",
            "f1_macro",
            "inference_ms_per_image",
        )
        return {f"{self.split}_{k}": float(getattr(self, k)) for k in keys}


@torch.no_grad()
def _logits(
    model: torch.nn.Module,
    augment: BatchAugment,
    images: torch.Tensor,
    cfg: TrialConfig,
    device: torch.device,
) -> torch.Tensor:
    model.eval()
    bs = cfg.runtime.eval_batch_size
    out = []
    for start in range(0, images.shape[0], bs):
        with autocast(cfg, device):
            out.append(model(augment.eval_batch(images[start : start + bs])).float())
    return torch.cat(out)


def _topk_correct(logits: torch.Tensor, targets: torch.Tensor, k: int) -> torch.Tensor:
    k = min(k, logits.shape[1])
    return (logits.topk(k, dim=1).indices == targets[:, None]).any(dim=1)


def quick_eval(
    model: torch.nn.Module,
    augment: BatchAugment,
    data: TrainData,
    cfg: TrialConfig,
    device: torch.device,
) -> dict[str, float]:
    """Validation loss, accuracy and top-5 with one host sync."""
    logits = _logits(model, augment, data.eval_x, cfg, device)
    loss = F.cross_entropy(logits, data.eval_y)
    acc = (logits.argmax(1) == data.eval_y).float().mean()
    top5 = _topk_correct(logits, data.eval_y, 5).float().mean()
    val_loss, val_acc, val_top5 = torch.stack([loss, acc, top5]).tolist()
    return {"val_loss": val_loss, "val_acc": val_acc, "val_top5": val_top5}


def evaluate(
    model: torch.nn.Module,
    augment: BatchAugment,
    images: torch.Tensor,
    labels: torch.Tensor,
    classes: tuple[str, ...],
    split: str,
    cfg: TrialConfig,
    device: torch.device,
) -> EvalReport:
    """Full metrics on one split: accuracy, top-5, loss, per-class accuracy, confusion
    matrix, macro precision/recall/F1 and inference time per image."""
    synchronize(device)
    start = time.perf_counter()
    logits = _logits(model, augment, images, cfg, device)
    synchronize(device)
    ms_per_image = (time.perf_counter() - start) * 1000 / max(1, images.shape[0])
    loss = F.cross_entropy(logits, labels).item()
    top5 = _topk_correct(logits, labels, 5).float().mean().item()
    y_true = labels.cpu().numpy()
    y_pred = logits.argmax(1).cpu().numpy()
    n = len(classes)
    confusion = confusion_matrix(y_true, y_pred, n)
    support = confusion.sum(axis=1)
    per_class = np.divide(np.diag(confusion), support, out=np.zeros(n), where=support > 0)
    precision, recall, f1 = macro_precision_recall_f1(confusion)
    return EvalReport(
        split=split,
        accuracy=float((y_true == y_pred).mean()),
        top5=top5,
        loss=loss,
        per_class_accuracy=tuple(per_class.tolist()),
        confusion=confusion,
        precision_macro=float(precision),
        recall_macro=float(recall),
        f1_macro=float(f1),
        n_images=len(y_true),
        inference_ms_per_image=ms_per_image,
        probabilities=torch.softmax(logits, dim=1).cpu().numpy().astype(np.float32),
    )


# scikit-learn's confusion_matrix and precision_recall_fscore_support(average="macro",
# zero_division=0), from the confusion matrix: every trial evaluates, and importing
# scikit-learn would cost each search process 1-2 s (tests compare the two).
def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    """``[true, predicted]`` counts over the labels ``0..n-1``."""
    return np.bincount(y_true * n + y_pred, minlength=n * n).reshape(n, n)


def macro_precision_recall_f1(confusion: np.ndarray) -> tuple[float, float, float]:
    """Means over all classes; a class never predicted (or never present) counts 0."""
    hits = np.diag(confusion).astype(np.float64)
    predicted, present = confusion.sum(axis=0), confusion.sum(axis=1)

    def ratio(num: np.ndarray, den: np.ndarray) -> float:
        return float(np.divide(num, den, out=np.zeros_like(num), where=den > 0).mean())

    return ratio(hits, predicted), ratio(hits, present), ratio(2 * hits, present + predicted)
