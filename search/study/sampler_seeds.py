"""One sampler RNG stream per trial, derived from (study seed, trial number).

A sampler built with ``seed=study.seed`` in every worker process draws the same random
points in every process: parallel workers, and a study resumed in a new process, repeat
each other's start-up trials. Reseeding from the trial number instead gives every trial
its own stream, whichever process runs it, while one uninterrupted worker still draws
exactly the same trials, in the same order, from the same study seed.

Samplers whose sequence must be shared by all workers are not wrapped: QMC (one scrambled
sequence, its position kept in the storage) and grid (a point's id indexes a shuffle made
from the seed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState


def trial_seed(study_seed: int, trial_number: int) -> int:
    """A 32-bit seed for one trial: distinct trials get independent streams."""
    return int(np.random.SeedSequence([study_seed, trial_number]).generate_state(1)[0])


class TrialSeededSampler(BaseSampler):
    """Builds a fresh sampler for each trial with ``make(trial_seed(seed, number))`` and
    hands it every call for that trial.

    The samplers this wraps keep what they learn in the study's storage (TPE, CMA-ES,
    NSGA-II and random samplers read the finished trials on each call), so a fresh
    instance per trial decides as a long-lived one would, apart from its RNG. GP loses only
    the warm start of its kernel fit (it refits from scratch each trial, a little slower).
    """

    def __init__(self, make: Callable[[int], BaseSampler], seed: int) -> None:
        self._make = make
        self._seed = seed
        self._current = make(seed)  # used only until the first trial begins

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._current = self._make(trial_seed(self._seed, trial.number))
        self._current.before_trial(study, trial)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self._current.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self._current.sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self._current.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._current.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        """Nothing to do: every trial is seeded from its number (Optuna calls this for
        thread workers, to keep their streams apart, which trial seeds already do)."""
