"""CIFAR classifiers behind one name-based registry.

``create("resnet18", 10, attention="se")`` builds a model; ``list_models()``,
``model_family()`` and ``model_knobs()`` describe what exists so a search space can
be derived from the registry instead of being hard-coded.
"""

from __future__ import annotations

# The model modules are imported for their side effect: registering their builders.
from . import cifar_resnet, cnn, densenet, external, resnet  # noqa: F401
from .errors import ModelConfigError
from .knobs import KNOB_NEEDS, check_knob
from .registry import (
    count_parameters,
    create,
    list_models,
    model_family,
    model_knobs,
    register_model,
)

__all__ = [
    "KNOB_NEEDS",
    "ModelConfigError",
    "check_knob",
    "count_parameters",
    "create",
    "list_models",
    "model_family",
    "model_knobs",
    "register_model",
]
