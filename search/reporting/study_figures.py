"""Figures of a study and of a final evaluation (plotly for Optuna's plots, matplotlib
for PNGs)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState


def study_figures(study: optuna.Study) -> dict[str, Any]:
    """Optuna's history, importance, parallel-coordinate and intermediate-value plots, for
    those the study has enough trials for (importance needs 2 COMPLETE trials and a
    searched parameter, as in optuna-dashboard)."""
    import optuna.visualization as vis

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    figures: dict[str, Any] = {}
    if complete:
        figures["optimization_history"] = vis.plot_optimization_history(study)
        if any(t.params for t in complete):
            figures["parallel_coordinate"] = vis.plot_parallel_coordinate(study)
    if len(complete) >= 2 and len({k for t in complete for k in t.params}) >= 1:
        try:
            figures["param_importances"] = vis.plot_param_importances(study)
        except (ValueError, RuntimeError):  # e.g. every complete trial has the same params
            pass
    if any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
        figures["intermediate_values"] = vis.plot_intermediate_values(study)
    return figures


def confusion_png(confusion: np.ndarray, classes: tuple[str, ...], path: Path, title: str) -> Path:
    """Row-normalised confusion matrix (true class rows, predicted class columns)."""
    from search.reporting.figures import plt

    n = len(classes)
    rates = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    size = min(4 + n * 0.35, 24)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    if n <= 20:
        ax.set_xticks(range(n), classes, rotation=90)
        ax.set_yticks(range(n), classes)
        for i in range(n):
            for j in range(n):
                if confusion[i, j]:
                    ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if rates[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def curves_png(histories: dict[str, list], path: Path, title: str) -> Path:
    """Training loss and accuracy per epoch (plus validation when present), one line per
    run (e.g. per seed)."""
    from search.reporting.figures import plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for label, history in histories.items():
        epochs = [s.epoch for s in history]
        ax_loss.plot(epochs, [s.train_loss for s in history], label=f"{label} train")
        ax_acc.plot(epochs, [100 * s.train_acc for s in history], label=f"{label} train")
        if history and history[0].val_acc is not None:
            ax_loss.plot(epochs, [s.val_loss for s in history], "--", label=f"{label} val")
            ax_acc.plot(epochs, [100 * s.val_acc for s in history], "--", label=f"{label} val")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
