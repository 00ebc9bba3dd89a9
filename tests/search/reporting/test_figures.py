"""The figures a reader has to read (search/reporting/figures.py, trial_figures.py,
error_figures.py): each is drawn from small real-shaped data (tiny in-memory Optuna
studies, real calibration bins) and its matplotlib Figure is inspected as it was saved:
tick labels, formatters, legend colours, and that legends and titles overlap nothing."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import optuna
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure
from matplotlib.text import Text
from optuna.distributions import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState, create_trial

from search.reporting import error_figures, figures
from search.reporting.error_analysis import calibration
from search.reporting.trial_figures import NOT_USED, parameter_column
from search.training.run_state import EpochStats

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture
def drawn(monkeypatch):
    """Every Figure the figure functions save, after the real ``save_png`` wrote it."""
    saved: list[Figure] = []
    real = figures.save_png

    def record(fig, path):
        out = real(fig, path)
        FigureCanvasAgg(fig)  # closing left it a bare canvas: give it one that draws
        saved.append(fig)
        return out

    monkeypatch.setattr(figures, "save_png", record)
    monkeypatch.setattr(error_figures, "save_png", record)
    return saved


def _texts(fig: Figure) -> list[str]:
    fig.canvas.draw()
    return [t.get_text() for t in fig.findobj(Text) if t.get_visible() and t.get_text()]


def _tick_texts(axis) -> list[str]:
    axis.axes.figure.canvas.draw()
    return [t.get_text() for t in axis.get_ticklabels() if t.get_text()]


def _assert_nothing_overlaps(fig: Figure) -> None:
    """No legend overlaps any axes (so none covers data) nor a title; the titles (the
    figure's and each axes') do not overlap one another."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    titles = [ax.title for ax in fig.axes if ax.get_title()]
    if fig._suptitle is not None:
        titles.append(fig._suptitle)
    boxes = [t.get_window_extent(renderer) for t in titles]
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for ax in fig.axes:
            assert not box.overlaps(ax.get_window_extent(renderer)), "legend over an axes"
        for title, other in zip(titles, boxes):
            assert not box.overlaps(other), f"legend over the title {title.get_text()!r}"
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not a.overlaps(b)


# parallel coordinates ----------------------------------------------------------------------
SPACE = {
    "optim.lr": FloatDistribution(0.005, 0.5, log=True),
    "model.dropout": FloatDistribution(0.0, 0.3, step=0.1),
    "aug.crop_padding": IntDistribution(0, 4),
    "model.attention": CategoricalDistribution(["se", "eca", "none"]),
    "model.se_reduction": CategoricalDistribution([4, 8, 16]),  # only when attention = se
}


def _study(values: list[float], seed: int = 0) -> optuna.Study:
    """A finished study over SPACE with a conditional parameter, as search leaves it."""
    rng = np.random.default_rng(seed)
    study = optuna.create_study(direction="maximize")
    for value in values:
        attention = ["se", "eca", "none"][int(rng.integers(3))]
        params = {
            "optim.lr": float(10 ** rng.uniform(math.log10(0.005), math.log10(0.5))),
            "model.dropout": float(rng.choice([0.0, 0.1, 0.2, 0.3])),
            "aug.crop_padding": int(rng.integers(0, 5)),
            "model.attention": attention,
        }
        if attention == "se":
            params["model.se_reduction"] = int(rng.choice([4, 8, 16]))
        dists = {k: SPACE[k] for k in params}
        study.add_trial(create_trial(params=params, distributions=dists, value=value))
    pruned = {"model.attention": "none"}
    study.add_trial(
        create_trial(
            params=pruned,
            distributions={"model.attention": SPACE["model.attention"]},
            state=TrialState.PRUNED,
            intermediate_values={1: 0.11, 2: 0.12},
        )
    )
    return study


def _parallel_axes(fig: Figure) -> dict[str, list[str]]:
    """Axis name (the x tick label under it) -> its tick labels."""
    (ax,) = fig.axes
    names = _tick_texts(ax.xaxis)
    assert len(ax.child_axes) == len(names)  # one axis per name, left to right
    return {name: _tick_texts(a.yaxis) for name, a in zip(names, ax.child_axes)}


def test_parallel_coordinates_label_every_axis_with_its_values(drawn, tmp_path):
    study = _study([0.31, 0.52, 0.18, 0.44, 0.27, 0.61, 0.39, 0.22])
    assert figures.parallel_png(study, "val_acc", tmp_path / "parallel.png").is_file()
    (fig,) = drawn
    axes = _parallel_axes(fig)
    assert list(axes) == [*sorted(SPACE), "val_acc"]
    for name, labels in axes.items():
        assert len(labels) >= 2, f"{name} has no values on its axis: {labels}"
    assert axes["model.attention"] == ["se", "eca", "none"]  # categories by name
    assert axes["model.se_reduction"] == [NOT_USED, "4", "8", "16"]  # conditional: shown
    assert axes["model.dropout"] == ["0", "0.1", "0.2", "0.3"]  # a short step grid: each
    assert axes["aug.crop_padding"] == ["0", "1", "2", "3", "4"]
    assert {"0.01", "0.1"} <= set(axes["optim.lr"])  # log range: round values
    assert all(label.endswith("%") for label in axes["val_acc"])  # accuracy in %
    # every COMPLETE trial is one unbroken line (the conditional one too), pruned ones none
    (ax,) = fig.axes
    lines = [line for line in ax.get_lines() if len(line.get_ydata()) == len(axes)]
    assert len(lines) == 8
    assert not any(np.isnan(line.get_ydata()).any() for line in lines)
    _assert_nothing_overlaps(fig)


def test_a_conditional_parameter_sits_at_its_not_used_level():
    study = _study([0.3, 0.5, 0.2, 0.4, 0.6, 0.35])
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    heights, ticks, labels = parameter_column("model.se_reduction", trials)
    unused = [t.params.get("model.se_reduction") is None for t in trials]
    assert any(unused) and not all(unused)
    assert labels[0] == NOT_USED and ticks[0] == 0.0
    assert all(h == 0.0 for h, u in zip(heights, unused) if u)
    assert all(h > ticks[0] for h, u in zip(heights, unused) if not u)
    # and a parameter every trial has gets no such level
    assert NOT_USED not in parameter_column("model.attention", trials)[2]


# reliability diagram ---------------------------------------------------------------------
def _calibration_bins():
    """Real bins from probabilities that are over-confident at the top and under-confident
    at the bottom (bars that reach above and below the diagonal)."""
    rng = np.random.default_rng(0)
    n, classes = 2000, 10
    logits = rng.normal(size=(n, classes)) * rng.uniform(0.2, 4, size=(n, 1))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.where(rng.random(n) < 0.55, probs.argmax(axis=1), rng.integers(0, classes, n))
    return calibration(probs, labels, bins=10)


def test_reliability_legend_colours_are_the_plot_colours(drawn, tmp_path):
    ece, bins = _calibration_bins()
    acc = np.array([b.accuracy for b in bins if b.count])
    conf = np.array([b.confidence for b in bins if b.count])
    assert (acc > conf).any() and (acc < conf).any()  # gaps both ways, as in real models
    error_figures.reliability_png(bins, ece, tmp_path / "reliability.png")
    (fig,) = drawn
    ax = fig.axes[0]
    legend = fig.legends[0] if fig.legends else ax.get_legend()
    artists = {c.get_label(): c.patches[0].get_facecolor() for c in ax.containers}
    artists |= {c.get_label(): c.get_color()[0] for c in ax.collections if c.get_label()}
    artists |= {line.get_label(): line.get_color() for line in ax.get_lines()}
    seen = set()
    for handle, text in zip(legend.legend_handles, legend.get_texts()):
        label = text.get_text()
        shown = artists[label]
        if hasattr(handle, "get_facecolor") and not hasattr(handle, "get_markerfacecolor"):
            colour = handle.get_facecolor()
        else:
            colour = handle.get_color()
        if hasattr(colour, "ndim") and np.ndim(colour) == 2:
            colour = colour[0]
        assert to_rgba(colour) == pytest.approx(to_rgba(shown)), label
        assert to_rgba(shown)[3] == 1.0, f"{label} is translucent: blends into other colours"
        seen.add(label)
    assert {"accuracy in the bin", "gap to mean confidence", "perfect calibration"} <= seen
    assert "%" in ax.yaxis.get_major_formatter()(0.5, 0)
    assert all(t.endswith("%") for t in _tick_texts(fig.axes[1].xaxis))
    _assert_nothing_overlaps(fig)


def test_per_class_accuracy_axis_in_percent_and_legend_off_the_bars(drawn, tmp_path):
    accuracy = [0.0, 0.25, 0.9, 0.95, 0.5, 0.6]
    error_figures.per_class_png(accuracy, [f"class {i}" for i in range(6)], tmp_path / "pc.png")
    (fig,) = drawn
    assert all(t.endswith("%") for t in _tick_texts(fig.axes[0].xaxis))
    assert "0.0%" in _texts(fig)  # a class at zero still says so
    _assert_nothing_overlaps(fig)


# one seed --------------------------------------------------------------------------------
def _ablation(seeds: tuple[int, ...]) -> SimpleNamespace:
    rng = np.random.default_rng(1)
    names = ["baseline", "no_crop", "no_dropout"]
    records = {
        n: [SimpleNamespace(accuracy=0.6 + 0.05 * rng.random()) for _ in seeds] for n in names
    }
    return SimpleNamespace(
        variants=[SimpleNamespace(name=n) for n in names],
        of=records.__getitem__,
        seeds=seeds,
        split="test",
    )


def test_ablation_with_one_seed_says_one_seed_not_plus_minus_zero(drawn, tmp_path):
    figures.ablation_png(_ablation((0,)), tmp_path / "one.png")
    figures.ablation_png(_ablation((0, 1, 2)), tmp_path / "three.png")
    one, three = drawn
    texts = " ".join(_texts(one))
    assert "1 seed" in texts and "±" not in texts and "CI" not in texts
    assert not any(isinstance(c, ErrorbarContainer) for c in one.axes[0].containers)
    assert "mean ± 95% CI over 3 paired seeds" in three.axes[0].get_title()
    assert any(isinstance(c, ErrorbarContainer) for c in three.axes[0].containers)
    for fig in (one, three):
        assert all(t.endswith("%") for t in _tick_texts(fig.axes[0].yaxis))
        _assert_nothing_overlaps(fig)


def test_pareto_marks_a_one_seed_retrain_without_plus_minus_zero(drawn, tmp_path):
    points = [(0, (0.42, 17_000)), (1, (0.55, 24_000)), (2, (0.40, 30_000)), (3, (0.61, 270_000))]
    args = (["val_acc", "params"], ["maximize", "minimize"], points, {0, 1, 3})
    figures.pareto_png(*args, {1: (0.5321, 0.0, 1)}, tmp_path / "one.png")
    figures.pareto_png(*args, {1: (0.5321, 0.0123, 3)}, tmp_path / "three.png")
    one, three = drawn
    assert "trial 1: test 53.21% (1 seed)" in _texts(one)
    assert not any("± 0.00" in t for t in _texts(one))
    assert "trial 1: test 53.21 ± 1.23% (3 seeds)" in _texts(three)
    for fig in (one, three):
        assert all(t.endswith("%") for t in _tick_texts(fig.axes[0].yaxis))
        _assert_nothing_overlaps(fig)


# accuracy in %, epochs as integers -------------------------------------------------------
def _history(epochs: int, val: bool = True) -> list[EpochStats]:
    return [
        EpochStats(
            epoch=e,
            train_loss=2.0 / e,
            train_acc=0.3 + 0.1 * e,
            lr=0.1,
            seconds=1.0,
            images_per_s=100.0,
            val_loss=2.2 / e if val else None,
            val_acc=0.25 + 0.1 * e if val else None,
        )
        for e in range(1, epochs + 1)
    ]


def _assert_percent_and_integer_epochs(fig: Figure) -> None:
    loss, acc = fig.axes[:2]
    assert all(t.endswith("%") for t in _tick_texts(acc.yaxis))
    for ax in (loss, acc):
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks), ticks


def test_training_curves_in_percent_with_integer_epochs(drawn, tmp_path):
    figures.curves_png(
        {"seed 0": _history(3, val=False), "seed 1": _history(3, val=False)},
        tmp_path / "curves.png",
        "final retrain of trial 1",
    )
    (fig,) = drawn
    _assert_percent_and_integer_epochs(fig)
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["seed 0 train", "seed 1 train"]
    _assert_nothing_overlaps(fig)


def test_best_trial_curves_per_fold_in_percent_with_integer_epochs(drawn, tmp_path):
    def points(values):
        return [SimpleNamespace(step=e, value=v) for e, v in enumerate(values, start=1)]

    series = {
        f"fold{k}.{key}": points([0.2 + 0.1 * e + 0.01 * k for e in range(4)])
        for k in range(2)
        for key in ("train_loss", "val_loss", "train_acc", "val_acc")
    }
    figures.best_curves_png(series, tmp_path / "best.png", "trial 3")
    (fig,) = drawn
    _assert_percent_and_integer_epochs(fig)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["fold0 train", "fold0 val", "fold1 train", "fold1 val"]
    _assert_nothing_overlaps(fig)


def test_history_in_percent_with_integer_trials(drawn, tmp_path):
    study = _study([0.31, 0.52, 0.18])
    figures.history_png(study, "val_acc", True, tmp_path / "history.png")
    (fig,) = drawn
    (ax,) = fig.axes
    assert all(t.endswith("%") for t in _tick_texts(ax.yaxis))
    assert all(float(t).is_integer() for t in ax.get_xticks())
    _assert_nothing_overlaps(fig)


def test_confusion_colour_scale_in_percent(drawn, tmp_path):
    confusion = np.array([[8, 2, 0], [1, 7, 2], [0, 3, 7]])
    figures.confusion_png(confusion, ("cat", "dog", "frog"), tmp_path / "c.png", "test")
    (fig,) = drawn
    colourbar = fig.axes[1]
    assert all(t.endswith("%") for t in _tick_texts(colourbar.yaxis))
