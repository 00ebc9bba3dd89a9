"""Every figure the tool draws: PNGs with matplotlib's non-interactive backend (works on
headless machines) and Optuna's interactive plots (plotly). Figures take data and a path;
reading the store is left to their callers."""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
from optuna.study import StudyDirection  # noqa: E402
from optuna.trial import FrozenTrial, TrialState  # noqa: E402

if TYPE_CHECKING:
    from search.ablation import AblationOutcome


def save_png(fig: plt.Figure, path: Path) -> Path:
    """Lay ``fig`` out, write it to ``path`` (its folder made) and free it: pyplot keeps
    every open figure alive, and a study draws many."""
    path = Path(path)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def sample_grid(
    images: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str],
    path: Path,
    per_class: int = 8,
    max_classes: int = 10,
    seed: int = 0,
) -> Path:
    """A grid of training images, one row per class, each row titled with its class name,
    so a user can check orientation, colours and labels before spending GPU hours."""
    rng = np.random.default_rng(seed)
    shown = [c for c in range(len(classes)) if (labels == c).any()][:max_classes]
    fig, axes = plt.subplots(
        len(shown), per_class, figsize=(per_class * 1.1, len(shown) * 1.2), squeeze=False
    )
    for row, cls in enumerate(shown):
        idx = np.flatnonzero(labels == cls)
        pick = rng.choice(idx, size=min(per_class, len(idx)), replace=False)
        for col in range(per_class):
            ax = axes[row][col]
            ax.axis("off")
            if col < len(pick):
                ax.imshow(images[pick[col]].transpose(1, 2, 0), interpolation="nearest")
        axes[row][0].set_title(classes[cls], loc="left", fontsize=9)
    return save_png(fig, path)


# a final evaluation --------------------------------------------------------------------
def confusion_png(confusion: np.ndarray, classes: tuple[str, ...], path: Path, title: str) -> Path:
    """Row-normalised confusion matrix (true class rows, predicted class columns)."""
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
                    ax.text(
                        j,
                        i,
                        str(confusion[i, j]),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if rates[i, j] > 0.5 else "black",
                    )
    fig.colorbar(im, ax=ax, fraction=0.046)
    return save_png(fig, path)


def curves_png(histories: dict[str, list], path: Path, title: str) -> Path:
    """Training loss and accuracy per epoch (plus validation when present), one line per
    run (e.g. per seed)."""
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
    return save_png(fig, path)


# a study -------------------------------------------------------------------------------
def study_figures(study: optuna.Study) -> dict[str, Any]:
    """Optuna's history, importance, parallel-coordinate and intermediate-value plots, for
    those the study has enough trials for (importance needs 2 COMPLETE trials and a
    searched parameter, as in optuna-dashboard), and the Pareto front of a study with
    several objectives (whose history and parallel coordinates show the first one)."""
    import optuna.visualization as vis

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    figures: dict[str, Any] = {}
    first: dict[str, Any] = {}
    if len(study.directions) > 1:
        names = study.metric_names or [f"objective {i}" for i in range(len(study.directions))]
        first = {"target": lambda t: t.values[0], "target_name": names[0]}
        if complete and len(names) <= 3:  # Optuna draws the front in 2 or 3 dimensions
            figures["pareto_front"] = vis.plot_pareto_front(study, target_names=names)
    if complete:
        figures["optimization_history"] = vis.plot_optimization_history(study, **first)
        if any(t.params for t in complete):
            figures["parallel_coordinate"] = vis.plot_parallel_coordinate(study, **first)
    if len(complete) >= 2 and len({k for t in complete for k in t.params}) >= 1:
        lowered = {"target": _lower_is_better(study)} if first else {}
        try:
            with _target_sign_handled():
                figures["param_importances"] = vis.plot_param_importances(
                    study, **lowered, target_name=first.get("target_name", "Objective Value")
                )
        except (ValueError, RuntimeError):  # e.g. every complete trial has the same params
            pass
    if any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
        figures["intermediate_values"] = vis.plot_intermediate_values(study)
    return figures


def _lower_is_better(study: optuna.Study) -> Callable[[FrozenTrial], float]:
    """The first objective as importance evaluators want a target: lower is better (what
    PED-ANOVA assumes once a target is given), so a maximized value is negated."""
    if study.directions[0] == StudyDirection.MAXIMIZE:
        return lambda t: -t.values[0]
    return lambda t: t.values[0]


@contextlib.contextmanager
def _target_sign_handled() -> Iterator[None]:
    """PED-ANOVA warns on every call with a target that it favours low values; that is
    what ``_lower_is_better`` gives it, so the warning would only confuse users."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="PedAnovaImportanceEvaluator computes")
        yield


def history_png(study: optuna.Study, metric: str, maximize: bool, path: Path) -> Path:
    """Each COMPLETE trial's value (of the first objective), pruned trials at their last
    reported value, and the best value so far."""
    fig, ax = plt.subplots(figsize=(7, 4))
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED and t.intermediate_values]
    ax.scatter([t.number for t in complete], [t.values[0] for t in complete], label="complete")
    ax.scatter(
        [t.number for t in pruned],
        [t.intermediate_values[max(t.intermediate_values)] for t in pruned],
        marker="x",
        color="grey",
        label="pruned (last report)",
    )
    best, xs, ys = None, [], []
    for t in complete:
        if best is None or (t.values[0] > best if maximize else t.values[0] < best):
            best = t.values[0]
        xs.append(t.number)
        ys.append(best)
    ax.step(xs, ys, where="post", color="red", label="best so far")
    ax.set(xlabel="trial", ylabel=metric, title="optimization history")
    ax.legend()
    ax.grid(alpha=0.3)
    return save_png(fig, path)


def importance_png(study: optuna.Study, path: Path) -> Path | None:
    """Optuna's default parameter importance (PED-ANOVA in Optuna 5), COMPLETE trials only;
    for the first objective of a multi-objective study."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2 or not any(t.params for t in complete):
        return None
    try:
        target = _lower_is_better(study) if len(study.directions) > 1 else None
        with _target_sign_handled():
            importance = optuna.importance.get_param_importances(study, target=target)
    except (ValueError, RuntimeError):
        return None
    names = list(importance)[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(names) + 1.5))
    ax.barh(names, [importance[n] for n in names])
    ax.set(xlabel="importance", title=f"parameter importance ({len(complete)} complete trials)")
    return save_png(fig, path)


def parallel_png(study: optuna.Study, metric: str, path: Path) -> Path | None:
    """Parallel coordinates of COMPLETE trials: one axis per parameter (scaled to [0, 1];
    log-scaled when the distribution is), lines coloured by the (first) objective."""
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE and t.params]
    if not complete:
        return None
    names = sorted({k for t in complete for k in t.params})
    columns = []
    for name in names:
        dist = next(t.distributions[name] for t in complete if name in t.distributions)
        raw = [t.params.get(name) for t in complete]
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            values = [np.nan if v is None else dist.choices.index(v) for v in raw]
            lo, hi = 0, max(1, len(dist.choices) - 1)
        else:
            log = getattr(dist, "log", False)
            values = [np.nan if v is None else (np.log10(v) if log else v) for v in raw]
            lo = np.log10(dist.low) if log else dist.low
            hi = np.log10(dist.high) if log else dist.high
        columns.append((np.array(values, dtype=float) - lo) / ((hi - lo) or 1))
    data = np.stack(columns, axis=1)
    values = np.array([t.values[0] for t in complete])
    colours = plt.cm.viridis((values - values.min()) / ((values.max() - values.min()) or 1))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(names)), 4))
    for row, colour in zip(data, colours):
        ax.plot(range(len(names)), row, color=colour, alpha=0.8)
    ax.set_xticks(range(len(names)), names, rotation=20)
    ax.set_yticks([0, 1], ["low", "high"])
    ax.set_title(f"parallel coordinates (colour: {metric}, yellow = high)")
    return save_png(fig, path)


def best_curves_png(series: Mapping[str, Sequence[Any]], path: Path, title: str) -> Path | None:
    """A trial's per-epoch training and validation loss and accuracy: ``series`` maps
    ``train_loss``, ``val_loss``, ``train_acc`` and ``val_acc`` (or ``fold<k>.``-prefixed
    ones, a line per fold) to MLflow metric points (with ``step`` = epoch and ``value``)."""
    if not any(series.values()):
        return None
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for key, points in series.items():
        points = sorted(points, key=lambda m: m.step)
        ax = ax_loss if key.endswith("loss") else ax_acc
        scale = 1 if key.endswith("loss") else 100
        ax.plot([m.step for m in points], [m.value * scale for m in points], label=key)
    ax_loss.set(xlabel="epoch", ylabel="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)")
    for ax in (ax_loss, ax_acc):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return save_png(fig, path)


def pareto_png(
    measures: Sequence[str],
    directions: Sequence[str],
    points: Sequence[tuple[int, Sequence[float]]],
    front: set[int],
    retrained: Mapping[int, tuple[float, float, int]],
    path: Path,
) -> Path:
    """A multi-objective study's COMPLETE trials: the validation measure (the first one)
    against each cost measure (one panel each; against each other objective when there is
    no cost), the Pareto front highlighted and joined, and the retrained trials marked with
    their test accuracy (``retrained``: trial -> (mean, sd, seeds))."""
    from search.study.objectives import COST_MEASURES, MEASURES, VALIDATION_MEASURES

    y = next(i for i, m in enumerate(measures) if m in VALIDATION_MEASURES)
    xs = [i for i, m in enumerate(measures) if m in COST_MEASURES] or [
        i for i in range(len(measures)) if i != y
    ]
    fig, axes = plt.subplots(1, len(xs), figsize=(6.5 * len(xs), 4.8), squeeze=False)
    scale = 100 if measures[y] in ("val_acc", "val_top5") else 1
    for ax, x in zip(axes[0], xs):
        others = [p for p in points if p[0] not in front]
        on = sorted((p for p in points if p[0] in front), key=lambda p: p[1][x])
        ax.scatter(
            [p[1][x] for p in others],
            [p[1][y] * scale for p in others],
            color="#9aa5b1",
            label="dominated",
        )
        # With two objectives the front is a staircase in this plane and a line joins it;
        # with more it is a projection (front trials can look dominated here): markers only.
        two = len(measures) == 2
        ax.plot(
            [p[1][x] for p in on],
            [p[1][y] * scale for p in on],
            "o-" if two else "o",
            color="#d62728",
            label=f"Pareto front ({len(on)}{'' if two else ', on all objectives'})",
        )
        for number, values in on:
            ax.annotate(
                str(number),
                (values[x], values[y] * scale),
                fontsize=8,
                xytext=(4, 4),
                textcoords="offset points",
            )
        for number, (mean, sd, seeds) in retrained.items():
            values = next((v for n, v in points if n == number), None)
            if values is None:
                continue
            ax.scatter(
                [values[x]],
                [values[y] * scale],
                marker="*",
                s=250,
                color="gold",
                edgecolors="black",
                zorder=5,
            )
            ax.annotate(
                f"trial {number}: test {100 * mean:.2f} ± {100 * sd:.2f}% ({seeds} seeds)",
                (values[x], values[y] * scale),
                fontsize=8,
                xytext=(6, -14),
                textcoords="offset points",
            )
        ax.scatter(
            [],
            [],
            marker="*",
            s=120,
            color="gold",
            edgecolors="black",
            label="retrained (test accuracy)",
        )
        if measures[x] in ("params", "train_flops"):
            ax.set_xscale("log")
        ax.set(
            xlabel=f"{measures[x]}: {MEASURES[measures[x]][1]}",
            ylabel=f"{measures[y]}{' (%)' if scale == 100 else ''} ({directions[y]})",
            title=f"{measures[y]} against {measures[x]}",
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_png(fig, path)


# an ablation ---------------------------------------------------------------------------
def ablation_png(outcome: AblationOutcome, path: Path) -> Path:
    """Mean accuracy per variant with 95% t-intervals over seeds as error bars."""
    from scipy import stats as st

    names, means, errs = [], [], []
    for v in outcome.variants:
        acc = np.array([r.accuracy for r in outcome.of(v.name)]) * 100
        names.append(v.name)
        means.append(acc.mean())
        errs.append(
            st.t.ppf(0.975, len(acc) - 1) * acc.std(ddof=1) / math.sqrt(len(acc))
            if len(acc) > 1
            else 0.0
        )
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(names)), 4))
    colours = ["#4c72b0"] + ["#dd8452"] * (len(names) - 1)
    ax.bar(names, means, yerr=errs, capsize=5, color=colours)
    low = min(m - e for m, e in zip(means, errs))
    ax.set_ylim(max(0, low - 5), min(100, max(m + e for m, e in zip(means, errs)) + 2))
    ax.set_ylabel(f"{outcome.split} accuracy (%)")
    ax.set_title(f"ablation: mean ± 95% CI over {len(outcome.seeds)} paired seeds")
    ax.tick_params(axis="x", rotation=30)
    return save_png(fig, path)
