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

__all__ = [
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
