"""From a study's ``[space]`` to a TrialConfig: the only module that calls ``trial.suggest_*``.

Parameters are suggested in file order under their flat config key (``optim.lr``), so
Optuna's parameter names, MLflow's params and ``TrialConfig.to_flat()`` all agree.
"""
from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

import optuna

import cifar_models
from search.training import PRESETS
from search.config import TrialConfig
from search.errors import ConfigError

if TYPE_CHECKING:  # study.py imports this module, so only for annotations
    from search.study.spec import ParamSpec, StudySpec


def suggest(spec: StudySpec, trial: optuna.trial.BaseTrial) -> TrialConfig:
    """Sample one configuration: every parameter of ``spec.space`` whose ``when``
    condition holds, on top of the study's fixed values."""
    base = spec.base_config()
    sampled: dict[str, Any] = {}
    for p in spec.space:
        if not all(_matches(current_value(key, sampled, base), allowed)
                   for key, allowed in p.when):
            continue
        if p.type == "categorical":
            sampled[p.key] = trial.suggest_categorical(p.key, list(p.choices))
        elif p.type == "int":
            sampled[p.key] = trial.suggest_int(p.key, p.low, p.high, step=p.step or 1,
                                               log=p.log)
        else:
            sampled[p.key] = trial.suggest_float(p.key, p.low, p.high, step=p.step, log=p.log)
    return base.with_overrides(sampled)


def current_value(key: str, sampled: dict[str, Any], base: TrialConfig) -> Any:
    """The value ``key`` has so far in a trial: sampled, else the base config's, where a
    knob left at None reads as the model's or the augmentation preset's own default (so
    ``when = { "model.attention" = "se" }`` holds for an ``se_resnet18``)."""
    if key in sampled:
        return sampled[key]
    section, name = key.split(".", 1)
    value = getattr(getattr(base, section), name)
    if value is not None:
        return value
    if section == "model":
        model = sampled.get("model.name", base.model.name)
        return cifar_models.model_knobs(model).get(name)
    if section == "aug":
        return PRESETS[sampled.get("aug.preset", base.aug.preset)].get(name)
    return None


def _matches(value: Any, allowed: tuple) -> bool:
    # `True == 1` in Python; a condition on a bool must not match an int
    return any(value == a and isinstance(value, bool) == isinstance(a, bool) for a in allowed)


def param_values(p: ParamSpec) -> list | None:
    """Every value a discrete parameter takes, in order; None for a continuous float."""
    if p.type == "categorical":
        return list(p.choices)
    if p.type == "int":
        return list(range(p.low, p.high + 1, p.step or 1))
    if p.step is None:
        return None
    # exact decimal steps: 0.1 * 3 gives 0.3, not 0.30000000000000004
    low, step = Decimal(str(p.low)), Decimal(str(p.step))
    n = int((Decimal(str(p.high)) - low) // step)
    return [float(low + i * step) for i in range(n + 1)]


def grid_space(spec: StudySpec) -> dict[str, list]:
    """The search space as ``GridSampler`` wants it: every parameter's values."""
    grid = {}
    for p in spec.space:
        values = param_values(p)
        if values is None:
            raise ConfigError("the grid sampler needs choices or stepped ranges: add step "
                              "or use type = \"categorical\"", file=str(spec.path),
                              key=f"space.{p.key}")
        grid[p.key] = values
    return grid
