"""CIFAR classifiers behind one name-based registry.

``create("resnet18", 10, attention="se")`` builds a model; ``list_models()``,
``model_family()`` and ``model_knobs()`` describe what exists so a search space can
be derived from the registry instead of being hard-coded.

Importing the package does not import torch: the description functions read the
catalog of built-in models (``catalog.py``) until something builds a model, which loads
the builders (``create``, ``count_parameters``, ``register_model``, ``registry``).
"""

from __future__ import annotations

import importlib

from .catalog import list_models, model_family, model_knobs
from .errors import ModelConfigError
from .knobs import KNOB_NEEDS, check_knob

# The built-in model modules, imported for their side effect: registering their builders.
BUILTIN_MODULES = ("cifar_resnet", "cnn", "densenet", "external", "resnet")
_TORCH_NAMES = ("count_parameters", "create", "register_model")
_state = "unloaded"  # -> "loading" -> "loaded"; back to "unloaded" if loading fails


def import_builtin_models() -> None:
    for module in BUILTIN_MODULES:
        importlib.import_module(f"{__name__}.{module}")


def load_builtin_models() -> None:
    """Register the built-in builders (imports torch) and check the catalog against them.

    A stale catalog raises here on every call, never only once, so no lookup goes on with
    a registry that disagrees with what the torch-free path reported."""
    global _state
    if _state != "unloaded":  # loaded, or re-entered by a lookup while the modules import
        return
    _state = "loading"
    try:
        import_builtin_models()
        from .catalog import check_catalog
        from .registry import builtin_table

        check_catalog(builtin_table())
    except BaseException:
        _state = "unloaded"
        raise
    _state = "loaded"


def __getattr__(name: str) -> object:
    if name in _TORCH_NAMES or name == "registry":
        load_builtin_models()
        from . import registry

        return registry if name == "registry" else getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
