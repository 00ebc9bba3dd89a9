"""Warm starts: a study begins with another study's best configurations.

``[study] warm_start = { study = "cifar10-seresnet", top = 5 }`` (or ``front = true``)
enqueues the source study's best trials (its ``top`` best on its first objective, or its
whole Pareto front) as this study's first trials, before the sampler proposes anything.
Only this study's searched parameters are taken over: a source parameter this study does
not search is ignored, and a value this study's space cannot take is dropped with one
warning line (the sampler then draws that parameter). Typical use: tune on CIFAR-10, then
start CIFAR-100 from the CIFAR-10 winners.

The configurations are enqueued once per study, under the claim lock, whichever worker
gets there first; rerunning or resuming the search does not enqueue them again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import TrialState

from search.engine.coordination import WARM_START_FROM
from search.errors import ConfigError
from search.store import open_storage
from search.study import StudySpec
from search.study.objectives import directions_of, pareto_front, ranked

DONE_ATTR = "warm_start.enqueued"  # study user attr: the warm start that was enqueued
FROM_ATTR = WARM_START_FROM  # trial user attr: "<source study>#<trial number>"


def source_trials(source: optuna.Study, top: int | None) -> list[optuna.trial.FrozenTrial]:
    """The source study's ``top`` best COMPLETE trials on its first objective (later
    objectives and then the trial number breaking ties), or its Pareto front (``top``
    None), best first."""
    complete = source.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    candidates = [(t.number, t.values) for t in complete]
    directions = directions_of(source)
    best = pareto_front(candidates, directions) if top is None else ranked(candidates, directions)
    by_number = {t.number: t for t in complete}
    return [by_number[number] for number, _ in best[:top]]


def restricted_params(
    spec: StudySpec, trial: optuna.trial.FrozenTrial, warn: Callable[[str], None]
) -> dict[str, Any]:
    """The trial's parameters that this study searches and whose value its space can take."""
    space = {p.key: p for p in spec.space}
    params = {}
    for key, value in trial.params.items():
        if key not in space:
            continue  # the source searched it, this study does not
        if space[key].can_take(value):
            params[key] = value
        else:
            warn(
                f"warm start: {key} = {value!r} of {spec.warm_start.study} trial "
                f"{trial.number} is outside this study's space: dropped, the sampler draws it"
            )
    return params


def warm_start_trials(spec: StudySpec, storage_url: str | None) -> list[optuna.trial.FrozenTrial]:
    """The source study's trials to start from (none without a warm start); a ConfigError
    when the source is missing or has no COMPLETE trial. Called before this study is
    created, so that a broken warm start leaves nothing behind."""
    ws = spec.warm_start
    if ws is None:
        return []
    trials = source_trials(open_source(ws.study, storage_url, str(spec.path)), ws.top)
    if not trials:
        raise ConfigError(
            "the warm-start study has no COMPLETE trial yet",
            file=str(spec.path),
            key="study.warm_start.study",
            value=ws.study,
        )
    return trials


def enqueue_warm_start(
    study: optuna.Study,
    spec: StudySpec,
    trials: list[optuna.trial.FrozenTrial],
    warn: Callable[[str], None],
    target: int | None = None,
) -> int:
    """Enqueue the ``warm_start_trials`` once per study (call under the claim lock);
    returns how many trials this call enqueued. More than ``target`` is a warning: the
    rest wait in the queue for a raised target."""
    ws = spec.warm_start
    if ws is None or study.user_attrs.get(DONE_ATTR) == str(ws):
        return 0
    seen: list[dict[str, Any]] = []
    for trial in trials:
        params = restricted_params(spec, trial, warn)
        if not params or params in seen:
            continue  # nothing of this study's space, or a configuration already queued
        seen.append(params)
        study.enqueue_trial(
            params, user_attrs={FROM_ATTR: f"{ws.study}#{trial.number}"}, skip_if_exists=True
        )
    study.set_user_attr(DONE_ATTR, str(ws))
    if target is not None and len(seen) > target:
        warn(
            f"warm start: {len(seen)} configurations queued but the target is {target} "
            f"trials: {len(seen) - target} wait for a raised --n-trials"
        )
    return len(seen)


def open_source(name: str, storage_url: str | None, file: str | None = None) -> optuna.Study:
    """The source study, in the same storage as this one (its journal file under
    ``mlruns/``, or the same database)."""
    try:
        storage = open_storage(name, storage_url, create=False)
        return optuna.load_study(study_name=name, storage=storage)
    except (ConfigError, KeyError):
        raise ConfigError(
            "no such study in the storage: search it first (`cli.py search --study "
            f"{name}`) with the same --storage",
            file=file,
            key="study.warm_start.study",
            value=name,
        ) from None
