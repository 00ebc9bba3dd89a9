"""What a loaded study file holds: ``StudySpec`` and its parts.

A study file says what to search (``[space]``), what stays put (``[fixed]``), how Optuna
searches (``[study]``: sampler, pruner, budget) and how the best trial is retrained
(``[retrain]``). ``search.study.load`` reads and checks the file into a ``StudySpec``.
``ParamSpec.values`` is the one enumeration of a parameter's values: the grid, the space
size and the checks of ``when`` conditions and model knobs all go through it.
"""

from __future__ import annotations

import decimal
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from search.config import TrialConfig
from search.study.objectives import VALIDATION_MEASURES, ObjectiveSpec
from search.study.optuna_factory import pruner_kwargs

# metric -> the only direction that makes sense for it
METRICS = {m: direction for m, (direction, _) in VALIDATION_MEASURES.items()}

SECTIONS = ("study", "fixed", "space", "retrain", "ablation")
STUDY_KEYS = (
    "dataset",
    "direction",
    "metric",
    "n_trials",
    "timeout",
    "sampler",
    "seed",
    "pruner",
    "description",
    "sampler_args",
    "pruner_args",
    "objectives",
    "warm_start",
)
RETRAIN_KEYS = ("epochs", "seeds")
PARAM_TYPES = ("categorical", "int", "float")
ENTRY_KEYS = {
    "categorical": ("type", "choices", "when"),
    "int": ("type", "low", "high", "step", "log", "when"),
    "float": ("type", "low", "high", "step", "log", "when"),
}


def same_value(a: Any, b: Any) -> bool:
    """Equality that keeps ``True`` and ``1`` apart (Python's ``==`` does not)."""
    return a == b and isinstance(a, bool) == isinstance(b, bool)


class _Steps(Sequence):
    """``low, low + step, ..., high`` in exact decimal steps (0.1 * 3 gives 0.3, not
    0.30000000000000004), each value made only when asked for, so that counting a long
    range or testing a value against it costs nothing."""

    def __init__(self, low: float | int, high: float | int, step: float | int, kind: type) -> None:
        self._low = decimal.Decimal(str(low))
        self._step = decimal.Decimal(str(step))
        self._kind = kind
        span = decimal.Decimal(str(high)) - self._low
        self._len = int(span // self._step) + 1

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._len))]
        if index < 0:
            index += self._len
        if not 0 <= index < self._len:
            raise IndexError("index out of range")
        return self._kind(self._low + index * self._step)

    def __contains__(self, value: object) -> bool:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            return False
        offset = decimal.Decimal(str(value)) - self._low
        return 0 <= offset <= (self._len - 1) * self._step and offset % self._step == 0


@dataclass(frozen=True)
class ParamSpec:
    """One ``[space]`` entry: a flat TrialConfig key and its distribution."""

    key: str
    type: str
    choices: tuple = ()
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    log: bool = False
    when: tuple[tuple[str, tuple], ...] = ()

    def values(self) -> Sequence | None:
        """Every value the parameter takes, in order; None for a continuous float (one
        without step). The only place that enumerates a parameter's values."""
        if self.type == "categorical":
            return self.choices
        if self.type == "float" and self.step is None:
            return None
        return _Steps(
            self.low,
            self.high,
            self.step if self.step is not None else 1,
            int if self.type == "int" else float,
        )

    @property
    def discrete(self) -> bool:
        """True when the parameter takes finitely many values (a grid can hold it)."""
        return self.values() is not None

    def count(self) -> int | None:
        """Number of values a discrete parameter takes; None for a continuous one."""
        values = self.values()
        return None if values is None else len(values)

    def can_take(self, value: Any) -> bool:
        """Whether the parameter can produce ``value`` (for checking ``when`` conditions)."""
        values = self.values()
        if self.type == "categorical":
            return any(same_value(value, c) for c in values)
        if isinstance(value, bool) or not self.low <= value <= self.high:
            return False
        return values is None or value in values

    def distribution(self) -> optuna.distributions.BaseDistribution:
        """The Optuna distribution ``suggest`` uses for this parameter."""
        if self.type == "categorical":
            return optuna.distributions.CategoricalDistribution(list(self.choices))
        if self.type == "int":
            return optuna.distributions.IntDistribution(
                self.low, self.high, log=self.log, step=self.step or 1
            )
        return optuna.distributions.FloatDistribution(
            self.low, self.high, log=self.log, step=self.step
        )


def param_values(p: ParamSpec) -> list | None:
    """Every value a discrete parameter takes, in order, as a list; None for a continuous
    float."""
    values = p.values()
    return None if values is None else list(values)


@dataclass(frozen=True)
class AblationSpec:
    """One ``[[ablation]]`` variant: the config overrides that turn the baseline into it."""

    name: str
    overrides: dict[str, Any]
    description: str = ""


@dataclass(frozen=True)
class RetrainSpec:
    """How the best trial is retrained on the full training split: epochs and seeds."""

    epochs: int
    seeds: tuple[int, ...]


@dataclass(frozen=True)
class WarmStartSpec:
    """Start from another study's best configurations: its ``top`` best trials on its
    first objective, or its whole Pareto front (``top`` None)."""

    study: str
    top: int | None = 5

    def __str__(self) -> str:
        return f"{self.study}:{'front' if self.top is None else f'top{self.top}'}"


@dataclass(frozen=True)
class StudySpec:
    """A loaded, validated study file. ``metric`` and ``direction`` are the validation
    metric the pruner and the progress lines follow: the only objective of a
    single-objective study, the first validation measure of a multi-objective one."""

    name: str
    path: Path
    dataset: str
    direction: str
    metric: str
    n_trials: int
    timeout: float | None
    sampler: str
    sampler_args: dict
    seed: int
    pruner: str
    pruner_args: dict
    fixed: dict[str, Any]
    space: tuple[ParamSpec, ...]
    retrain: RetrainSpec
    ablations: tuple[AblationSpec, ...]
    description: str = ""
    objectives: tuple[ObjectiveSpec, ...] = ()  # () = the one objective (metric, direction)
    warm_start: WarmStartSpec | None = None

    def __post_init__(self) -> None:
        if not self.objectives:
            object.__setattr__(self, "objectives", (ObjectiveSpec(self.metric, self.direction),))

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    @property
    def measures(self) -> list[str]:
        return [o.measure for o in self.objectives]

    @property
    def objective_metrics(self) -> list[str]:
        """The MLflow metrics of a trial run that hold its objective values."""
        if self.multi_objective:
            return [f"objective.{m}" for m in self.measures]
        return ["objective"]

    def base_config(self) -> TrialConfig:
        """The fixed values on top of the defaults: what every trial starts from.

        When ``model.name`` is searched (and not fixed), its first choice stands in for
        it, so that fixed model knobs are checked against a model that will really run
        rather than the default one.
        """
        start = {}
        for p in self.space:
            if p.key == "model.name" and "model.name" not in self.fixed:
                start["model.name"] = p.choices[0]
        return TrialConfig().with_overrides({**start, **self.fixed})

    def space_size(self) -> int | None:
        """Grid points when every parameter is discrete, else None (continuous space)."""
        size = 1
        for p in self.space:
            n = p.count()
            if n is None:
                return None
            size *= n
        return size

    def max_epochs(self) -> int:
        """The most epochs a trial can run: the pruners' largest resource (steps)."""
        for p in self.space:
            if p.key == "optim.epochs":
                return int(max(p.choices) if p.type == "categorical" else p.high)
        return self.base_config().optim.epochs

    def settings(self) -> dict[str, str]:
        """The search settings as flat text, for MLflow tags and Optuna study user attrs."""
        return {
            "sampler": self.sampler,
            "sampler_args": json.dumps(dict(self.sampler_args), sort_keys=True),
            "seed": str(self.seed),
            "pruner": self.pruner,
            "pruner_args": json.dumps(pruner_kwargs(self), sort_keys=True),
            "direction": self.direction,
            "metric": self.metric,
            "objectives": ",".join(map(str, self.objectives)),
            "warm_start": "none" if self.warm_start is None else str(self.warm_start),
            "n_trials": str(self.n_trials),
            "timeout": "none" if self.timeout is None else f"{self.timeout:g}",
            "optuna_version": optuna.__version__,
        }
