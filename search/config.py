"""``TrialConfig``: the whole recipe of one training run, as one frozen, validated value.

It is what Optuna's suggestions turn into, what MLflow logs as params (flat
``section.key`` names), what ``best`` exports and what ``train --config`` reads back, so
the flat form and the TOML form must round-trip exactly.

A knob left at ``None`` means "the model's (or the augmentation preset's) own default";
``None`` values are left out of the flat and TOML forms, and a missing key reads back as
``None``, which keeps the round trip exact.
"""
from __future__ import annotations

import dataclasses
import json
import math
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cifar_models
from search.errors import ConfigError, did_you_mean

DATASETS = ("cifar10", "cifar100", "digits", "synthetic")
OPTIMIZERS = ("sgd", "adamw", "adam")
SCHEDULES = ("cosine", "onecycle", "multistep", "none")
AUG_PRESETS = ("none", "basic", "standard", "full")


def _choice(*allowed: str) -> Callable[[Any], str | None]:
    return lambda v: None if v in allowed else f"expected one of {', '.join(allowed)}"


def _range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
           hi_open: bool = False) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        bad_lo = lo is not None and (v <= lo if lo_open else v < lo)
        bad_hi = hi is not None and (v >= hi if hi_open else v > hi)
        if bad_lo or bad_hi or (isinstance(v, float) and not math.isfinite(v)):
            left = "(" if lo_open else "["
            right = ")" if hi_open else "]"
            return f"out of range {left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"
        return None
    return check


def _fractions(v: tuple[float, ...]) -> str | None:
    if any(not 0 < m < 1 for m in v) or list(v) != sorted(set(v)):
        return "expected increasing fractions of training in (0, 1), e.g. [0.5, 0.75]"
    return None


def _device(v: str) -> str | None:
    if v in ("auto", "cpu", "cuda", "mps") or (v.startswith("cuda:") and v[5:].isdigit()):
        return None
    return "expected auto, cpu, cuda, cuda:N or mps"


def _model_knob(name: str) -> Callable[[Any], str | None]:
    """The check of model knob ``name``, owned by ``cifar_models`` (one validator per knob,
    shared by study files, ``--set``, config files and the model builders)."""
    def check(v: Any) -> str | None:
        try:
            cifar_models.check_knob(name, v)
        except cifar_models.ModelConfigError as exc:
            return exc.reason
        return None
    return check


def knob(default: Any, check: Callable[[Any], str | None] | None = None, doc: str = "") -> Any:
    """A config field with its validator and a one-line description (shown by the docs)."""
    return field(default=default, metadata={"check": check, "doc": doc})


@dataclass(frozen=True)
class ModelConfig:
    name: str = knob("resnet18", None, "registered model name (`cli.py models`) or timm:<name>")
    attention: str | None = knob(None, _model_knob("attention"),
                                 "channel attention: se, eca or none")
    se_reduction: int | None = knob(None, _model_knob("se_reduction"),
                                    "SE reduction ratio r (hidden = C // r)")
    eca_kernel: int | None = knob(None, _model_knob("eca_kernel"), "ECA conv1d kernel size (odd)")
    ghost_ratio: int | None = knob(None, _model_knob("ghost_ratio"), "Ghost module ratio")
    dropout: float | None = knob(None, _model_knob("dropout"), "dropout before the classifier")
    width: float | None = knob(None, _model_knob("width"), "channel multiplier")
    pretrained: bool | None = knob(None, _model_knob("pretrained"),
                                   "ImageNet weights (efficientnet_b2 only)")

    def model_args(self) -> dict[str, Any]:
        """The knobs that were set, as keyword arguments for ``cifar_models.create``."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "name" and getattr(self, f.name) is not None}


@dataclass(frozen=True)
class DataConfig:
    dataset: str = knob("cifar10", _choice(*DATASETS), "cifar10, cifar100, digits or synthetic")
    val_fraction: float = knob(0.1, _range(0, 1, lo_open=True, hi_open=True),
                               "stratified validation share of the training split")
    kfold: int = knob(0, _range(0), "k for stratified k-fold cross-validation (0 = holdout)")
    seed: int = knob(0, _range(0), "seed of the train/validation split")
    train_limit: int = knob(0, _range(0), "stratified subsample of the training split (0 = all)")
    synthetic_size: int = knob(2000, _range(20), "synthetic: training images (test = size // 5)")
    synthetic_classes: int = knob(10, _range(2), "synthetic: number of classes")


@dataclass(frozen=True)
class OptimConfig:
    name: str = knob("sgd", _choice(*OPTIMIZERS), "sgd, adamw or adam")
    lr: float = knob(0.1, _range(0, lo_open=True), "peak learning rate")
    momentum: float = knob(0.9, _range(0, 1, hi_open=True), "SGD momentum / Adam beta1")
    nesterov: bool = knob(True, None, "Nesterov momentum (SGD)")
    weight_decay: float = knob(5e-4, _range(0), "weight decay (decoupled for adamw)")
    batch_size: int = knob(128, _range(1), "training batch size")
    epochs: int = knob(30, _range(1), "training epochs")
    label_smoothing: float = knob(0.0, _range(0, 1, hi_open=True), "label smoothing")
    grad_clip: float = knob(0.0, _range(0), "max gradient norm (0 = off)")


@dataclass(frozen=True)
class ScheduleConfig:
    name: str = knob("cosine", _choice(*SCHEDULES), "cosine, onecycle, multistep or none")
    warmup_epochs: float = knob(0.0, _range(0), "linear warm-up (cosine, multistep, none)")
    milestones: tuple[float, ...] = knob((0.5, 0.75), _fractions,
                                         "multistep: decay points as fractions of training")
    gamma: float = knob(0.1, _range(0, 1, lo_open=True), "multistep: decay factor")


@dataclass(frozen=True)
class AugConfig:
    preset: str = knob("standard", _choice(*AUG_PRESETS), "none, basic, standard or full")
    crop_padding: int | None = knob(None, _range(0), "random crop with this padding (0 = off)")
    flip: bool | None = knob(None, None, "random horizontal flip")
    jitter: float | None = knob(None, _range(0, 1), "colour jitter strength (0 = off)")
    erasing: float | None = knob(None, _range(0, 1), "random erasing probability (0 = off)")
    rotation: float | None = knob(None, _range(0, 180), "random rotation, max degrees (0 = off)")
    resize: int = knob(1, _range(1, 8), "upsampling factor applied to every image (2: 64x64)")


@dataclass(frozen=True)
class RuntimeConfig:
    device: str = knob("auto", _device, "auto, cpu, cuda, cuda:N or mps")
    bf16: bool = knob(True, None, "bf16 autocast on CUDA")
    channels_last: bool = knob(True, None, "channels_last memory format on CUDA")
    compile: bool = knob(False, None, "torch.compile the model")
    patience: int = knob(0, _range(0), "early stopping on validation accuracy (0 = off)")
    seed: int = knob(0, _range(0), "training seed: init, order, augmentation")
    eval_batch_size: int = knob(1024, _range(1), "evaluation batch size")


SECTIONS: dict[str, type] = {
    "model": ModelConfig, "data": DataConfig, "optim": OptimConfig,
    "schedule": ScheduleConfig, "aug": AugConfig, "runtime": RuntimeConfig,
}


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
    for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)
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
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string",
            tuple: "a list of numbers"}.get(typ, typ.__name__)


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
        return {f"{s}.{k}": v for s in SECTIONS
                for k, v in dataclasses.asdict(getattr(self, s)).items() if v is not None}

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
        return {k: (mine.get(k), theirs.get(k)) for k in sorted(set(mine) | set(theirs))
                if mine.get(k) != theirs.get(k)}

    # TOML form ---------------------------------------------------------------
    def to_toml(self) -> str:
        # Imported here: only writing needs it, so training and benchmarking import
        # without it (a bare GPU machine often lacks it).
        import tomli_w

        tables: dict[str, dict[str, Any]] = {}
        for key, value in self.to_flat().items():
            section, name = key.split(".", 1)
            tables.setdefault(section, {})[name] = list(value) if isinstance(value, tuple) else value
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
            raise ConfigError(f"unknown section{did_you_mean(section, SECTIONS)}; "
                              f"expected {', '.join(SECTIONS)}", file=file, key=section)
    for key in flat:
        if key not in FLAT_KEYS:
            raise ConfigError(f"unknown key{did_you_mean(key, FLAT_KEYS)}", file=file,
                              key=key, value=flat[key])
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


def _check_model(model: ModelConfig) -> None:
    """Unknown model names and knobs the model does not take fail here, at config time."""
    if model.name.startswith("timm:"):
        allowed: set[str] = {"dropout"}
    elif model.name in cifar_models.list_models():
        allowed = set(cifar_models.model_knobs(model.name))
    else:
        known = cifar_models.list_models()
        raise ConfigError(f"unknown model{did_you_mean(model.name, known)}; known models: "
                          f"{', '.join(known)} or timm:<name>", key="model.name", value=model.name)
    for name in model.model_args():
        if name not in allowed:
            raise ConfigError(f"model {model.name!r} does not take this knob (it takes: "
                              f"{', '.join(sorted(allowed)) or 'none'})",
                              key=f"model.{name}", value=getattr(model, name))


def describe_keys() -> list[tuple[str, str, str]]:
    """(key, default, description) for every config key, for docs and ``--help``."""
    rows = []
    for key, (_, f) in FLAT_KEYS.items():
        unset = "(preset's)" if key.startswith("aug.") else "(model's)"
        default = unset if f.default is None else format_value(
            f.default if f.default is not dataclasses.MISSING else f.default_factory())
        rows.append((key, default, f.metadata.get("doc", "")))
    return rows
