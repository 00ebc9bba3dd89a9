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
    COMPILE_MODES,
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
# an eager trial leaves a fast GPU idle much of the time (its step waits on the CPU's kernel
# launches), so several share it. On an H200 (torch 2.11, batch 512, full augmentation,
# `bench --concurrency 1,2,4`), 2 and 4 processes trained 1.88x and 3.55x the images/s of one
# for resnet20, 1.84x and 2.46x for se_resnet18; against `bench` of one process alone on
# other machine starts, 4 gave about 2x and 1.8x (docs/performance.md). Each process holds
# its own model and batch on the GPU (densenet121 at batch 512: 9.9 GB), so big models on a
# small GPU want fewer.
TRIALS_PER_GPU = 4

__all__ = [
    "TRIALS_PER_GPU",
    "COMPILE_MODES",
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
