"""Optuna samplers and pruners for a study: the one module that knows their constructors'
signatures, which of their arguments a study file may set, and this tool's defaults.

It reads a study only through the attributes ``SearchSettings`` lists: ``spec.py`` imports
this module (``StudySpec.settings`` reports the pruner's arguments), so this one does not
import ``StudySpec`` back.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import optuna

from search.errors import ConfigError, did_you_mean
from search.study.sampler_seeds import TrialSeededSampler

SAMPLERS: dict[str, type[optuna.samplers.BaseSampler]] = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "gp": optuna.samplers.GPSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "qmc": optuna.samplers.QMCSampler,
    "grid": optuna.samplers.GridSampler,
    "nsga2": optuna.samplers.NSGAIISampler,
    "nsga3": optuna.samplers.NSGAIIISampler,
}
# Samplers Optuna refuses on a study with several objectives.
SINGLE_OBJECTIVE_SAMPLERS = ("cmaes",)
PRUNERS: dict[str, type[optuna.pruners.BasePruner]] = {
    "hyperband": optuna.pruners.HyperbandPruner,
    "asha": optuna.pruners.SuccessiveHalvingPruner,
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "wilcoxon": optuna.pruners.WilcoxonPruner,
    "none": optuna.pruners.NopPruner,
}
# Samplers whose seed fixes one sequence that all workers share (see study_sampler).
SHARED_SEQUENCE_SAMPLERS = ("qmc", "grid")
# Constructor arguments the study file may not set, and where they come from instead.
RESERVED_ARGS = {"seed": "set it with study.seed", "search_space": "the grid comes from [space]"}


class SearchSettings(Protocol):
    """What this module reads from a ``StudySpec``."""

    @property
    def path(self) -> Path: ...
    @property
    def sampler(self) -> str: ...
    @property
    def sampler_args(self) -> dict: ...
    @property
    def seed(self) -> int: ...
    @property
    def pruner(self) -> str: ...
    @property
    def pruner_args(self) -> dict: ...
    @property
    def space(self) -> Sequence[Any]: ...  # ParamSpecs: .key and .values()
    def max_epochs(self) -> int: ...


# arguments a study file sets ----------------------------------------------------------------


def _annotation_types(annotation: Any) -> tuple[type, ...] | None:
    """Python types a TOML value may have for a constructor annotation; None when the
    argument needs a Python object (a callable, a sampler, ...) a study file can't hold."""
    text = (
        annotation
        if isinstance(annotation, str)
        else getattr(annotation, "__name__", str(annotation))
    )
    accepted: list[type] = []
    for part in (p.strip() for p in text.split("|")):
        if part == "None":
            continue
        if part in ("int", "float", "bool", "str"):
            accepted.append({"int": int, "float": float, "bool": bool, "str": str}[part])
        elif part.startswith(("dict", "Mapping")):
            accepted.append(dict)
        else:
            return None
    return tuple(accepted) or None


_TYPE_WORDS = {
    int: "an integer",
    float: "a number",
    bool: "true or false",
    str: "a string",
    dict: "a table",
}


def _value_fits(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool in types
    if isinstance(value, int) and (int in types or float in types):
        return True
    return isinstance(value, tuple(t for t in types if t is not bool))


def check_args(cls: type, args: Mapping[str, Any], *, file: str, key: str) -> dict[str, Any]:
    """Keyword arguments for ``cls`` from the study file's table ``key``, checked against
    its signature (not by calling it, so that the error can still say which key of which
    file is wrong)."""
    params = {
        p.name: p
        for p in inspect.signature(cls).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    settable = {
        n: _annotation_types(p.annotation) for n, p in params.items() if n not in RESERVED_ARGS
    }
    settable = {n: t for n, t in settable.items() if t is not None}
    for arg, value in args.items():
        where = f"{key}.{arg}"
        if arg in RESERVED_ARGS and arg in params:
            raise ConfigError(
                f"not allowed here: {RESERVED_ARGS[arg]}", file=file, key=where, value=value
            )
        if arg not in settable:
            why = (
                "takes a Python object, which a study file cannot hold"
                if arg in params
                else f"is not an argument of {cls.__name__}{did_you_mean(arg, settable)}"
            )
            raise ConfigError(
                f"{why}; settable here: {', '.join(settable) or 'none'}",
                file=file,
                key=where,
                value=value,
            )
        types = settable[arg]
        if not _value_fits(value, types):
            words = " or ".join(_TYPE_WORDS[t] for t in types)
            raise ConfigError(f"expected {words}", file=file, key=where, value=value)
    return dict(args)


# sampler and pruner -----------------------------------------------------------------------


def grid_space(spec: SearchSettings) -> dict[str, list]:
    """The search space as ``GridSampler`` wants it: every parameter's values."""
    grid = {}
    for p in spec.space:
        values = p.values()
        if values is None:
            raise ConfigError(
                "the grid sampler needs choices or stepped ranges: add step "
                'or use type = "categorical"',
                file=str(spec.path),
                key=f"space.{p.key}",
            )
        grid[p.key] = list(values)
    return grid


def make_sampler(
    spec: SearchSettings, seed: int | None = None, **objects: Any
) -> optuna.samplers.BaseSampler:
    """The study's sampler, seeded with ``seed`` (default ``spec.seed``); ``objects`` are
    constructor arguments a study file cannot hold (an ``independent_sampler``)."""
    cls = SAMPLERS[spec.sampler]
    seed = spec.seed if seed is None else seed
    try:
        if spec.sampler == "grid":
            return cls(search_space=grid_space(spec), seed=seed)
        return cls(seed=seed, **spec.sampler_args, **objects)
    except (ValueError, TypeError) as exc:
        # values the signature check cannot judge (e.g. a negative count) land here
        raise ConfigError(
            f"{cls.__name__} rejected its arguments: {exc}",
            file=str(spec.path),
            key="study.sampler_args",
            value=dict(spec.sampler_args),
        ) from None


def study_sampler(spec: SearchSettings) -> optuna.samplers.BaseSampler:
    """The sampler a worker runs the study with: reseeded for every trial from (study seed,
    trial number), so that parallel workers and resumed runs draw new points while one
    uninterrupted worker stays reproducible. QMC and grid keep the study seed: every worker
    must walk the same scrambled sequence, or the same shuffled grid, whose position the
    storage keeps (a grid point's id is an index into the shuffle). QMC's own fallback for
    the first trial and for conditional parameters is a random sampler, reseeded per trial."""
    if spec.sampler == "qmc":
        fallback = TrialSeededSampler(
            lambda seed: optuna.samplers.RandomSampler(seed=seed), spec.seed
        )
        return make_sampler(spec, independent_sampler=fallback)
    if spec.sampler in SHARED_SEQUENCE_SAMPLERS:
        return make_sampler(spec)
    return TrialSeededSampler(lambda seed: make_sampler(spec, seed), spec.seed)


def pruner_kwargs(spec: SearchSettings) -> dict[str, Any]:
    """The pruner's constructor arguments: this tool's defaults, then the file's."""
    defaults: dict[str, Any] = {
        # one step per epoch, so Hyperband's brackets span 1 .. epochs
        "hyperband": {"min_resource": 1, "max_resource": spec.max_epochs(), "reduction_factor": 3},
        # Steps are 1-based epochs and Optuna prunes once step >= n_warmup_steps, so 2 is
        # what keeps first-epoch accuracy (near chance for every trial) from deciding.
        "median": {"n_startup_trials": 5, "n_warmup_steps": 2},
        "percentile": {"percentile": 25.0, "n_warmup_steps": 2},
    }.get(spec.pruner, {})
    return {**defaults, **spec.pruner_args}


def make_pruner(spec: SearchSettings) -> optuna.pruners.BasePruner:
    """The study's pruner (steps are epochs)."""
    cls = PRUNERS[spec.pruner]
    kwargs = pruner_kwargs(spec)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"{cls.__name__} rejected its arguments: {exc}",
            file=str(spec.path),
            key="study.pruner_args",
            value=kwargs,
        ) from None
