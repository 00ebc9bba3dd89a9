"""Name -> builder registry: registration, lookup, knob checking and introspection.

Builders register themselves with ``@register_model(family)`` (as in timm), so adding
a model is one decorated function and the CLI/search space discover it by name.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Integral
from typing import TypeVar

from torch import nn

from .catalog import TIMM_KNOBS, TIMM_PREFIX, Table, is_timm, list_models, model_family, model_knobs
from .errors import ModelConfigError, closest
from .knobs import VALIDATORS, check_knob

# lookups that lived here before the catalog existed, for code that imports them from here
__all__ = [
    "builtin_table",
    "count_parameters",
    "create",
    "list_models",
    "model_family",
    "model_knobs",
    "register_model",
    "table",
]

Builder = Callable[..., nn.Module]
B = TypeVar("B", bound=Builder)


@dataclass(frozen=True)
class _Entry:
    builder: Builder
    family: str
    knobs: dict[str, object]


_REGISTRY: dict[str, _Entry] = {}


def _builder_knobs(fn: Callable[..., object]) -> dict[str, object]:
    """Knob defaults of a builder, enforcing the ``(num_classes, *, knob=default)`` shape."""
    name = fn.__name__
    params = list(inspect.signature(fn).parameters.values())
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if not params or params[0].name != "num_classes" or params[0].kind not in positional:
        raise ValueError(f"builder {name!r} must take num_classes as its first parameter")
    knobs: dict[str, object] = {}
    for param in params[1:]:
        if param.kind is not param.KEYWORD_ONLY or param.default is param.empty:
            message = f"builder {name!r}: {param.name!r} must be keyword-only with a default"
            raise ValueError(message)
        if param.name not in VALIDATORS:
            raise ValueError(f"builder {name!r}: {param.name!r} is not a known knob")
        try:
            check_knob(param.name, param.default)
        except ModelConfigError as err:
            # A bad default is the builder author's mistake: fail at import, not at create().
            raise ValueError(f"builder {name!r}: bad default: {err}") from None
        knobs[param.name] = param.default
    return knobs


def register_model(family: str) -> Callable[[B], B]:
    """Register the decorated builder under its ``__name__`` in ``family``.

    Raises ValueError (a programming error) if the name is already taken or the
    builder's signature does not follow the knob conventions.
    """

    def decorate(fn: B) -> B:
        name = fn.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = _Entry(builder=fn, family=family, knobs=_builder_knobs(fn))
        return fn

    return decorate


def table() -> Table:
    """Every registered model: name -> (family, knob defaults)."""
    return {name: (e.family, dict(e.knobs)) for name, e in _REGISTRY.items()}


def builtin_table() -> Table:
    """The models registered by this package's own modules (what ``catalog.json`` holds)."""
    return {
        name: (e.family, dict(e.knobs))
        for name, e in _REGISTRY.items()
        if e.builder.__module__.startswith(f"{__package__}.")
    }


def _entry(name: object) -> _Entry:
    if isinstance(name, str) and name not in _REGISTRY:
        from . import load_builtin_models

        load_builtin_models()  # this module imported on its own: register the built-ins
    if isinstance(name, str) and name in _REGISTRY:
        return _REGISTRY[name]
    model_family(name)  # raises the unknown-model error, with suggestions
    raise AssertionError(f"{name!r} is in the catalog but not registered")


def _check_knobs(
    name: str, accepted: dict[str, object], given: dict[str, object]
) -> dict[str, object]:
    """Reject knobs ``name`` does not take and bad values; return the normalised values."""
    for key in sorted(given):
        if key not in accepted:
            close = closest(key, accepted)
            hint = f"did you mean {close!r}? " if close else ""
            takes = ", ".join(sorted(accepted)) or "none"
            raise ModelConfigError(
                f"model {name!r} does not take knob {key!r} ({hint}it takes: {takes})",
                key=key,
                value=given[key],
            )
    return {key: check_knob(key, value) for key, value in given.items()}


def _check_num_classes(num_classes: object) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, Integral) or num_classes < 2:
        raise ModelConfigError(
            f"num_classes = {num_classes!r} must be an integer >= 2",
            key="num_classes",
            value=num_classes,
        )
    return int(num_classes)


def create(name: str, num_classes: int, *, image_size: int = 32, **model_args: object) -> nn.Module:
    """Build model ``name`` with ``num_classes`` outputs and the given knobs, for
    ``image_size`` x ``image_size`` input (CIFAR's 32, times ``aug.resize`` in a search).

    The built-in models ignore ``image_size``; a ``timm:`` model is built for this one where timm
    allows (``img_size``), and one that cannot take it raises ModelConfigError naming the
    ``aug.resize`` that fits. Every user mistake (unknown name or knob, bad value, a timm
    model timm cannot build) raises ModelConfigError.
    """
    if is_timm(name):
        from .timm_models import create_timm_model  # timm is optional: loaded when used

        knobs = _check_knobs(name, TIMM_KNOBS, model_args)
        classes = _check_num_classes(num_classes)
        return create_timm_model(name[len(TIMM_PREFIX) :], classes, knobs, image_size)
    entry = _entry(name)
    knobs = _check_knobs(name, entry.knobs, model_args)
    return entry.builder(_check_num_classes(num_classes), **knobs)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (works on the meta device too)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
