"""From a study's ``[space]`` to a TrialConfig: the only module that calls ``trial.suggest_*``.

Parameters are suggested in file order under their flat config key (``optim.lr``), so
Optuna's parameter names, MLflow's params and ``TrialConfig.to_flat()`` all agree.
"""

from __future__ import annotations

from typing import Any

import optuna

import cifar_models
from search.config import PRESETS, TrialConfig
from search.study.spec import StudySpec, same_value


def suggest(spec: StudySpec, trial: optuna.trial.BaseTrial) -> TrialConfig:
    """Sample one configuration: every parameter of ``spec.space`` whose ``when``
    condition holds, on top of the study's fixed values."""
    base = spec.base_config()
    sampled: dict[str, Any] = {}
    for p in spec.space:
        if not all(_matches(current_value(key, sampled, base), allowed) for key, allowed in p.when):
            continue
        if p.type == "categorical":
            sampled[p.key] = trial.suggest_categorical(p.key, list(p.choices))
        elif p.type == "int":
            sampled[p.key] = trial.suggest_int(p.key, p.low, p.high, step=p.step or 1, log=p.log)
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
    return any(same_value(value, a) for a in allowed)
