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
from matplotlib.axis import Axis  # noqa: E402
from matplotlib.ticker import MaxNLocator, PercentFormatter  # noqa: E402
from optuna.study import StudyDirection  # noqa: E402
from optuna.trial import FrozenTrial, TrialState  # noqa: E402

if TYPE_CHECKING:
    from search.ablation import AblationOutcome


ACCURACIES = ("val_acc", "val_top5")  # measures that are fractions, drawn in %


def save_png(fig: plt.Figure, path: Path) -> Path:
    """Lay ``fig`` out (tight, unless it has its own layout engine, e.g. constrained),
    write it to ``path`` (its folder made; legends and labels outside the axes kept) and
    free it: pyplot keeps every open figure alive, and a study draws many."""
    path = Path(path)
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def percent_axis(axis: Axis, whole: float = 100) -> None:
    """Tick labels of ``axis`` (``ax.yaxis``, a colourbar's ...) in %, ``whole`` being 100%."""
    axis.set_major_formatter(PercentFormatter(xmax=whole, decimals=None))


def integer_axis(axis: Axis) -> None:
    """Ticks of ``axis`` only at whole numbers (epochs, trial numbers)."""
    axis.set_major_locator(MaxNLocator(integer=True))


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
    bar = fig.colorbar(im, ax=ax, fraction=0.046, label="share of the true class")
    percent_axis(bar.ax.yaxis, 1)
    return save_png(fig, path)


def _curves_figure(series: Mapping[tuple[str, str, str], Sequence], title: str) -> plt.Figure:
    """Loss and accuracy (in %) per epoch: ``series`` maps (run, split, "loss" or "acc") to
    (epoch, value) pairs. A colour per run (seed, fold; per split for a single run), solid
    for training and dashed for validation, one legend for both panels beside them."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    runs = list(dict.fromkeys(run for run, _, _ in series))
    for (run, split, kind), points in series.items():
        ax = ax_loss if kind == "loss" else ax_acc
        colour = f"C{runs.index(run) % 10}" if len(runs) > 1 else ("C1" if split == "val" else "C0")
        ax.plot(
            [e for e, _ in points],
            [v * (100 if kind == "acc" else 1) for _, v in points],
            "--" if split == "val" else "-",
            marker="o" if len(points) <= 12 else None,
            markersize=3,
            color=colour,
            label=f"{run} {split}".strip(),
        )
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    percent_axis(ax_acc.yaxis)
    handles: dict[str, Any] = {}
    for ax in (ax_loss, ax_acc):
        integer_axis(ax.xaxis)
        ax.grid(alpha=0.3)
        handles.update(zip(*reversed(ax.get_legend_handles_labels())))
    if handles:
        fig.legend(handles.values(), handles.keys(), loc="outside right upper", fontsize=8)
    fig.suptitle(title)
    return fig


def curves_png(histories: dict[str, list], path: Path, title: str) -> Path:
    """Training loss and accuracy per epoch (plus validation when present), one colour per
    run (e.g. per seed)."""
    series: dict[tuple[str, str, str], list] = {}
    for run, history in histories.items():
        for split in ("train", "val"):
            for kind in ("loss", "acc"):
                points = [(s.epoch, getattr(s, f"{split}_{kind}")) for s in history]
                if points and all(v is not None for _, v in points):
                    series[run, split, kind] = points
    return save_png(_curves_figure(series, title), path)


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
    """Each COMPLETE trial's value (of the first objective; accuracies in %), pruned
    trials at their last reported value, and the best value so far."""
    scale = 100 if metric in ACCURACIES else 1
    fig, ax = plt.subplots(figsize=(8, 4), layout="constrained")
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED and t.intermediate_values]
    ax.scatter(
        [t.number for t in complete], [t.values[0] * scale for t in complete], label="complete"
    )
    if pruned:
        ax.scatter(
            [t.number for t in pruned],
            [t.intermediate_values[max(t.intermediate_values)] * scale for t in pruned],
            marker="x",
            color="grey",
            label="pruned (last report)",
        )
    best, xs, ys = None, [], []
    for t in complete:
        if best is None or (t.values[0] > best if maximize else t.values[0] < best):
            best = t.values[0]
        xs.append(t.number)
        ys.append(best * scale)
    ax.step(xs, ys, where="post", color="red", label="best so far")
    ax.set(xlabel="trial", ylabel=metric, title="optimization history")
    if scale == 100:
        percent_axis(ax.yaxis)
    integer_axis(ax.xaxis)
    ax.grid(alpha=0.3)
    fig.legend(loc="outside right upper", fontsize=8)
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
    """Parallel coordinates of COMPLETE trials (``trial_figures``): an axis per
    parameter labelled with its values, conditional ones with a "not used" level, and the
    (first) objective as the last axis and the lines' colour."""
    from search.reporting.trial_figures import parallel_figure

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    fig = parallel_figure(complete, metric, study.directions[0])
    return None if fig is None else save_png(fig, path)


def best_curves_png(series: Mapping[str, Sequence[Any]], path: Path, title: str) -> Path | None:
    """A trial's per-epoch training and validation loss and accuracy: ``series`` maps
    ``train_loss``, ``val_loss``, ``train_acc`` and ``val_acc`` (or ``fold<k>.``-prefixed
    ones, a colour per fold) to MLflow metric points (with ``step`` = epoch and ``value``)."""
    if not any(series.values()):
        return None
    lines: dict[tuple[str, str, str], list] = {}
    for key, points in series.items():
        run, _, metric = key.rpartition(".")
        split, _, kind = metric.partition("_")
        if points:
            lines[run, split, kind] = [
                (m.step, m.value) for m in sorted(points, key=lambda m: m.step)
            ]
    return save_png(_curves_figure(lines, title), path)


def pareto_png(
    measures: Sequence[str],
    directions: Sequence[str],
    points: Sequence[tuple[int, Sequence[float]]],
    front: set[int],
    retrained: Mapping[int, tuple[float, float, int]],
    path: Path,
) -> Path:
    """A multi-objective study's validation measure against each cost, the Pareto front
    and the retrained trials marked (``trial_figures.pareto_figure``)."""
    from search.reporting.trial_figures import pareto_figure

    return save_png(pareto_figure(measures, directions, points, front, retrained), path)


# an ablation ---------------------------------------------------------------------------
def ablation_png(outcome: AblationOutcome, path: Path) -> Path:
    """Mean accuracy per variant (the value under its name) with 95% t-intervals over
    seeds as error bars; with one seed there are none, and the title says so."""
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
    seeds = len(outcome.seeds)
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(names)), 4))
    colours = ["#4c72b0"] + ["#dd8452"] * (len(names) - 1)
    ax.bar(names, means, yerr=errs if seeds > 1 else None, capsize=5, color=colours)
    ax.set_xticks(range(len(names)), [f"{n}\n{m:.1f}%" for n, m in zip(names, means)])
    low = min(m - e for m, e in zip(means, errs))
    ax.set_ylim(max(0, low - 5), min(100, max(m + e for m, e in zip(means, errs)) + 2))
    ax.set_ylabel(f"{outcome.split} accuracy")
    percent_axis(ax.yaxis)
    ax.set_title(
        f"ablation: mean ± 95% CI over {seeds} paired seeds"
        if seeds > 1
        else "ablation: 1 seed (no error bars; use --seeds 0,1,2 or more)"
    )
    if len(names) > 4:
        ax.tick_params(axis="x", rotation=30)
    return save_png(fig, path)
