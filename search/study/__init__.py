from search.study.sampler_seeds import TrialSeededSampler, trial_seed
from search.study.spec import AblationSpec, STUDIES_DIR, StudySpec, list_studies, load_study, make_pruner, make_sampler, pruner_kwargs, resolve_study_path, study_sampler
from search.study.suggest import current_value, grid_space, param_values, suggest

__all__ = [
    "AblationSpec",
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
