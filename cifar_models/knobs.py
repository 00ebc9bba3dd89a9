"""Validation of model knob values, shared by every builder.

Every knob name means the same thing in every model, so its check lives here once
rather than in each builder; builders may only use knobs listed in ``VALIDATORS``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from numbers import Integral, Real

from .errors import ModelConfigError

ATTENTION_KINDS = ("se", "eca", "none")


def _type_name(value: object) -> str:
    return type(value).__name__


def _bad(key: str, value: object, reason: str) -> ModelConfigError:
    return ModelConfigError(
        f"knob {key!r} = {value!r} {reason}", key=key, value=value, reason=reason
    )


def _integer(key: str, value: object) -> int:
    # bool is an Integral, but `se_reduction=True` is always a mistake.
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise _bad(key, value, f"must be an integer, got {_type_name(value)}")
    return int(value)


def _number(key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise _bad(key, value, f"must be a finite number, got {_type_name(value)}")
    return float(value)


def _out_of_range(key: str, value: object, bounds: str) -> ModelConfigError:
    return _bad(key, value, f"is out of range {bounds}")


def _attention(value: object) -> str:
    if not isinstance(value, str) or value not in ATTENTION_KINDS:
        raise _bad("attention", value, f"expected one of {', '.join(ATTENTION_KINDS)}")
    return value


def _se_reduction(value: object) -> int:
    number = _integer("se_reduction", value)
    if number < 1:
        raise _out_of_range("se_reduction", value, "[1, inf)")
    return number


def _eca_kernel(value: object) -> int:
    number = _integer("eca_kernel", value)
    if number < 1 or number % 2 == 0:
        # An even kernel cannot be centred with padding k // 2 and would shift channels.
        raise _bad("eca_kernel", value, "must be an odd integer >= 1")
    return number


def _ghost_ratio(value: object) -> int:
    number = _integer("ghost_ratio", value)
    if number < 2:
        raise _out_of_range("ghost_ratio", value, "[2, inf)")
    return number


def _dropout(value: object) -> float:
    number = _number("dropout", value)
    if not 0.0 <= number < 1.0:
        raise _out_of_range("dropout", value, "[0, 1)")
    return number


def _width(value: object) -> float:
    number = _number("width", value)
    if number <= 0.0:
        raise _out_of_range("width", value, "(0, inf)")
    return number


def _pretrained(value: object) -> bool:
    if not isinstance(value, bool):
        raise _bad("pretrained", value, f"must be true or false, got {_type_name(value)}")
    return value


VALIDATORS: dict[str, Callable[[object], object]] = {
    "attention": _attention,
    "se_reduction": _se_reduction,
    "eca_kernel": _eca_kernel,
    "ghost_ratio": _ghost_ratio,
    "dropout": _dropout,
    "width": _width,
    "pretrained": _pretrained,
}


def check_knob(key: str, value: object) -> object:
    """``value`` normalised (e.g. int -> float for ``dropout``), or ModelConfigError if bad."""
    return VALIDATORS[key](value)


# Knobs that only act when another knob has a given value: (that knob, the value). The
# model builders ignore them otherwise, so searching them then only adds noise.
KNOB_NEEDS: dict[str, tuple[str, object]] = {
    "se_reduction": ("attention", "se"),
    "eca_kernel": ("attention", "eca"),
}
