"""What a study file means: ``load_study`` reads and checks it into a ``StudySpec``,
``suggest`` turns one Optuna trial into a TrialConfig, and the samplers and pruners are
built from it here (``optuna_factory``)."""

from search.study.load import STUDIES_DIR, list_studies, load_study, resolve_study_path
from search.study.optuna_factory import (
    grid_space,
    make_pruner,
    make_sampler,
    pruner_kwargs,
    study_sampler,
)
from search.study.sampler_seeds import TrialSeededSampler, trial_seed
from search.study.spec import AblationSpec, ParamSpec, RetrainSpec, StudySpec, param_values
from search.study.suggest import current_value, suggest

__all__ = [
    "AblationSpec",
    "ParamSpec",
    "RetrainSpec",
    "STUDIES_DIR",
    "StudySpec",
    "TrialSeededSampler",
    "current_value",
    "grid_space",
    "list_studies",
    "load_study",
    "make_pruner",
    "make_sampler",
    "param_values",
    "pruner_kwargs",
    "resolve_study_path",
    "study_sampler",
    "suggest",
    "trial_seed",
]
