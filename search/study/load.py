"""Study files: one TOML file per study in ``studies/``, loaded into a validated ``StudySpec``.

A study file says what to search (``[space]``), what stays put (``[fixed]``), how Optuna
searches (``[study]``: sampler, pruner, budget) and how the best trial is retrained
(``[retrain]``). Everything a user can get wrong is checked at load time, before any
training, and reported as one ``ConfigError`` naming the file, the key and the value.
Loading only reads the file: it creates nothing.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from search.config import DATASETS, FLAT_KEYS, TrialConfig, coerce
from search.errors import ConfigError, did_you_mean
from search.study.model_checks import ModelChecks
from search.study.objectives import DIRECTIONS, MEASURES, VALIDATION_MEASURES, ObjectiveSpec
from search.study.optuna_factory import (
    PRUNERS,
    SAMPLERS,
    SINGLE_OBJECTIVE_SAMPLERS,
    check_args,
)
from search.study.space_section import SpaceReader
from search.study.spec import (
    METRICS,
    RETRAIN_KEYS,
    SECTIONS,
    STUDY_KEYS,
    AblationSpec,
    ParamSpec,
    RetrainSpec,
    StudySpec,
    WarmStartSpec,
)
from search.study.table_reader import NO_VALUE, is_int, is_number

STUDIES_DIR = Path(__file__).resolve().parents[2] / "studies"


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
        raise ConfigError(
            f"no study of that name in {_shown(folder)}"
            f"{did_you_mean(name_or_path, names)}; available: "
            f"{', '.join(names) or 'none'}",
            key="study",
            value=name_or_path,
        )
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


# parsing ----------------------------------------------------------------------------------


class _Parser(SpaceReader, ModelChecks):
    """Turns a parsed TOML document into a StudySpec; every error names ``file``. The
    ``[space]`` entries are SpaceReader's, the checks against the models ModelChecks'."""

    def choice(
        self,
        table: Mapping[str, Any],
        name: str,
        allowed: tuple[str, ...],
        default: str | None,
        what: str,
        prefix: str = "study",
    ) -> str:
        key = f"{prefix}.{name}"
        if name not in table:
            if default is None:
                raise self.error("is required", key)
            return default
        value = table[name]
        if not isinstance(value, str) or value not in allowed:
            raise self.error(
                f"unknown {what}{did_you_mean(str(value), allowed)}; expected "
                f"one of: {', '.join(allowed)}",
                key,
                value,
            )
        return value

    # sections -----------------------------------------------------------------------------
    def parse(self, doc: dict[str, Any], path: Path) -> StudySpec:
        self.check_keys(doc, SECTIONS, "", what="section")
        if "study" not in doc:
            raise self.error("a [study] section is required (dataset, n_trials, ...)", "study")
        study = self.table(doc, "study", "")
        self.check_keys(study, STUDY_KEYS, "study")

        dataset = self.choice(study, "dataset", DATASETS, None, "dataset")
        objectives = self.objectives(study)
        metric, direction = next(
            (o.measure, o.direction) for o in objectives if o.measure in VALIDATION_MEASURES
        )
        n_trials = self.integer(study, "n_trials", "study", NO_VALUE, 1)
        timeout = study.get("timeout", 0)
        if not is_number(timeout) or timeout < 0:
            raise self.error("expected seconds >= 0 (0 = no timeout)", "study.timeout", timeout)
        multi = len(objectives) > 1
        sampler = self.choice(study, "sampler", tuple(SAMPLERS), "tpe", "sampler")
        if multi and sampler in SINGLE_OBJECTIVE_SAMPLERS:
            raise self.error(
                f"{SAMPLERS[sampler].__name__} optimizes one objective only; with several "
                f"objectives use one of: "
                f"{', '.join(s for s in SAMPLERS if s not in SINGLE_OBJECTIVE_SAMPLERS)}",
                "study.sampler",
                sampler,
            )
        # Optuna cannot prune a multi-objective study (Trial.report is single-objective)
        pruner = self.choice(
            study, "pruner", tuple(PRUNERS), "none" if multi else "hyperband", "pruner"
        )
        if multi and pruner != "none":
            raise self.error(
                'Optuna cannot prune a study with several objectives: set pruner = "none" '
                "or leave it out",
                "study.pruner",
                pruner,
            )
        seed = self.integer(study, "seed", "study", 0, 0)
        description = study.get("description", "")
        if not isinstance(description, str):
            raise self.error("expected a string", "study.description", description)
        sampler_args = check_args(
            SAMPLERS[sampler],
            self.table(study, "sampler_args", "study"),
            file=self.file,
            key="study.sampler_args",
        )
        pruner_args = check_args(
            PRUNERS[pruner],
            self.table(study, "pruner_args", "study"),
            file=self.file,
            key="study.pruner_args",
        )

        fixed = self.fixed(self.table(doc, "fixed", ""), dataset)
        ablations = self.ablations(doc.get("ablation", []))
        space = self.space(self.table(doc, "space", ""), fixed, allow_empty=bool(ablations))
        self.cross_check(fixed, space)
        self.warn_inert_knobs(fixed, space)
        if sampler == "grid":
            self.check_grid(space)

        return StudySpec(
            name=path.stem,
            path=path,
            dataset=dataset,
            direction=direction,
            metric=metric,
            n_trials=n_trials,
            timeout=float(timeout) if timeout else None,
            sampler=sampler,
            sampler_args=sampler_args,
            seed=seed,
            pruner=pruner,
            pruner_args=pruner_args,
            fixed=fixed,
            space=space,
            retrain=self.retrain(self.table(doc, "retrain", ""), fixed, space),
            ablations=ablations,
            description=description,
            objectives=objectives,
            warm_start=self.warm_start(study, path),
        )

    def objectives(self, study: Mapping[str, Any]) -> tuple[ObjectiveSpec, ...]:
        """``metric`` + ``direction`` (one objective), or ``objectives``: a list of
        ``{ measure = ..., direction = ... }`` tables (one or more)."""
        if "objectives" not in study:
            metric = self.choice(study, "metric", tuple(METRICS), "val_acc", "metric")
            direction = self.choice(study, "direction", DIRECTIONS, METRICS[metric], "direction")
            return (self.objective(metric, direction, "study.direction"),)
        for single in ("metric", "direction"):
            if single in study:
                raise self.error(
                    "give either metric + direction (one objective) or objectives, not both",
                    f"study.{single}",
                    study[single],
                )
        raw = study["objectives"]
        example = '[{ measure = "val_acc", direction = "maximize" }, ...]'
        if not isinstance(raw, list) or not raw or not all(isinstance(o, dict) for o in raw):
            raise self.error(f"expected a list of tables: {example}", "study.objectives", raw)
        out: list[ObjectiveSpec] = []
        for i, entry in enumerate(raw):
            where = f"study.objectives[{i}]"
            self.check_keys(entry, ("measure", "direction"), where)
            measure = self.choice(entry, "measure", tuple(MEASURES), None, "measure", where)
            if "direction" not in entry:
                raise self.error(
                    f"is required: maximize or minimize (a {measure} objective is "
                    f"{MEASURES[measure][0]}d)",
                    f"{where}.direction",
                )
            direction = self.choice(entry, "direction", DIRECTIONS, None, "direction", where)
            if any(o.measure == measure for o in out):
                raise self.error("each measure may appear once", f"{where}.measure", measure)
            out.append(self.objective(measure, direction, f"{where}.direction"))
        if not any(o.measure in VALIDATION_MEASURES for o in out):
            raise self.error(
                f"needs a validation measure ({', '.join(VALIDATION_MEASURES)}) among the "
                f"objectives: costs alone would favour an untrained model",
                "study.objectives",
                [o.measure for o in out],
            )
        return tuple(out)

    def objective(self, measure: str, direction: str, key: str) -> ObjectiveSpec:
        natural = MEASURES[measure][0]
        if direction != natural:
            raise self.error(f"{measure} must be {natural}d, not {direction}d", key, direction)
        return ObjectiveSpec(measure, direction)

    def warm_start(self, study: Mapping[str, Any], path: Path) -> WarmStartSpec | None:
        """``warm_start = { study = "NAME", top = K }`` or ``{ study = "NAME", front = true }``."""
        if "warm_start" not in study:
            return None
        table = self.table(study, "warm_start", "study")
        self.check_keys(table, ("study", "top", "front"), "study.warm_start")
        source = table.get("study")
        if not isinstance(source, str) or not source:
            raise self.error("expected the name of another study", "study.warm_start.study", source)
        if source == path.stem:
            raise self.error(
                "a study cannot warm-start from itself", "study.warm_start.study", source
            )
        front = table.get("front", False)
        if not isinstance(front, bool):
            raise self.error("expected true or false", "study.warm_start.front", front)
        if front and "top" in table:
            raise self.error(
                "give either top = K or front = true", "study.warm_start.top", table["top"]
            )
        top = None if front else self.integer(table, "top", "study.warm_start", 5, 1)
        if study.get("sampler") == "grid":
            # enqueued points carry no grid id: they would be counted against the grid's
            # size while grid points went unrun (and partial ones fail in GridSampler)
            raise self.error(
                "the grid sampler runs every grid point exactly once; a warm start would "
                "replace some of them: drop warm_start or use another sampler",
                "study.warm_start",
                table,
            )
        return WarmStartSpec(source, top)

    def fixed(self, table: dict[str, Any], dataset: str) -> dict[str, Any]:
        """Flat, coerced fixed values, plus ``data.dataset`` from ``study.dataset``."""
        fixed: dict[str, Any] = {}
        for key, value in self.flatten(table):
            if key == "data.dataset":
                raise self.error("set the dataset with study.dataset", "fixed.data.dataset", value)
            try:
                fixed[key] = coerce(key, value)
            except ConfigError as exc:
                raise self.rekeyed(exc, f"fixed.{key}") from None
        fixed["data.dataset"] = dataset
        return fixed

    def retrain(
        self, table: dict[str, Any], fixed: Mapping[str, Any], space: tuple[ParamSpec, ...]
    ) -> RetrainSpec:
        self.check_keys(table, RETRAIN_KEYS, "retrain")
        if "epochs" not in table and any(p.key == "optim.epochs" for p in space):
            raise self.error("required when optim.epochs is searched", "retrain.epochs")
        default = fixed.get("optim.epochs", TrialConfig().optim.epochs)
        epochs = self.integer(table, "epochs", "retrain", default, 1)
        seeds = table.get("seeds", [0])
        if not isinstance(seeds, list) or not seeds or not all(is_int(s) and s >= 0 for s in seeds):
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
            if (
                not isinstance(name, str)
                or not name
                or not all(c.isalnum() or c in "_-." for c in name)
            ):
                raise self.error("expected a name of letters, digits, _ - .", f"{where}.name", name)
            if any(a.name == name for a in out) or name == "baseline":
                raise self.error(
                    "ablation names must be unique and not 'baseline'", f"{where}.name", name
                )
            table = entry.get("set")
            if not isinstance(table, dict) or not table:
                raise self.error(
                    "expected a table of config overrides, e.g. set = "
                    '{ "model.attention" = "none" }',
                    f"{where}.set",
                )
            overrides = {}
            for key, value in self.flatten(
                table, is_leaf=lambda k, v: not isinstance(v, dict) or k in FLAT_KEYS
            ):
                try:
                    overrides[key] = coerce(key, value)
                except ConfigError as exc:
                    raise self.rekeyed(exc, f"{where}.set.{key}", value) from None
            description = entry.get("description", "")
            if not isinstance(description, str):
                raise self.error("expected a string", f"{where}.description", description)
            out.append(AblationSpec(name, overrides, description))
        return tuple(out)
