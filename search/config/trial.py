"""``TrialConfig`` itself: the six sections composed, validated as a whole (the model takes
its knobs), and its flat and TOML forms."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cifar_models
from search.config.flat import coerce, flatten_tables, parse_value
from search.config.sections import (
    SECTIONS,
    AugConfig,
    DataConfig,
    ModelConfig,
    OptimConfig,
    RuntimeConfig,
    ScheduleConfig,
)
from search.errors import ConfigError, did_you_mean


@dataclass(frozen=True)
class TrialConfig:
    """One training recipe. Build with ``from_flat``/``from_toml``/``with_overrides``;
    ``__post_init__`` validates every value, so a TrialConfig that exists is runnable
    (as far as can be known without data)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    aug: AugConfig = field(default_factory=AugConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def __post_init__(self) -> None:
        for section in SECTIONS:
            part = getattr(self, section)
            for f in dataclasses.fields(part):
                coerce(f"{section}.{f.name}", getattr(part, f.name))
        _check_model(self.model)

    # flat form ---------------------------------------------------------------
    def to_flat(self) -> dict[str, Any]:
        """``{"model.name": "resnet18", "optim.lr": 0.1, ...}``; None knobs left out."""
        return {
            f"{s}.{k}": v
            for s in SECTIONS
            for k, v in dataclasses.asdict(getattr(self, s)).items()
            if v is not None
        }

    @classmethod
    def from_flat(cls, flat: Mapping[str, Any]) -> TrialConfig:
        """Build from flat keys; values may be typed or text (text is parsed per key)."""
        return cls().with_overrides(flat)

    def with_overrides(self, overrides: Mapping[str, Any]) -> TrialConfig:
        """A copy with flat ``section.key`` overrides applied and validated."""
        values = {s: dataclasses.asdict(getattr(self, s)) for s in SECTIONS}
        for key, raw in overrides.items():
            value = parse_value(key, raw) if isinstance(raw, str) else coerce(key, raw)
            section, name = key.split(".", 1)
            values[section][name] = value
        return TrialConfig(**{s: SECTIONS[s](**values[s]) for s in SECTIONS})

    def diff(self, other: TrialConfig) -> dict[str, tuple[Any, Any]]:
        """Keys whose values differ: ``{key: (self's, other's)}``."""
        mine, theirs = self.to_flat(), other.to_flat()
        return {
            k: (mine.get(k), theirs.get(k))
            for k in sorted(set(mine) | set(theirs))
            if mine.get(k) != theirs.get(k)
        }

    # TOML form ---------------------------------------------------------------
    def to_toml(self) -> str:
        # Imported here: only writing needs it, so training and benchmarking import
        # without it (a bare GPU machine often lacks it).
        import tomli_w

        tables: dict[str, dict[str, Any]] = {}
        for key, value in self.to_flat().items():
            section, name = key.split(".", 1)
            tables.setdefault(section, {})[name] = (
                list(value) if isinstance(value, tuple) else value
            )
        return tomli_w.dumps(tables)

    @classmethod
    def from_toml_text(cls, text: str, *, file: str = "<config>") -> TrialConfig:
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"not valid TOML: {exc}", file=file) from None
        try:
            return cls.from_flat(flatten_tables(doc))
        except ConfigError as exc:
            raise exc.with_file(file) from None

    @classmethod
    def from_file(cls, path: str | Path) -> TrialConfig:
        """Read a TOML config, or the JSON that ``cli.py best --format json`` writes (a
        flat ``{"optim.lr": ...}`` mapping, alone or under a "config" key)."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read config file: {exc.strerror}", file=str(path)) from None
        if path.suffix != ".json":
            return cls.from_toml_text(text, file=str(path))
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"not valid JSON: {exc}", file=str(path)) from None
        flat = doc.get("config", doc) if isinstance(doc, dict) else None
        if not isinstance(flat, dict):
            raise ConfigError("expected a JSON object of config keys", file=str(path))
        try:
            return cls.from_flat(flat)
        except ConfigError as exc:
            raise exc.with_file(str(path)) from None


def _check_model(model: ModelConfig) -> None:
    """Unknown model names and knobs the model does not take fail here, at config time."""
    if model.name.startswith("timm:"):
        allowed: set[str] = {"dropout"}
    elif model.name in cifar_models.list_models():
        allowed = set(cifar_models.model_knobs(model.name))
    else:
        known = cifar_models.list_models()
        raise ConfigError(
            f"unknown model{did_you_mean(model.name, known)}; known models: "
            f"{', '.join(known)} or timm:<name>",
            key="model.name",
            value=model.name,
        )
    for name in model.model_args():
        if name not in allowed:
            raise ConfigError(
                f"model {model.name!r} does not take this knob (it takes: "
                f"{', '.join(sorted(allowed)) or 'none'})",
                key=f"model.{name}",
                value=getattr(model, name),
            )
