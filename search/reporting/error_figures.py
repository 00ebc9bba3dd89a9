"""Figures of a final model's errors on the test split (see ``error_analysis``): the most
confidently wrong images, per-class accuracy and the reliability diagram. PNGs drawn with
matplotlib's non-interactive backend, like ``figures``: each takes data and a path and
returns the path (None when there is nothing to draw)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from search.reporting.error_analysis import CalibrationBin  # noqa: E402
from search.reporting.figures import percent_axis, save_png  # noqa: E402


def _hwc(image: np.ndarray) -> np.ndarray:
    """A (3, H, W) or (H, W, 3) uint8 image as (H, W, 3) for imshow."""
    image = np.asarray(image)
    return image.transpose(1, 2, 0) if image.shape[0] == 3 and image.shape[-1] != 3 else image


def wrong_images_png(
    images_uint8: np.ndarray,
    labels: np.ndarray,
    probabilities: np.ndarray,
    indices: Sequence[int] | np.ndarray,
    classes: Sequence[str],
    path: Path,
    columns: int = 5,
) -> Path | None:
    """A grid of the test images at ``indices`` (the most confidently wrong ones), each
    titled with its true class, the predicted class and the prediction's probability.
    ``images_uint8``: the raw (N, 3, H, W) test images."""
    indices = [int(i) for i in indices]
    if not indices:
        return None
    columns = min(columns, len(indices))
    rows = math.ceil(len(indices) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.9, rows * 2.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, indices):
        predicted = int(np.argmax(probabilities[i]))
        ax.imshow(_hwc(images_uint8[i]), interpolation="nearest")
        ax.set_title(
            f"true: {classes[int(labels[i])]}\npred: {classes[predicted]}\n"
            f"{100 * float(probabilities[i][predicted]):.1f}% (#{i})",
            fontsize=8,
            color="#b22222" if predicted != int(labels[i]) else "black",
        )
    fig.suptitle("most confident mistakes (test split)")
    return save_png(fig, path)


def per_class_png(
    per_class_accuracy: Sequence[float], classes: Sequence[str], path: Path
) -> Path | None:
    """Per-class accuracy as horizontal bars sorted from worst (top) to best, each with its
    value up to 40 classes, and the mean as a line (its legend beside the axes); small
    labels past 40 classes, so 100 classes stay readable. Classes without test images
    (NaN) are left out."""
    shown = sorted(
        (float(a), c) for a, c in zip(per_class_accuracy, classes) if not math.isnan(float(a))
    )
    if not shown:
        return None
    n = len(shown)
    font = 9 if n <= 40 else 6
    fig, ax = plt.subplots(figsize=(8, max(3.0, 0.17 * n + 1.2)), layout="constrained")
    values = [100 * a for a, _ in shown]
    colours = plt.cm.RdYlGn(np.array(values) / 100)
    bars = ax.barh(range(n), values, color=colours, height=0.8)
    if n <= 40:
        ax.bar_label(bars, [f"{v:.1f}%" for v in values], padding=2, fontsize=7)
    ax.set_yticks(range(n), [c for _, c in shown], fontsize=font)
    mean = float(np.mean(values))
    ax.axvline(mean, color="black", linestyle="--", linewidth=1, label=f"mean {mean:.1f}%")
    ax.set_xlim(0, 100)
    ax.set_ylim(n - 0.5, -0.5)  # worst on top
    ax.set(xlabel="test accuracy", title=f"per-class accuracy ({n} classes, worst on top)")
    percent_axis(ax.xaxis)
    ax.grid(axis="x", alpha=0.3)
    fig.legend(loc="outside right upper", fontsize=8)
    return save_png(fig, path)


def reliability_png(bins: Sequence[CalibrationBin], ece: float, path: Path) -> Path:
    """Reliability diagram: accuracy per confidence bin (bars) and the bin's mean
    confidence (diamonds), joined by the gap between them, against the diagonal of perfect
    calibration; below it how many predictions fall in each bin (log scale); the expected
    calibration error in the title. Solid colours only, so the legend's are the plot's."""
    fig, (ax, ax_count) = plt.subplots(
        2, 1, figsize=(8, 6.5), sharex=True, height_ratios=[3, 1], layout="constrained"
    )
    lower = np.array([b.lower for b in bins])
    width = np.array([b.upper - b.lower for b in bins])
    counts = np.array([b.count for b in bins])
    filled = counts > 0
    acc = np.array([b.accuracy for b in bins])[filled]
    conf = np.array([b.confidence for b in bins])[filled]
    middle = (lower + width / 2)[filled]
    ax.bar(
        lower[filled],
        acc,
        width=width[filled],
        align="edge",
        color="#4c72b0",
        edgecolor="white",
        label="accuracy in the bin",
    )
    ax.vlines(
        middle,
        np.minimum(acc, conf),
        np.maximum(acc, conf),
        color="#c44e52",
        linewidth=2.5,
        label="gap to mean confidence",
    )
    ax.plot(middle, conf, "D", color="#222222", markersize=5, label="mean confidence in the bin")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
    ax.set_title(f"reliability diagram: ECE {100 * ece:.2f}% ({counts.sum():,} predictions)")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()  # bars first, as the eye reads them
    order = sorted(range(len(labels)), key=lambda i: not labels[i].startswith("accuracy"))
    fig.legend(
        [handles[i] for i in order],
        [labels[i] for i in order],
        loc="outside right upper",
        fontsize=8,
    )
    ax_count.bar(lower, counts, width=width, align="edge", color="#55a868", edgecolor="white")
    if counts.max(initial=0) > 0:
        ax_count.set_yscale("log")
    ax_count.set(xlabel="confidence (top probability)", ylabel="predictions")
    ax_count.grid(alpha=0.3)
    percent_axis(ax.yaxis, 1)
    percent_axis(ax_count.xaxis, 1)
    return save_png(fig, path)
