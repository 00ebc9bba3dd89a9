"""The flat form of a config: ``section.key`` names, their types, and values written as text
(``--set``, MLflow params, TOML tables) parsed, checked and formatted back exactly."""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping
from typing import Any

from search.config.sections import SECTIONS
from search.errors import ConfigError, did_you_mean


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _base_type(hint: Any) -> Any:
    """``int | None`` -> int; ``tuple[float, ...]`` -> tuple."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return _base_type(args[0])
    return typing.get_origin(hint) or hint


FLAT_KEYS: dict[str, tuple[type, dataclasses.Field]] = {
    f"{section}.{f.name}": (_base_type(_hints(cls)[f.name]), f)
    for section, cls in SECTIONS.items()
    for f in dataclasses.fields(cls)
}


def coerce(key: str, value: Any) -> Any:
    """Check a typed value (from TOML or Python) for ``key`` and return it normalised."""
    if key not in FLAT_KEYS:
        raise ConfigError(f"unknown key{did_you_mean(key, FLAT_KEYS)}", key=key, value=value)
    typ, f = FLAT_KEYS[key]
    if value is None:
        if f.default is not None:
            raise ConfigError("a value is required", key=key, value=value)
        return None
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if typ is tuple and isinstance(value, (list, tuple)):
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise ConfigError("expected a list of numbers", key=key, value=value)
        value = tuple(float(v) for v in value)
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise ConfigError(f"expected {_type_word(typ)}", key=key, value=value)
    check = f.metadata.get("check")
    problem = check(value) if check else None
    if problem:
        raise ConfigError(problem, key=key, value=value)
    return value


def parse_value(key: str, text: str) -> Any:
    """Parse a value written as text (``--set``, MLflow params) for ``key``.

    Strings are taken verbatim; other types are read as TOML literals, so ``0.1``,
    ``true``, ``[0.5, 0.75]`` work; an empty text means "default" (None).
    """
    if key not in FLAT_KEYS:
        raise ConfigError(f"unknown key{did_you_mean(key, FLAT_KEYS)}", key=key, value=text)
    typ, _ = FLAT_KEYS[key]
    text = text.strip()
    if text == "" or text in ("None", "null"):
        return coerce(key, None)
    if typ is str:
        return coerce(key, text.strip("'\""))
    if typ is bool and text in ("True", "False"):
        return coerce(key, text == "True")
    if typ is tuple and text.startswith("("):
        text = "[" + text[1:-1].rstrip(", ") + "]"
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        raise ConfigError(f"expected {_type_word(typ)}", key=key, value=text) from None
    return coerce(key, value)


def format_value(value: Any) -> str:
    """Text for a flat value that ``parse_value`` reads back to the same value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(repr(v) for v in value) + "]"
    return value if isinstance(value, str) else repr(value)


def _type_word(typ: type) -> str:
    return {
        int: "an integer",
        float: "a number",
        bool: "true or false",
        str: "a string",
        tuple: "a list of numbers",
    }.get(typ, typ.__name__)


def flatten_tables(doc: Mapping[str, Any], *, file: str | None = None) -> dict[str, Any]:
    """``{"optim": {"lr": 0.1}}`` -> ``{"optim.lr": 0.1}``; extra tables are errors.

    Top-level keys that are not tables are errors too, except that ``[config]``-less
    files may also use dotted keys at the top (``"optim.lr" = 0.1``).
    """
    flat: dict[str, Any] = {}
    for section, body in doc.items():
        if isinstance(body, dict) and section in SECTIONS:
            for name, value in body.items():
                flat[f"{section}.{name}"] = value
        elif "." in section or section in SECTIONS:
            flat[section] = body
        else:
            raise ConfigError(
                f"unknown section{did_you_mean(section, SECTIONS)}; expected {', '.join(SECTIONS)}",
                file=file,
                key=section,
            )
    for key in flat:
        if key not in FLAT_KEYS:
            raise ConfigError(
                f"unknown key{did_you_mean(key, FLAT_KEYS)}", file=file, key=key, value=flat[key]
            )
    return flat


def parse_assignments(assignments: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``["optim.lr=0.05", ...]`` -> ``{"optim.lr": 0.05}`` (parsed and validated)."""
    out: dict[str, Any] = {}
    for text in assignments:
        key, sep, value = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError("expected key=value, e.g. optim.lr=0.05", key="--set", value=text)
        out[key] = parse_value(key, value)
    return out


def describe_keys() -> list[tuple[str, str, str]]:
    """(key, default, description) for every config key, for docs and ``--help``."""
    rows = []
    for key, (_, f) in FLAT_KEYS.items():
        unset = "(preset's)" if key.startswith("aug.") else "(model's)"
        default = (
            unset
            if f.default is None
            else format_value(
                f.default if f.default is not dataclasses.MISSING else f.default_factory()
            )
        )
        rows.append((key, default, f.metadata.get("doc", "")))
    return rows
