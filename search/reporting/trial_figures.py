"""Figures over a study's trials that ``report`` draws: parallel coordinates (an axis per
searched parameter, each labelled with its own values, the objective as the last axis)
and the Pareto front of a multi-objective study. They return the matplotlib Figure;
``figures.parallel_png`` and ``figures.pareto_png`` save it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import (  # noqa: E402
    FuncFormatter,
    LogLocator,
    MaxNLocator,
    NullFormatter,
    PercentFormatter,
)
from optuna.distributions import CategoricalDistribution, IntDistribution  # noqa: E402
from optuna.study import StudyDirection  # noqa: E402
from optuna.trial import FrozenTrial  # noqa: E402

from search.reporting.pareto import measure_text  # noqa: E402
from search.study.objectives import COST_MEASURES, MEASURES, VALIDATION_MEASURES  # noqa: E402

NOT_USED = "n/a (not used)"  # the level of a conditional parameter a trial did not sample
_FLOOR = 0.16  # on an axis with that level, values start this far above it

Column = tuple[np.ndarray, list[float], list[str]]  # positions in [0, 1], ticks, labels


def _text(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _in_range(ticks: Sequence[float], low: float, high: float) -> list[float]:
    pad = 1e-9 * max(abs(low), abs(high), 1)
    return [float(t) for t in ticks if low - pad <= t <= high + pad]


def parameter_column(name: str, trials: Sequence[FrozenTrial]) -> Column:
    """One parameter's axis: each trial's height in [0, 1], the tick heights and labels.
    Categorical: its choices, evenly spaced, by name. Numeric: the searched range (log-
    spaced when the distribution is), ticks at round values. A conditional parameter that
    some trials did not sample gets a ``NOT_USED`` level at the bottom for them."""
    dists = [t.distributions[name] for t in trials if name in t.distributions]
    raw = [t.params.get(name) for t in trials]
    used = [v for v in raw if v is not None]
    bottom = _FLOOR if len(used) < len(raw) else 0.0
    if isinstance(dists[0], CategoricalDistribution):
        choices = list(dists[0].choices)
        choices += [v for v in used if v not in choices]
        spread = max(len(choices) - 1, 1)

        def height(v: Any) -> float:
            return 0.5 if len(choices) == 1 else choices.index(v) / spread

        ticks, labels = [height(c) for c in choices], [_text(c) for c in choices]
    else:
        log = any(getattr(d, "log", False) for d in dists)
        low = min([d.low for d in dists] + used)
        high = max([d.high for d in dists] + used)
        scale = np.log10 if log else (lambda v: v)
        span = (scale(high) - scale(low)) or 1.0

        def height(v: Any) -> float:
            return float((scale(v) - scale(low)) / span)

        step = getattr(dists[0], "step", None)
        if step and not log and (high - low) / step <= 10:  # every value of a short grid
            values = [float(v) for v in np.arange(low, high + step / 2, step)]
        elif log:
            values = _in_range(LogLocator(subs=(1, 2, 5)).tick_values(low, high), low, high)
        else:
            integer = isinstance(dists[0], IntDistribution)
            values = _in_range(MaxNLocator(6, integer=integer).tick_values(low, high), low, high)
        if len(values) < 2:
            values = sorted({float(low), float(high)})
        ticks = [height(v) for v in values]
        labels = [f"{v:g}" if not log else f"{v:.3g}" for v in values]
    heights = np.array([0.0 if v is None else bottom + (1 - bottom) * height(v) for v in raw])
    ticks = [bottom + (1 - bottom) * t for t in ticks]
    if bottom:
        ticks, labels = [0.0, *ticks], [NOT_USED, *labels]
    return heights, ticks, labels


def objective_column(metric: str, values: np.ndarray) -> Column:
    """The objective's axis over the values the trials reached (accuracies in %)."""
    low, high = float(values.min()), float(values.max())
    if high == low:
        return np.full(len(values), 0.5), [0.5], [measure_text(metric, low)]
    ticks = _in_range(MaxNLocator(5).tick_values(low, high), low, high)
    ticks = sorted(set(ticks) | {low, high}) if len(ticks) < 3 else ticks
    heights = (values - low) / (high - low)
    return (
        heights,
        [(t - low) / (high - low) for t in ticks],
        [measure_text(metric, t) for t in ticks],
    )


def parallel_figure(
    trials: Sequence[FrozenTrial], metric: str, direction: StudyDirection
) -> plt.Figure | None:
    """Parallel coordinates of ``trials`` (COMPLETE ones with parameters): an axis per
    parameter (sorted by name) with its values as ticks, then the (first) objective, whose
    value also colours each line (yellow = higher); the best trial is drawn on top, thick."""
    trials = [t for t in trials if t.params]
    if not trials:
        return None
    names = sorted({k for t in trials for k in t.params})
    values = np.array([t.values[0] for t in trials], dtype=float)
    columns = [parameter_column(name, trials) for name in names]
    columns.append(objective_column(metric, values))
    data = np.stack([c[0] for c in columns], axis=1)
    n = len(columns)
    fig, ax = plt.subplots(figsize=(max(7.0, 2.0 * n), 4.8), layout="constrained")
    shade = plt.Normalize(values.min(), values.max() if values.max() > values.min() else None)
    order = np.argsort(values if direction == StudyDirection.MAXIMIZE else -values)
    for rank, i in enumerate(order):
        best = rank == len(order) - 1
        ax.plot(
            range(n),
            data[i],
            color=plt.cm.viridis(shade(values[i])),
            linewidth=3 if best else 1.4,
            alpha=1 if best else 0.75,
            zorder=3 if best else 2,
            label=f"best {metric}: trial {trials[i].number}" if best else None,
        )
    ax.set_xlim(0, n - 1)
    ax.set_ylim(-0.04, 1.04)
    ax.set_xticks(range(n), [*names, metric], rotation=15)
    ax.set_yticks([])
    ax.spines[:].set_visible(False)
    for i, (_, ticks, labels) in enumerate(columns):
        axis = ax.secondary_yaxis(i / (n - 1))
        axis.set_alignment("right" if i == n - 1 else "left")
        axis.set_zorder(4)  # its labels over the lines
        axis.set_yticks(ticks, labels, fontsize=8)
        for label in axis.get_yticklabels():
            label.set_bbox({"facecolor": "white", "alpha": 0.8, "edgecolor": "none", "pad": 1})
    ax.set_title(
        f"parallel coordinates: {len(trials)} complete trials, colour: {metric} (yellow = higher)"
    )
    fig.legend(loc="outside lower right", fontsize=8)
    return fig


def pareto_figure(
    measures: Sequence[str],
    directions: Sequence[str],
    points: Sequence[tuple[int, Sequence[float]]],
    front: set[int],
    retrained: Mapping[int, tuple[float, float, int]],
) -> plt.Figure:
    """A multi-objective study's COMPLETE trials: the validation measure (the first one)
    against each cost measure (one panel each; against each other objective when there is
    no cost), the Pareto front highlighted and joined, and the retrained trials marked with
    their test accuracy (``retrained``: trial -> (mean, sd, seeds))."""
    y = next(i for i, m in enumerate(measures) if m in VALIDATION_MEASURES)
    xs = [i for i, m in enumerate(measures) if m in COST_MEASURES] or [
        i for i in range(len(measures)) if i != y
    ]
    fig, axes = plt.subplots(
        1, len(xs), figsize=(6.5 * len(xs), 4.8), squeeze=False, layout="constrained"
    )
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
            spread = f" ± {100 * sd:.2f}% ({seeds} seeds)" if seeds > 1 else "% (1 seed)"
            ax.annotate(
                f"trial {number}: test {100 * mean:.2f}{spread}",
                (values[x], values[y] * scale),
                fontsize=8,
                xytext=(6, -14),
                textcoords="offset points",
            )
        if retrained:
            ax.scatter(
                [],
                [],
                marker="*",
                s=120,
                color="gold",
                edgecolors="black",
                label="retrained (test accuracy)",
            )
        costs = [v[x] for _, v in points if v[x] > 0]
        if measures[x] in ("params", "train_flops") and costs and max(costs) > 10 * min(costs):
            ax.set_xscale("log")  # over a decade or more: 10x more costs as much room
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _, m=measures[x]: measure_text(m, v)))
        ax.set(
            xlabel=f"{measures[x]}: {MEASURES[measures[x]][1]}",
            ylabel=f"{measures[y]} ({directions[y]})",
            title=f"{measures[y]} against {measures[x]}",
        )
        if scale == 100:
            ax.yaxis.set_major_formatter(PercentFormatter(decimals=None))
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=8)
    return fig
