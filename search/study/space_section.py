"""The ``[space]`` section of a study file: one ``ParamSpec`` per entry, in file order, with
its ``when`` conditions, each entry checked against the config keys and the fixed values
(and, for ``sampler = "grid"``, against what a grid can hold).
"""

from __future__ import annotations

import dataclasses
import decimal
from collections.abc import Mapping
from typing import Any

from search.config import FLAT_KEYS, coerce
from search.errors import ConfigError, closest, did_you_mean
from search.study.spec import ENTRY_KEYS, PARAM_TYPES, ParamSpec, same_value
from search.study.table_reader import TableReader, is_int, is_number


class SpaceReader(TableReader):
    """Reads ``[space]`` entries into ParamSpecs; every error names ``file``."""

    def space(
        self, table: dict[str, Any], fixed: dict[str, Any], allow_empty: bool = False
    ) -> tuple[ParamSpec, ...]:
        # a table with a type, or at a config key's place (type forgotten), is one parameter
        entries = self.flatten(
            table,
            is_leaf=lambda key, value: (
                not isinstance(value, dict) or "type" in value or key in FLAT_KEYS
            ),
        )
        if not entries and not allow_empty:  # an ablation-only study searches nothing
            raise self.error(
                "no parameters to search: add entries such as "
                '"optim.lr" = { type = "float", low = 0.01, high = 0.3, '
                "log = true }",
                "space",
            )
        declared: dict[str, ParamSpec] = {}
        for key, entry in entries:
            if key in declared:
                raise self.error(
                    "declared twice (once as a dotted key, once quoted?)", f"space.{key}"
                )
            declared[key] = self.param(key, entry, declared, fixed)
        return tuple(declared.values())

    def param(
        self, key: str, entry: Any, declared: Mapping[str, ParamSpec], fixed: Mapping[str, Any]
    ) -> ParamSpec:
        where = f"space.{key}"
        if key not in FLAT_KEYS:
            raise self.error(f"unknown config key{did_you_mean(key, FLAT_KEYS)}", where)
        if key in fixed:
            source = "study.dataset" if key == "data.dataset" else f"fixed.{key}"
            raise self.error(
                f"also set by {source} = {fixed[key]!r}; a key is either "
                f"fixed or searched, remove one",
                where,
            )
        if not isinstance(entry, dict):
            raise self.error(
                'expected a table such as { type = "float", low = 0.01, high = 0.3 }', where, entry
            )
        if "type" not in entry:
            raise self.error("missing type (categorical, int or float)", f"{where}.type")
        kind = entry["type"]
        if kind not in PARAM_TYPES:
            raise self.error(
                f"unknown parameter type{did_you_mean(str(kind), PARAM_TYPES)}; "
                f"expected one of: {', '.join(PARAM_TYPES)}",
                f"{where}.type",
                kind,
            )
        allowed = ENTRY_KEYS[kind]
        for name, value in entry.items():
            if name not in allowed:
                raise self.error(
                    f"not a {kind} parameter setting"
                    f"{did_you_mean(name, allowed)}; expected: "
                    f"{', '.join(allowed)}",
                    f"{where}.{name}",
                    value,
                )
        if kind == "categorical":
            param = ParamSpec(key, kind, choices=self.choices(key, entry))
        else:
            param = self.numeric(key, kind, entry)
        when = self.when(key, entry["when"], declared, fixed) if "when" in entry else ()
        return dataclasses.replace(param, when=when)

    def choices(self, key: str, entry: Mapping[str, Any]) -> tuple:
        where = f"space.{key}.choices"
        if "choices" not in entry:
            raise self.error("a categorical parameter needs choices = [...]", where)
        raw = entry["choices"]
        if not isinstance(raw, list) or not raw:
            raise self.error("expected a non-empty list", where, raw)
        out: list[Any] = []
        for value in raw:
            if not isinstance(value, (str, int, float, bool)):
                raise self.error("each choice must be a string, number or boolean", where, value)
            try:
                value = coerce(key, value)
            except ConfigError as exc:
                raise self.rekeyed(exc, where) from None
            if any(same_value(value, seen) for seen in out):
                raise self.error("listed twice", where, value)
            out.append(value)
        return tuple(out)

    def numeric(self, key: str, kind: str, entry: Mapping[str, Any]) -> ParamSpec:
        where = f"space.{key}"
        key_type = FLAT_KEYS[key][0]
        if kind == "float" and key_type is int:
            raise self.error(f'{key} is an integer: use type = "int"', f"{where}.type", kind)
        if key_type not in (int, float):
            raise self.error(
                f'{key} is not a number: use type = "categorical"', f"{where}.type", kind
            )
        is_ok, word = (is_int, "an integer") if kind == "int" else (is_number, "a number")
        bounds = {}
        for name in ("low", "high"):
            if name not in entry:
                raise self.error(f"type = {kind!r} needs low and high", f"{where}.{name}")
            value = entry[name]
            if not is_ok(value):
                raise self.error(f"expected {word}", f"{where}.{name}", value)
            bounds[name] = value if kind == "int" else float(value)
        low, high = bounds["low"], bounds["high"]
        log = entry.get("log", False)
        if not isinstance(log, bool):
            raise self.error("expected true or false", f"{where}.log", log)
        step = entry.get("step")
        if step is not None:
            if not is_ok(step):
                raise self.error(f"expected {word}", f"{where}.step", step)
            if step <= 0:
                raise self.error("must be positive", f"{where}.step", step)
            step = step if kind == "int" else float(step)

        if low > high or (kind == "float" and low == high):
            raise self.error(f"empty range: low must be below high = {high!r}", f"{where}.low", low)
        if log and low <= 0:
            raise self.error("log = true needs low > 0", f"{where}.low", low)
        if log and step is not None:
            raise self.error("log = true cannot be combined with step", f"{where}.log", log)
        if step is not None and high > low:
            span = decimal.Decimal(str(high)) - decimal.Decimal(str(low))
            if step > high - low:
                raise self.error(
                    f"larger than the range high - low = {span}", f"{where}.step", step
                )
            # Optuna would silently shorten the range to a multiple of step
            if span % decimal.Decimal(str(step)) != 0:
                raise self.error(
                    f"the range high - low = {span} is not a multiple of step",
                    f"{where}.step",
                    step,
                )
        for name, value in bounds.items():
            try:
                coerce(key, value)
            except ConfigError as exc:
                raise self.rekeyed(exc, f"{where}.{name}") from None
        return ParamSpec(key, kind, low=low, high=high, step=step, log=log)

    def when(
        self, key: str, raw: Any, declared: Mapping[str, ParamSpec], fixed: Mapping[str, Any]
    ) -> tuple[tuple[str, tuple], ...]:
        where = f"space.{key}.when"
        if not isinstance(raw, dict) or not raw:
            raise self.error('expected a table such as { "model.attention" = "se" }', where, raw)
        conditions = []
        for other, wanted in self.flatten(raw):
            at = f"{where}.{other}"
            if other not in declared and other not in fixed:
                known = list(declared) + list(fixed)
                raise self.error(
                    f"must name a parameter declared earlier in [space] or a "
                    f"fixed key{did_you_mean(other, known)}",
                    at,
                    wanted,
                )
            values = wanted if isinstance(wanted, list) else [wanted]
            if not values:
                raise self.error("expected a value or a non-empty list of values", at, wanted)
            allowed = []
            for value in values:
                if not isinstance(value, (str, int, float, bool)):
                    raise self.error("expected a string, number or boolean", at, value)
                try:
                    value = coerce(other, value)
                except ConfigError as exc:
                    raise self.rekeyed(exc, at) from None
                if other in declared and not declared[other].can_take(value):
                    listed = [str(c) for c in declared[other].choices or ()]
                    typo = closest(str(value), listed)
                    if typo is not None:  # the mistake is in the list, not in this condition
                        raise self.error(
                            f"did you mean {value!r}? space.{key}.when refers to it, but "
                            f"this list does not hold it",
                            f"space.{other}.choices",
                            typo,
                        )
                    raise self.error(f"{other} never takes this value in [space]", at, value)
                allowed.append(value)
            if other in fixed and not any(same_value(fixed[other], v) for v in allowed):
                raise self.error(
                    f"never holds: {other} is fixed to {fixed[other]!r}, so "
                    f"{key} would never be searched",
                    at,
                    wanted,
                )
            conditions.append((other, tuple(allowed)))
        return tuple(conditions)

    def check_grid(self, space: tuple[ParamSpec, ...]) -> None:
        for p in space:
            if not p.discrete:
                raise self.error(
                    "the grid sampler needs choices or stepped ranges: add step "
                    'or use type = "categorical"',
                    f"space.{p.key}",
                )
            if p.when:
                # a skipped parameter still multiplies the grid: identical trials would run
                raise self.error(
                    'conditional parameters do not work with sampler = "grid"',
                    f"space.{p.key}.when",
                    {k: list(v) for k, v in p.when},
                )
