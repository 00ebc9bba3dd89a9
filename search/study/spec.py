"""Study files: one TOML file per study in ``studies/``, loaded into a validated ``StudySpec``.

A study file says what to search (``[space]``), what stays put (``[fixed]``), how Optuna
searches (``[study]``: sampler, pruner, budget) and how the best trial is retrained
(``[retrain]``). Everything a user can get wrong is checked at load time, before any
training, and reported as one ``ConfigError`` naming the file, the key and the value.
Loading only reads the file: it creates nothing.
"""
from __future__ import annotations

import dataclasses
import decimal
import inspect
import json
import math
import tomllib
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

import cifar_models

from search.config import DATASETS, FLAT_KEYS, TrialConfig, coerce
from search.errors import ConfigError, did_you_mean
from search.study.sampler_seeds import TrialSeededSampler
from search.study.suggest import grid_space

STUDIES_DIR = Path(__file__).resolve().parents[2] / "studies"

# metric -> the only direction that makes sense for it
METRICS = {"val_acc": "maximize", "val_loss": "minimize", "val_top5": "maximize"}
DIRECTIONS = ("maximize", "minimize")

SAMPLERS: dict[str, type[optuna.samplers.BaseSampler]] = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "gp": optuna.samplers.GPSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "qmc": optuna.samplers.QMCSampler,
    "grid": optuna.samplers.GridSampler,
}
PRUNERS: dict[str, type[optuna.pruners.BasePruner]] = {
    "hyperband": optuna.pruners.HyperbandPruner,
    "asha": optuna.pruners.SuccessiveHalvingPruner,
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "wilcoxon": optuna.pruners.WilcoxonPruner,
    "none": optuna.pruners.NopPruner,
}
# Samplers whose seed fixes one sequence that all workers share (see study_sampler).
SHARED_SEQUENCE_SAMPLERS = ("qmc", "grid")
# Constructor arguments the study file may not set, and where they come from instead.
RESERVED_ARGS = {"seed": "set it with study.seed",
                 "search_space": "the grid comes from [space]"}

SECTIONS = ("study", "fixed", "space", "retrain", "ablation")
STUDY_KEYS = ("dataset", "direction", "metric", "n_trials", "timeout", "sampler", "seed",
              "pruner", "description", "sampler_args", "pruner_args")
RETRAIN_KEYS = ("epochs", "seeds")
PARAM_TYPES = ("categorical", "int", "float")
ENTRY_KEYS = {"categorical": ("type", "choices", "when"),
              "int": ("type", "low", "high", "step", "log", "when"),
              "float": ("type", "low", "high", "step", "log", "when")}

_NO_VALUE = object()


@dataclass(frozen=True)
class ParamSpec:
    """One ``[space]`` entry: a flat TrialConfig key and its distribution."""

    key: str
    type: str
    choices: tuple = ()
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    log: bool = False
    when: tuple[tuple[str, tuple], ...] = ()

    @property
    def discrete(self) -> bool:
        """True when the parameter takes finitely many values (a grid can hold it)."""
        return self.type != "float" or self.step is not None

    def count(self) -> int | None:
        """Number of values a discrete parameter takes; None for a continuous one."""
        if self.type == "categorical":
            return len(self.choices)
        if not self.discrete:
            return None
        step = decimal.Decimal(str(self.step if self.step is not None else 1))
        span = decimal.Decimal(str(self.high)) - decimal.Decimal(str(self.low))
        return int(span // step) + 1

    def distribution(self) -> optuna.distributions.BaseDistribution:
        """The Optuna distribution ``suggest`` uses for this parameter."""
        if self.type == "categorical":
            return optuna.distributions.CategoricalDistribution(list(self.choices))
        if self.type == "int":
            return optuna.distributions.IntDistribution(self.low, self.high, log=self.log,
                                                        step=self.step or 1)
        return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log,
                                                      step=self.step)


@dataclass(frozen=True)
class AblationSpec:
    """One ``[[ablation]]`` variant: the config overrides that turn the baseline into it."""

    name: str
    overrides: dict[str, Any]
    description: str = ""


@dataclass(frozen=True)
class RetrainSpec:
    """How the best trial is retrained on the full training split: epochs and seeds."""

    epochs: int
    seeds: tuple[int, ...]


@dataclass(frozen=True)
class StudySpec:
    """A loaded, validated study file."""

    name: str
    path: Path
    dataset: str
    direction: str
    metric: str
    n_trials: int
    timeout: float | None
    sampler: str
    sampler_args: dict
    seed: int
    pruner: str
    pruner_args: dict
    fixed: dict[str, Any]
    space: tuple[ParamSpec, ...]
    retrain: RetrainSpec
    ablations: tuple[AblationSpec, ...]
    description: str = ""

    def base_config(self) -> TrialConfig:
        """The fixed values on top of the defaults: what every trial starts from.

        When ``model.name`` is searched (and not fixed), its first choice stands in for
        it, so that fixed model knobs are checked against a model that will really run
        rather than the default one.
        """
        start = {}
        for p in self.space:
            if p.key == "model.name" and "model.name" not in self.fixed:
                start["model.name"] = p.choices[0]
        return TrialConfig().with_overrides({**start, **self.fixed})

    def space_size(self) -> int | None:
        """Grid points when every parameter is discrete, else None (continuous space)."""
        size = 1
        for p in self.space:
            n = p.count()
            if n is None:
                return None
            size *= n
        return size

    def max_epochs(self) -> int:
        """The most epochs a trial can run: the pruners' largest resource (steps)."""
        for p in self.space:
            if p.key == "optim.epochs":
                return int(max(p.choices) if p.type == "categorical" else p.high)
        return self.base_config().optim.epochs

    def settings(self) -> dict[str, str]:
        """The search settings as flat text, for MLflow tags and Optuna study user attrs."""
        return {
            "sampler": self.sampler,
            "sampler_args": json.dumps(dict(self.sampler_args), sort_keys=True),
            "seed": str(self.seed),
            "pruner": self.pruner,
            "pruner_args": json.dumps(pruner_kwargs(self), sort_keys=True),
            "direction": self.direction,
            "metric": self.metric,
            "n_trials": str(self.n_trials),
            "timeout": "none" if self.timeout is None else f"{self.timeout:g}",
            "optuna_version": optuna.__version__,
        }


# locating study files ---------------------------------------------------------------------

def list_studies(studies_dir: Path | None = None) -> list[Path]:
    """The study files in ``studies_dir`` (default: the repository's ``studies/``), sorted."""
    folder = Path(studies_dir) if studies_dir is not None else STUDIES_DIR
    return sorted(folder.glob("*.toml")) if folder.is_dir() else []


def _looks_like_path(text: str) -> bool:
    return text.endswith(".toml") or "/" in text or "\\" in text


def resolve_study_path(name_or_path: str, studies_dir: Path | None = None) -> Path:
    """The study file for a study name (``<studies_dir>/<name>.toml``) or a path.

    A text ending in ``.toml`` or containing a path separator is a path, used as is.
    """
    if _looks_like_path(name_or_path):
        path = Path(name_or_path)
        if not path.is_file():
            raise ConfigError("no such study file", file=name_or_path)
        return path
    folder = Path(studies_dir) if studies_dir is not None else STUDIES_DIR
    path = folder / f"{name_or_path}.toml"
    if not path.is_file():
        names = [p.stem for p in list_studies(folder)]
        raise ConfigError(f"no study of that name in {_shown(folder)}"
                          f"{did_you_mean(name_or_path, names)}; available: "
                          f"{', '.join(names) or 'none'}", key="study", value=name_or_path)
    return path


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is below it (shorter messages)."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def load_study(name_or_path: str, studies_dir: Path | None = None) -> StudySpec:
    """Read and validate a study file (by study name or path); raises ConfigError."""
    path = resolve_study_path(name_or_path, studies_dir)
    file = name_or_path if _looks_like_path(name_or_path) else _shown(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read study file: {exc}", file=file) from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", file=file) from None
    return _Parser(file).parse(doc, path)


# sampler and pruner -----------------------------------------------------------------------

def make_sampler(spec: StudySpec, seed: int | None = None,
                 **objects: Any) -> optuna.samplers.BaseSampler:
    """The study's sampler, seeded with ``seed`` (default ``spec.seed``); ``objects`` are
    constructor arguments a study file cannot hold (an ``independent_sampler``)."""
    cls = SAMPLERS[spec.sampler]
    seed = spec.seed if seed is None else seed
    try:
        if spec.sampler == "grid":
            return cls(search_space=grid_space(spec), seed=seed)
        return cls(seed=seed, **spec.sampler_args, **objects)
    except (ValueError, TypeError) as exc:
        # values the signature check cannot judge (e.g. a negative count) land here
        raise ConfigError(f"{cls.__name__} rejected its arguments: {exc}", file=str(spec.path),
                          key="study.sampler_args", value=dict(spec.sampler_args)) from None


def study_sampler(spec: StudySpec) -> optuna.samplers.BaseSampler:
    """The sampler a worker runs the study with: reseeded for every trial from (study seed,
    trial number), so that parallel workers and resumed runs draw new points while one
    uninterrupted worker stays reproducible. QMC and grid keep the study seed: every worker
    must walk the same scrambled sequence, or the same shuffled grid, whose position the
    storage keeps (a grid point's id is an index into the shuffle). QMC's own fallback for
    the first trial and for conditional parameters is a random sampler, reseeded per trial."""
    if spec.sampler == "qmc":
        fallback = TrialSeededSampler(lambda seed: optuna.samplers.RandomSampler(seed=seed),
                                      spec.seed)
        return make_sampler(spec, independent_sampler=fallback)
    if spec.sampler in SHARED_SEQUENCE_SAMPLERS:
        return make_sampler(spec)
    return TrialSeededSampler(lambda seed: make_sampler(spec, seed), spec.seed)


def pruner_kwargs(spec: StudySpec) -> dict[str, Any]:
    """The pruner's constructor arguments: this tool's defaults, then the file's."""
    defaults: dict[str, Any] = {
        # one step per epoch, so Hyperband's brackets span 1 .. epochs
        "hyperband": {"min_resource": 1, "max_resource": spec.max_epochs(),
                      "reduction_factor": 3},
        # Steps are 1-based epochs and Optuna prunes once step >= n_warmup_steps, so 2 is
        # what keeps first-epoch accuracy (near chance for every trial) from deciding.
        "median": {"n_startup_trials": 5, "n_warmup_steps": 2},
        "percentile": {"percentile": 25.0, "n_warmup_steps": 2},
    }.get(spec.pruner, {})
    return {**defaults, **spec.pruner_args}


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    """The study's pruner (steps are epochs)."""
    cls = PRUNERS[spec.pruner]
    kwargs = pruner_kwargs(spec)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{cls.__name__} rejected its arguments: {exc}", file=str(spec.path),
                          key="study.pruner_args", value=kwargs) from None


# parsing ----------------------------------------------------------------------------------

def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v))


def _same(a: Any, b: Any) -> bool:
    """Equality that keeps ``True`` and ``1`` apart (Python's ``==`` does not)."""
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _annotation_types(annotation: Any) -> tuple[type, ...] | None:
    """Python types a TOML value may have for a constructor annotation; None when the
    argument needs a Python object (a callable, a sampler, ...) a study file can't hold."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__",
                                                                  str(annotation))
    accepted: list[type] = []
    for part in (p.strip() for p in text.split("|")):
        if part == "None":
            continue
        if part in ("int", "float", "bool", "str"):
            accepted.append({"int": int, "float": float, "bool": bool, "str": str}[part])
        elif part.startswith(("dict", "Mapping")):
            accepted.append(dict)
        else:
            return None
    return tuple(accepted) or None


_TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
               dict: "a table"}


def _value_fits(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool in types
    if isinstance(value, int) and (int in types or float in types):
        return True
    return isinstance(value, tuple(t for t in types if t is not bool))


class _Parser:
    """Turns a parsed TOML document into a StudySpec; every error names ``file``."""

    def __init__(self, file: str) -> None:
        self.file = file

    def error(self, message: str, key: str | None, value: Any = _NO_VALUE) -> ConfigError:
        if value is _NO_VALUE:
            return ConfigError(message, file=self.file, key=key)
        return ConfigError(message, file=self.file, key=key, value=value)

    def rekeyed(self, exc: ConfigError, key: str, value: Any = _NO_VALUE) -> ConfigError:
        """A config-module error moved to this file's ``key``."""
        return self.error(exc.message, key, exc.value if value is _NO_VALUE else value)

    def check_keys(self, table: Mapping[str, Any], allowed: tuple[str, ...], prefix: str,
                   what: str = "key") -> None:
        for key, value in table.items():
            if key not in allowed:
                raise self.error(f"unknown {what}{did_you_mean(key, allowed)}; expected one "
                                 f"of: {', '.join(allowed)}", _join(prefix, key),
                                 value if what == "key" else _NO_VALUE)

    def table(self, parent: Mapping[str, Any], name: str, prefix: str) -> dict[str, Any]:
        value = parent.get(name, {})
        if not isinstance(value, dict):
            raise self.error("expected a table", _join(prefix, name), value)
        return value

    def integer(self, table: Mapping[str, Any], name: str, prefix: str, default: Any,
                minimum: int) -> int:
        key = _join(prefix, name)
        if name not in table:
            if default is _NO_VALUE:
                raise self.error("is required", key)
            return default
        value = table[name]
        if not _is_int(value):
            raise self.error("expected an integer", key, value)
        if value < minimum:
            raise self.error(f"must be at least {minimum}", key, value)
        return value

    def choice(self, table: Mapping[str, Any], name: str, allowed: tuple[str, ...],
               default: str | None, what: str) -> str:
        key = f"study.{name}"
        if name not in table:
            if default is None:
                raise self.error("is required", key)
            return default
        value = table[name]
        if not isinstance(value, str) or value not in allowed:
            raise self.error(f"unknown {what}{did_you_mean(str(value), allowed)}; expected "
                             f"one of: {', '.join(allowed)}", key, value)
        return value

    # sections -----------------------------------------------------------------------------
    def parse(self, doc: dict[str, Any], path: Path) -> StudySpec:
        self.check_keys(doc, SECTIONS, "", what="section")
        if "study" not in doc:
            raise self.error("a [study] section is required (dataset, n_trials, ...)", "study")
        study = self.table(doc, "study", "")
        self.check_keys(study, STUDY_KEYS, "study")

        dataset = self.choice(study, "dataset", DATASETS, None, "dataset")
        metric = self.choice(study, "metric", tuple(METRICS), "val_acc", "metric")
        direction = self.choice(study, "direction", DIRECTIONS, METRICS[metric], "direction")
        if direction != METRICS[metric]:
            raise self.error(f"metric {metric} must be {METRICS[metric]}d, not {direction}d",
                             "study.direction", direction)
        n_trials = self.integer(study, "n_trials", "study", _NO_VALUE, 1)
        timeout = study.get("timeout", 0)
        if not _is_number(timeout) or timeout < 0:
            raise self.error("expected seconds >= 0 (0 = no timeout)", "study.timeout", timeout)
        sampler = self.choice(study, "sampler", tuple(SAMPLERS), "tpe", "sampler")
        pruner = self.choice(study, "pruner", tuple(PRUNERS), "hyperband", "pruner")
        seed = self.integer(study, "seed", "study", 0, 0)
        description = study.get("description", "")
        if not isinstance(description, str):
            raise self.error("expected a string", "study.description", description)
        sampler_args = self.ctor_args(study, "sampler_args", SAMPLERS[sampler])
        pruner_args = self.ctor_args(study, "pruner_args", PRUNERS[pruner])

        fixed = self.fixed(self.table(doc, "fixed", ""), dataset)
        ablations = self.ablations(doc.get("ablation", []))
        space = self.space(self.table(doc, "space", ""), fixed, allow_empty=bool(ablations))
        self.cross_check(fixed, space)
        self.warn_inert_knobs(fixed, space)
        if sampler == "grid":
            self.check_grid(space)

        return StudySpec(
            name=path.stem, path=path, dataset=dataset, direction=direction, metric=metric,
            n_trials=n_trials, timeout=float(timeout) if timeout else None, sampler=sampler,
            sampler_args=sampler_args, seed=seed, pruner=pruner, pruner_args=pruner_args,
            fixed=fixed, space=space,
            retrain=self.retrain(self.table(doc, "retrain", ""), fixed, space),
            ablations=ablations, description=description)

    def ctor_args(self, study: Mapping[str, Any], name: str, cls: type) -> dict[str, Any]:
        """Keyword arguments for ``cls``, checked against its signature (not by calling it,
        so that the error can still say which key of which file is wrong)."""
        args = self.table(study, name, "study")
        params = {p.name: p for p in inspect.signature(cls).parameters.values()
                  if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        settable = {n: _annotation_types(p.annotation) for n, p in params.items()
                    if n not in RESERVED_ARGS}
        settable = {n: t for n, t in settable.items() if t is not None}
        for arg, value in args.items():
            key = f"study.{name}.{arg}"
            if arg in RESERVED_ARGS and arg in params:
                raise self.error(f"not allowed here: {RESERVED_ARGS[arg]}", key, value)
            if arg not in settable:
                why = ("takes a Python object, which a study file cannot hold" if arg in params
                       else f"is not an argument of {cls.__name__}"
                            f"{did_you_mean(arg, settable)}")
                raise self.error(f"{why}; settable here: {', '.join(settable) or 'none'}",
                                 key, value)
            types = settable[arg]
            if not _value_fits(value, types):
                words = " or ".join(_TYPE_WORDS[t] for t in types)
                raise self.error(f"expected {words}", key, value)
        return dict(args)

    def fixed(self, table: dict[str, Any], dataset: str) -> dict[str, Any]:
        """Flat, coerced fixed values, plus ``data.dataset`` from ``study.dataset``."""
        fixed: dict[str, Any] = {}
        for key, value in self.flatten(table):
            if key == "data.dataset":
                raise self.error("set the dataset with study.dataset", "fixed.data.dataset",
                                 value)
            try:
                fixed[key] = coerce(key, value)
            except ConfigError as exc:
                raise self.rekeyed(exc, f"fixed.{key}") from None
        fixed["data.dataset"] = dataset
        return fixed

    def flatten(self, table: dict[str, Any], prefix: str = "",
                is_leaf: Callable[[str, Any], bool] = lambda key, value: not isinstance(
                    value, dict)) -> list[tuple[str, Any]]:
        """Nested tables / dotted keys -> ``[(flat key, value), ...]`` in document order."""
        out = []
        for key, value in table.items():
            flat = _join(prefix, key)
            if is_leaf(flat, value):
                out.append((flat, value))
            else:
                out.extend(self.flatten(value, flat, is_leaf))
        return out

    def space(self, table: dict[str, Any], fixed: dict[str, Any], allow_empty: bool = False
              ) -> tuple[ParamSpec, ...]:
        # a table with a type, or at a config key's place (type forgotten), is one parameter
        entries = self.flatten(table, is_leaf=lambda key, value: (
            not isinstance(value, dict) or "type" in value or key in FLAT_KEYS))
        if not entries and not allow_empty:  # an ablation-only study searches nothing
            raise self.error("no parameters to search: add entries such as "
                             "\"optim.lr\" = { type = \"float\", low = 0.01, high = 0.3, "
                             "log = true }", "space")
        declared: dict[str, ParamSpec] = {}
        for key, entry in entries:
            if key in declared:
                raise self.error("declared twice (once as a dotted key, once quoted?)",
                                 f"space.{key}")
            declared[key] = self.param(key, entry, declared, fixed)
        return tuple(declared.values())

    def param(self, key: str, entry: Any, declared: Mapping[str, ParamSpec],
              fixed: Mapping[str, Any]) -> ParamSpec:
        where = f"space.{key}"
        if key not in FLAT_KEYS:
            raise self.error(f"unknown config key{did_you_mean(key, FLAT_KEYS)}", where)
        if key in fixed:
            source = "study.dataset" if key == "data.dataset" else f"fixed.{key}"
            raise self.error(f"also set by {source} = {fixed[key]!r}; a key is either "
                             f"fixed or searched, remove one", where)
        if not isinstance(entry, dict):
            raise self.error("expected a table such as { type = \"float\", low = 0.01, "
                             "high = 0.3 }", where, entry)
        if "type" not in entry:
            raise self.error("missing type (categorical, int or float)", f"{where}.type")
        kind = entry["type"]
        if kind not in PARAM_TYPES:
            raise self.error(f"unknown parameter type{did_you_mean(str(kind), PARAM_TYPES)}; "
                             f"expected one of: {', '.join(PARAM_TYPES)}", f"{where}.type", kind)
        allowed = ENTRY_KEYS[kind]
        for name, value in entry.items():
            if name not in allowed:
                raise self.error(f"not a {kind} parameter setting"
                                 f"{did_you_mean(name, allowed)}; expected: "
                                 f"{', '.join(allowed)}", f"{where}.{name}", value)
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
            if any(_same(value, seen) for seen in out):
                raise self.error("listed twice", where, value)
            out.append(value)
        return tuple(out)

    def numeric(self, key: str, kind: str, entry: Mapping[str, Any]) -> ParamSpec:
        where = f"space.{key}"
        key_type = FLAT_KEYS[key][0]
        if kind == "float" and key_type is int:
            raise self.error(f"{key} is an integer: use type = \"int\"", f"{where}.type", kind)
        if key_type not in (int, float):
            raise self.error(f"{key} is not a number: use type = \"categorical\"",
                             f"{where}.type", kind)
        is_ok, word = (_is_int, "an integer") if kind == "int" else (_is_number, "a number")
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
            raise self.error(f"empty range: low must be below high = {high!r}",
                             f"{where}.low", low)
        if log and low <= 0:
            raise self.error("log = true needs low > 0", f"{where}.low", low)
        if log and step is not None:
            raise self.error("log = true cannot be combined with step", f"{where}.log", log)
        if step is not None and high > low:
            span = decimal.Decimal(str(high)) - decimal.Decimal(str(low))
            if step > high - low:
                raise self.error(f"larger than the range high - low = {span}", f"{where}.step",
                                 step)
            # Optuna would silently shorten the range to a multiple of step
            if span % decimal.Decimal(str(step)) != 0:
                raise self.error(f"the range high - low = {span} is not a multiple of step",
                                 f"{where}.step", step)
        for name, value in bounds.items():
            try:
                coerce(key, value)
            except ConfigError as exc:
                raise self.rekeyed(exc, f"{where}.{name}") from None
        return ParamSpec(key, kind, low=low, high=high, step=step, log=log)

    def when(self, key: str, raw: Any, declared: Mapping[str, ParamSpec],
             fixed: Mapping[str, Any]) -> tuple[tuple[str, tuple], ...]:
        where = f"space.{key}.when"
        if not isinstance(raw, dict) or not raw:
            raise self.error("expected a table such as { \"model.attention\" = \"se\" }",
                             where, raw)
        conditions = []
        for other, wanted in self.flatten(raw):
            at = f"{where}.{other}"
            if other not in declared and other not in fixed:
                known = list(declared) + list(fixed)
                raise self.error(f"must name a parameter declared earlier in [space] or a "
                                 f"fixed key{did_you_mean(other, known)}", at, wanted)
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
                if other in declared and not _can_take(declared[other], value):
                    raise self.error(f"{other} never takes this value in [space]", at, value)
                allowed.append(value)
            if other in fixed and not any(_same(fixed[other], v) for v in allowed):
                raise self.error(f"never holds: {other} is fixed to {fixed[other]!r}, so "
                                 f"{key} would never be searched", at, wanted)
            conditions.append((other, tuple(allowed)))
        return tuple(conditions)

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
                clash = ("" if exc.key == "model.name"
                         else f"with fixed {exc.key} = {exc.value!r}: ")
                raise self.error(clash + exc.message, "space.model.name.choices",
                                 name) from None
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
                            raise self.error(f"{exc.message} (a value the range takes)",
                                             f"space.{p.key}", value) from None
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
                warnings.warn(f"{self.file}: space.{p.key} can have no effect: {parent} is "
                              f"{shown} {how}, and {p.key} acts only with {parent} = "
                              f"{needed!r}; it would only add noise to importance plots",
                              stacklevel=2)

    @staticmethod
    def knob_values(key: str, needed: Any, p: ParamSpec, fixed: Mapping[str, Any],
                    by_key: Mapping[str, ParamSpec]) -> tuple[set, str]:
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
            elif searched is not None and searched.type == "categorical" and (
                    only is None or name in only):
                values.update(searched.choices)
                sources.add("in [space]")
            else:
                default = cifar_models.model_knobs(name).get(key.removeprefix("model."), needed)
                values.add(default)
                sources.add(f"(the default of {name})")
        return values, " and ".join(sorted(sources))

    def check_grid(self, space: tuple[ParamSpec, ...]) -> None:
        for p in space:
            if not p.discrete:
                raise self.error("the grid sampler needs choices or stepped ranges: add step "
                                 "or use type = \"categorical\"", f"space.{p.key}")
            if p.when:
                # a skipped parameter still multiplies the grid: identical trials would run
                raise self.error("conditional parameters do not work with sampler = \"grid\"",
                                 f"space.{p.key}.when", {k: list(v) for k, v in p.when})

    def retrain(self, table: dict[str, Any], fixed: Mapping[str, Any],
                space: tuple[ParamSpec, ...]) -> RetrainSpec:
        self.check_keys(table, RETRAIN_KEYS, "retrain")
        if "epochs" not in table and any(p.key == "optim.epochs" for p in space):
            raise self.error("required when optim.epochs is searched", "retrain.epochs")
        default = fixed.get("optim.epochs", TrialConfig().optim.epochs)
        epochs = self.integer(table, "epochs", "retrain", default, 1)
        seeds = table.get("seeds", [0])
        if (not isinstance(seeds, list) or not seeds or not all(_is_int(s) and s >= 0
                                                                for s in seeds)):
            raise self.error("expected a non-empty list of integers >= 0", "retrain.seeds", seeds)
        if len(set(seeds)) != len(seeds):
            raise self.error("seeds must be distinct", "retrain.seeds", seeds)
        return RetrainSpec(epochs, tuple(seeds))

    def ablations(self, raw: Any) -> tuple[AblationSpec, ...]:
        """``[[ablation]]`` entries: a unique name and the config overrides of the variant."""
        if not isinstance(raw, list) or not all(isinstance(a, dict) for a in raw):
            raise self.error("expected [[ablation]] tables", "ablation")
        out: list[AblationSpec] = []
        for i, entry in enumerate(raw):
            where = f"ablation[{i}]"
            self.check_keys(entry, ("name", "set", "description"), where)
            name = entry.get("name")
            if not isinstance(name, str) or not name or not all(
                    c.isalnum() or c in "_-." for c in name):
                raise self.error("expected a name of letters, digits, _ - .", f"{where}.name", name)
            if any(a.name == name for a in out) or name == "baseline":
                raise self.error("ablation names must be unique and not 'baseline'",
                                 f"{where}.name", name)
            table = entry.get("set")
            if not isinstance(table, dict) or not table:
                raise self.error("expected a table of config overrides, e.g. set = "
                                 "{ \"model.attention\" = \"none\" }", f"{where}.set")
            overrides = {}
            for key, value in self.flatten(table, is_leaf=lambda k, v: not isinstance(v, dict)
                                           or k in FLAT_KEYS):
                try:
                    overrides[key] = coerce(key, value)
                except ConfigError as exc:
                    raise self.rekeyed(exc, f"{where}.set.{key}", value) from None
            description = entry.get("description", "")
            if not isinstance(description, str):
                raise self.error("expected a string", f"{where}.description", description)
            out.append(AblationSpec(name, overrides, description))
        return tuple(out)


def _can_take(p: ParamSpec, value: Any) -> bool:
    """Whether ``p`` can produce ``value`` (for checking ``when`` conditions)."""
    if p.type == "categorical":
        return any(_same(value, c) for c in p.choices)
    if isinstance(value, bool) or not p.low <= value <= p.high:
        return False
    if p.type == "int" and value != int(value):
        return False
    if p.step is None:
        return True
    offset = decimal.Decimal(str(value)) - decimal.Decimal(str(p.low))
    return offset % decimal.Decimal(str(p.step)) == 0


def _candidates(p: ParamSpec) -> list[tuple[str, Any]]:
    """(entry key, value) pairs that stand for every value ``p`` can take: each choice, each
    value of a short integer range (a knob such as ``eca_kernel`` rejects even values inside
    a range whose ends are fine), else the two ends."""
    if p.type == "categorical":
        return [("choices", c) for c in p.choices]
    ends = [("low", p.low), ("high", p.high)]
    if p.type == "int" and (p.count() or 0) <= 1024:
        inner = range(p.low + (p.step or 1), p.high, p.step or 1)
        return [*ends, *(("range", v) for v in inner)]
    return ends
