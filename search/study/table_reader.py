"""Checked values out of a parsed TOML document: the part of loading a study file that every
section shares. Every error is one ``ConfigError`` naming the file, the key and the value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from search.errors import ConfigError, did_you_mean

NO_VALUE = object()  # an error without a value (a missing key, a whole section)


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def join_key(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


class TableReader:
    """Reads tables and values of one study file; every error names ``file``."""

    def __init__(self, file: str) -> None:
        self.file = file

    def error(self, message: str, key: str | None, value: Any = NO_VALUE) -> ConfigError:
        if value is NO_VALUE:
            return ConfigError(message, file=self.file, key=key)
        return ConfigError(message, file=self.file, key=key, value=value)

    def rekeyed(self, exc: ConfigError, key: str, value: Any = NO_VALUE) -> ConfigError:
        """A config-module error moved to this file's ``key``."""
        return self.error(exc.message, key, exc.value if value is NO_VALUE else value)

    def check_keys(
        self, table: Mapping[str, Any], allowed: tuple[str, ...], prefix: str, what: str = "key"
    ) -> None:
        for key, value in table.items():
            if key not in allowed:
                raise self.error(
                    f"unknown {what}{did_you_mean(key, allowed)}; expected one "
                    f"of: {', '.join(allowed)}",
                    join_key(prefix, key),
                    value if what == "key" else NO_VALUE,
                )

    def table(self, parent: Mapping[str, Any], name: str, prefix: str) -> dict[str, Any]:
        value = parent.get(name, {})
        if not isinstance(value, dict):
            raise self.error("expected a table", join_key(prefix, name), value)
        return value

    def integer(
        self, table: Mapping[str, Any], name: str, prefix: str, default: Any, minimum: int
    ) -> int:
        key = join_key(prefix, name)
        if name not in table:
            if default is NO_VALUE:
                raise self.error("is required", key)
            return default
        value = table[name]
        if not is_int(value):
            raise self.error("expected an integer", key, value)
        if value < minimum:
            raise self.error(f"must be at least {minimum}", key, value)
        return value

    def flatten(
        self,
        table: dict[str, Any],
        prefix: str = "",
        is_leaf: Callable[[str, Any], bool] = lambda key, value: not isinstance(value, dict),
    ) -> list[tuple[str, Any]]:
        """Nested tables / dotted keys -> ``[(flat key, value), ...]`` in document order."""
        out = []
        for key, value in table.items():
            flat = join_key(prefix, key)
            if is_leaf(flat, value):
                out.append((flat, value))
            else:
                out.extend(self.flatten(value, flat, is_leaf))
        return out
