"""What a study optimizes: one objective (a validation metric) or several (validation
metrics and cost measures of the trial's model and run), each with its direction.

With several objectives a study has no single best trial but a Pareto front: the trials no
other trial beats on every objective at once. Where one trial must be picked anyway (the
default of ``best``, ``retrain`` and ``ablate``), ``preferred`` takes the front's best on
the first objective, the later objectives breaking ties, then the earliest trial. With one
objective that is exactly Optuna's ``best_trial``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from search.errors import ConfigError

if TYPE_CHECKING:
    import optuna

# measure -> (the only direction that makes sense for it, what it is)
VALIDATION_MEASURES = {
    "val_acc": ("maximize", "validation accuracy (mean over folds with data.kfold)"),
    "val_top5": ("maximize", "validation top-5 accuracy"),
    "val_loss": ("minimize", "validation cross-entropy loss"),
}
COST_MEASURES = {
    "params": ("minimize", "trainable parameters of the model"),
    "train_flops": ("minimize", "training FLOPs per image, forward + backward (as `bench`)"),
    "inference_ms": ("minimize", "inference milliseconds per image on the trial's device"),
    "epoch_seconds": ("minimize", "training seconds per epoch"),
}
MEASURES = {**VALIDATION_MEASURES, **COST_MEASURES}
DIRECTIONS = ("maximize", "minimize")


@dataclass(frozen=True)
class ObjectiveSpec:
    """One objective of a study: a measure and its direction."""

    measure: str
    direction: str

    @property
    def is_cost(self) -> bool:
        return self.measure in COST_MEASURES

    def __str__(self) -> str:
        return f"{self.measure}:{self.direction}"


def directions_of(study: optuna.Study) -> list[str]:
    """A stored study's directions as a study file spells them ("maximize", ...)."""
    return [d.name.lower() for d in study.directions]


def best_value(study: optuna.Study) -> float | None:
    """The best value of a single-objective study; None before its first COMPLETE trial
    and for a multi-objective study (which has a front, not a best value)."""
    if len(study.directions) > 1:
        return None
    try:
        return study.best_value
    except ValueError:  # no COMPLETE trial yet
        return None


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """Whether ``a`` is at least as good as ``b`` on every objective and better on one."""
    signs = [1.0 if d == "maximize" else -1.0 for d in directions]
    at_least = all(s * x >= s * y for s, x, y in zip(signs, a, b, strict=True))
    return at_least and any(s * x > s * y for s, x, y in zip(signs, a, b, strict=True))


def pareto_front(
    candidates: Sequence[tuple[int, Sequence[float]]], directions: Sequence[str]
) -> list[tuple[int, Sequence[float]]]:
    """The ``(trial number, values)`` pairs no other candidate dominates, sorted by the
    first objective (best first), as Optuna's ``study.best_trials`` would hold them."""
    front = [
        c
        for c in candidates
        if not any(dominates(other[1], c[1], directions) for other in candidates)
    ]
    return ranked(front, directions)


def ranked(
    candidates: Sequence[tuple[int, Sequence[float]]], directions: Sequence[str]
) -> list[tuple[int, Sequence[float]]]:
    """The candidates best first: on the first objective, later objectives breaking ties,
    then the earliest trial."""
    return sorted(candidates, key=lambda c: _rank_key(c, directions))


def preferred(
    candidates: Sequence[tuple[int, Sequence[float]]], directions: Sequence[str]
) -> int | None:
    """The trial picked when the user names none: the first of ``ranked``. It is always
    on the Pareto front."""
    return ranked(candidates, directions)[0][0] if candidates else None


def choose(
    candidates: Sequence[tuple[int, Sequence[float]]],
    directions: Sequence[str],
    trial_number: int | None = None,
) -> int | None:
    """``trial_number`` when it is among the candidates (COMPLETE trials), else a
    ConfigError naming ``--trial``; without one, the ``preferred`` trial (None when there
    are no candidates)."""
    if trial_number is None:
        return preferred(candidates, directions)
    if all(number != trial_number for number, _ in candidates):
        raise ConfigError("no COMPLETE trial with this number", key="--trial", value=trial_number)
    return trial_number


def _rank_key(candidate: tuple[int, Sequence[float]], directions: Sequence[str]) -> tuple:
    number, values = candidate
    signed = tuple(-v if d == "maximize" else v for v, d in zip(values, directions, strict=True))
    return (*signed, number)


def describe_measures() -> str:
    """One line per measure, for error messages and documentation."""
    return "; ".join(f"{m} ({d}d): {what}" for m, (d, what) in MEASURES.items())
