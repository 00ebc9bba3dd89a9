"""Checks of a study's fixed and searched model knobs against the models it can pick:
every model must accept them (an error), and a searched knob should be able to act (a
warning). ``cifar_models`` says which knobs a model takes and which knob each one needs.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import cifar_models
from search.config import TrialConfig
from search.errors import ConfigError
from search.study.spec import ParamSpec
from search.study.table_reader import TableReader


class ModelChecks(TableReader):
    """Model checks of a loaded ``[fixed]`` and ``[space]``; every error names ``file``."""

    def cross_check(self, fixed: dict[str, Any], space: tuple[ParamSpec, ...]) -> None:
        """Fixed values and searched values together must make valid configs for every
        model the study can pick (a model may not take a knob, e.g. dropout only)."""
        by_key = {p.key: p for p in space}
        names_param = by_key.get("model.name")
        if names_param is None:
            names = [fixed.get("model.name", TrialConfig().model.name)]
        else:  # model.name is a string key, so numeric() already required categorical
            names = list(names_param.choices)
        for name in names:
            try:
                TrialConfig().with_overrides({**fixed, "model.name": name})
            except ConfigError as exc:
                if names_param is None:
                    raise self.rekeyed(exc, f"fixed.{exc.key}") from None
                clash = "" if exc.key == "model.name" else f"with fixed {exc.key} = {exc.value!r}: "
                raise self.error(clash + exc.message, "space.model.name.choices", name) from None
        for p in space:
            if not p.key.startswith("model.") or p.key == "model.name":
                continue
            only = dict(p.when).get("model.name")
            for name in names:
                if only is not None and name not in only:
                    continue
                for sub, value in _candidates(p):
                    try:
                        TrialConfig().with_overrides({**fixed, "model.name": name, p.key: value})
                    except ConfigError as exc:
                        if sub == "range":  # a value inside the range, not an entry
                            raise self.error(
                                f"{exc.message} (a value the range takes)", f"space.{p.key}", value
                            ) from None
                        raise self.error(exc.message, f"space.{p.key}.{sub}", value) from None

    def warn_inert_knobs(self, fixed: Mapping[str, Any], space: tuple[ParamSpec, ...]) -> None:
        """One warning per searched model knob that can have no effect in any trial (an SE
        ratio searched while attention is never "se"): it would only add noise to the
        importance plots. ``cifar_models.KNOB_NEEDS`` says which knob each one needs."""
        by_key = {p.key: p for p in space}
        for p in space:
            knob = p.key.removeprefix("model.")
            if knob not in cifar_models.KNOB_NEEDS:
                continue
            needed_knob, needed = cifar_models.KNOB_NEEDS[knob]
            parent = f"model.{needed_knob}"
            values, how = self.knob_values(parent, needed, p, fixed, by_key)
            if needed not in values:
                shown = ", ".join(repr(v) for v in sorted(values, key=str))
                warnings.warn(
                    f"{self.file}: space.{p.key} can have no effect: {parent} is "
                    f"{shown} {how}, and {p.key} acts only with {parent} = "
                    f"{needed!r}; it would only add noise to importance plots",
                    stacklevel=2,
                )

    @staticmethod
    def knob_values(
        key: str,
        needed: Any,
        p: ParamSpec,
        fixed: Mapping[str, Any],
        by_key: Mapping[str, ParamSpec],
    ) -> tuple[set, str]:
        """The values model knob ``key`` can hold in the trials that suggest ``p``, and in
        words where they come from: ``p``'s own condition on it, else per model the study
        can pick for ``p``: the fixed value, the searched choices, or the model's default
        (``needed`` for a model that has ``p``'s effect built in, without the knob)."""
        when = dict(p.when)
        if key in when:
            return set(when[key]), "in the trials that search it"
        if "model.name" in when:
            names = list(when["model.name"])
        elif "model.name" in by_key:
            names = list(by_key["model.name"].choices)
        else:
            names = [fixed.get("model.name", TrialConfig().model.name)]
        searched = by_key.get(key)
        values, sources = set(), set()
        for name in names:
            if name.startswith("timm:"):
                continue
            only = dict(searched.when).get("model.name") if searched else None
            if key in fixed:
                values.add(fixed[key])
                sources.add("(fixed)")
            elif (
                searched is not None
                and searched.type == "categorical"
                and (only is None or name in only)
            ):
                values.update(searched.choices)
                sources.add("in [space]")
            else:
                default = cifar_models.model_knobs(name).get(key.removeprefix("model."), needed)
                values.add(default)
                sources.add(f"(the default of {name})")
        return values, " and ".join(sorted(sources))


def _candidates(p: ParamSpec) -> list[tuple[str, Any]]:
    """(entry key, value) pairs that stand for every value ``p`` can take: each choice, each
    value of a short integer range (a knob such as ``eca_kernel`` rejects even values inside
    a range whose ends are fine), else the two ends."""
    values = p.values()
    if p.type == "categorical":
        return [("choices", c) for c in values]
    ends = [("low", p.low), ("high", p.high)]
    if p.type == "int" and len(values) <= 1024:
        return [*ends, *(("range", v) for v in values[1:-1])]
    return ends
