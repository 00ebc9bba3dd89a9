"""``TrialConfig``: the whole recipe of one training run, as one frozen, validated value.

It is what Optuna's suggestions turn into, what MLflow logs as params (flat
``section.key`` names), what ``best`` exports and what ``train --config`` reads back, so
the flat form and the TOML form must round-trip exactly.

A knob left at ``None`` means "the model's (or the augmentation preset's) own default";
``None`` values are left out of the flat and TOML forms, and a missing key reads back as
``None``, which keeps the round trip exact.
"""

from search.config.flat import (
    FLAT_KEYS,
    coerce,
    describe_keys,
    flatten_tables,
    format_value,
    parse_assignments,
    parse_value,
)
from search.config.sections import (
    DATASETS,
    OPTIMIZERS,
    PRESETS,
    SCHEDULES,
    SECTIONS,
    AugConfig,
    DataConfig,
    ModelConfig,
    OptimConfig,
    RuntimeConfig,
    ScheduleConfig,
)
from search.config.trial import TrialConfig

# Concurrent trials per GPU unless told (search --gpus, slurm tasks with GPUs, api.search):
# one trial leaves a fast GPU idle about half the time (its step waits on the CPU's kernel
# launches), so two share it at almost no cost to each. On an H200 (torch 2.11, batch 512,
# full augmentation) two trials of a real search each trained at the speed of one alone:
# resnet20 40,348 img/s per trial, se_resnet18 22,123, against 39,091 and 22,373 for one
# in `bench` (docs/performance.md). Four per GPU is not measured yet.
TRIALS_PER_GPU = 2

__all__ = [
    "TRIALS_PER_GPU",
    "DATASETS",
    "FLAT_KEYS",
    "OPTIMIZERS",
    "PRESETS",
    "SCHEDULES",
    "SECTIONS",
    "AugConfig",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "RuntimeConfig",
    "ScheduleConfig",
    "TrialConfig",
    "coerce",
    "describe_keys",
    "flatten_tables",
    "format_value",
    "parse_assignments",
    "parse_value",
]
