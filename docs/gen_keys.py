"""Write docs/keys.md, the reference of every config key and model knob, from the registries.

The config keys, their types, defaults, meanings and checks come from ``search.config``
(``FLAT_KEYS``: the sections' dataclass fields and their validators); the models and the
knobs each one takes from ``cifar_models``' torch-free catalog; the study-file sections,
samplers, pruners and measures from ``search.study``. Allowed values are what each key's own
validator says when it refuses a value, so the page cannot drift from the checks.

    python docs/gen_keys.py            # rewrite docs/keys.md
    python docs/gen_keys.py --check    # exit 1 if docs/keys.md is out of date

``tests/test_docs.py`` runs the same comparison. No torch is imported.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: import the checkout
    sys.path.insert(0, str(ROOT))

import cifar_models  # noqa: E402
from cifar_models.catalog import TIMM_KNOBS  # noqa: E402
from cifar_models.knobs import KNOB_NEEDS  # noqa: E402
from search.config import DATASETS, FLAT_KEYS, PRESETS, SECTIONS, format_value  # noqa: E402
from search.study import spec as study_spec  # noqa: E402
from search.study.objectives import MEASURES  # noqa: E402
from search.study.optuna_factory import PRUNERS, SAMPLERS, SINGLE_OBJECTIVE_SAMPLERS  # noqa: E402

KEYS_FILE = ROOT / "docs" / "keys.md"

TYPE_WORDS = {int: "integer", float: "number", bool: "bool", str: "string", tuple: "list"}

# What each [study] key means. Kept here, beside the generator, so that a key added to
# search.study.spec.STUDY_KEYS without a line below fails the generator (and the docs test).
STUDY_KEY_DOCS = {
    "dataset": "required: " + ", ".join(f"`{d}`" for d in DATASETS),
    "description": "free text shown by `cli.py studies` and the report",
    "metric": "the one objective: a validation measure (default `val_acc`)",
    "direction": "`maximize` or `minimize`; default and only valid value follow the metric",
    "objectives": "instead of metric + direction: a list of `{ measure, direction }` tables",
    "n_trials": "required: COMPLETE + PRUNED trials to reach (FAILed ones do not count)",
    "timeout": "seconds after which no new trial starts (0 = none, the default)",
    "sampler": "Optuna sampler (default `tpe`)",
    "sampler_args": "keyword arguments of the sampler's constructor, checked at load",
    "seed": "sampler seed (default 0); each trial's sampler is seeded from (seed, trial number)",
    "pruner": "Optuna pruner (default `hyperband`; `none` with several objectives)",
    "pruner_args": "keyword arguments of the pruner's constructor, checked at load",
    "warm_start": "`{ study = NAME, top = K }` or `{ study = NAME, front = true }`",
}
RETRAIN_KEY_DOCS = {
    "epochs": "epochs of the final retrain and of ablation runs (default: `optim.epochs`)",
    "seeds": "seeds of the final retrain, distinct integers >= 0 (default `[0]`)",
}
SECTION_DOCS = {
    "study": "what to optimise and how Optuna searches",
    "fixed": "config keys fixed for every trial (any key below)",
    "space": "config keys searched: flat key -> distribution",
    "retrain": "the final retrain of the best trial",
    "ablation": "one table per variant: `name`, `set` (config overrides), `description`",
}


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|")


def _table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _interval(text: str) -> str:
    """``[0, inf]`` (a validator's wording) -> ``[0, ∞)``."""
    return re.sub(r"\binf[\])]", "∞)", re.sub(r"[\[(]-inf\b", "(-∞", text))


def _refusal(check: Callable[[Any], str | None], value: Any) -> str | None:
    problem = check(value)
    if problem is None:
        return None
    problem = re.sub(r"^(expected |is out of range |out of range |must be (an? )?)", "", problem)
    return _interval(problem)


def allowed_values(key: str) -> str:
    """What the key's validator accepts, in its own words: the message it gives for a value
    of the right type beyond any sensible bound."""
    typ, field = FLAT_KEYS[key]
    check = field.metadata.get("check")
    if key == "model.name":
        return "a model below, or `timm:<name>`"
    if typ is bool:
        return "true, false"
    if check is None:
        return "any"
    probes: tuple[Any, ...] = {
        int: (-(10**9), 10**9),
        float: (-1e300, 1e300),
        str: ("\x00",),
        tuple: ((2.0,),),
    }[typ]
    for probe in probes:
        said = _refusal(check, probe)
        if said is not None:
            return said
    return "any"


def _default(key: str) -> str:
    _, field = FLAT_KEYS[key]
    if field.default is None:
        return "preset's" if key.startswith("aug.") else "model's"
    return f"`{format_value(field.default)}`"


def config_section() -> list[str]:
    out = [
        "## Config keys",
        "",
        "Every key of a run's config (`TrialConfig`), by section. Use them with `--set "
        "key=value`, in config files (`[optim]` / `lr = 0.05`), in a study's `[fixed]`, "
        "`[space]` and `[[ablation]]` tables, and find them as MLflow params. A default of "
        "*model's* or *preset's* means the key is unset: the model (or `aug.preset`) "
        "decides, and the key is left out of the flat and TOML forms.",
    ]
    for section in SECTIONS:
        rows = [
            (f"`{key}`", TYPE_WORDS[typ], _default(key), allowed_values(key), f.metadata["doc"])
            for key, (typ, f) in FLAT_KEYS.items()
            if key.split(".")[0] == section
        ]
        out += ["", f"### `{section}`", ""]
        out += _table(["key", "type", "default", "allowed", "meaning"], rows)
    return out


def presets_section() -> list[str]:
    toggles = list(next(iter(PRESETS.values())))
    rows = [
        (f"`{name}`", *(format_value(values[t]) for t in toggles))
        for name, values in PRESETS.items()
    ]
    return [
        "## Augmentation presets",
        "",
        "`aug.preset` sets these toggles; a toggle set explicitly wins over its preset.",
        "",
        *_table(["preset", *(f"`aug.{t}`" for t in toggles)], rows),
    ]


def models_section() -> list[str]:
    families: dict[str, list[str]] = {}
    for name in cifar_models.list_models():
        families.setdefault(cifar_models.model_family(name), []).append(name)
    out = [
        "## Model knobs by family",
        "",
        "The knobs a model takes (`model.<knob>`) and its defaults, from the model catalog "
        "(`cifar_models/catalog.json`, checked against the builders whenever they load). A "
        "knob a model does not take is an error, not silently ignored; each knob has one "
        "validator, shared by `--set`, config files and study files (allowed values above).",
        "",
    ]
    for knob, (other, value) in KNOB_NEEDS.items():
        out.append(
            f"- `model.{knob}` acts only when `model.{other} = {format_value(value)}`; a "
            f"searched `model.{knob}` that can have no effect is a warning at load time."
        )
    for family, names in sorted(families.items()):
        knobs: list[str] = []
        for name in names:
            knobs += [k for k in cifar_models.model_knobs(name) if k not in knobs]
        rows = []
        for name in names:
            defaults = cifar_models.model_knobs(name)
            rows.append(
                (f"`{name}`", *(format_value(defaults[k]) if k in defaults else "—" for k in knobs))
            )
        out += ["", f"### {family}", ""]
        out += _table(["model", *(f"`{k}`" for k in knobs)], rows)
    timm = ", ".join(f"`{k}` ({format_value(v)})" for k, v in TIMM_KNOBS.items())
    out += [
        "",
        "### timm",
        "",
        f'`timm:<name>`: any timm model (`pip install -e ".[timm]"`); knobs: {timm}.',
    ]
    return out


def _section(name: str) -> str:
    return f"`[[{name}]]`" if name == "ablation" else f"`[{name}]`"


def study_section() -> list[str]:
    for registry, docs, what in (
        (study_spec.STUDY_KEYS, STUDY_KEY_DOCS, "[study] key"),
        (study_spec.RETRAIN_KEYS, RETRAIN_KEY_DOCS, "[retrain] key"),
        (study_spec.SECTIONS, SECTION_DOCS, "section"),
    ):
        missing = [k for k in registry if k not in docs]
        if missing:
            raise SystemExit(f"docs/gen_keys.py: describe the {what}(s) {', '.join(missing)}")
    entries = [
        (f"`{kind}`", ", ".join(f"`{k}`" for k in keys))
        for kind, keys in study_spec.ENTRY_KEYS.items()
    ]
    single = ", ".join(f"`{s}`" for s in SINGLE_OBJECTIVE_SAMPLERS)
    return [
        "## Study files",
        "",
        "How to write one: [Study files](study-files.md). The sections and keys it may hold "
        "(anything else is an error with a did-you-mean):",
        "",
        *_table(
            ["section", "holds"], ((_section(s), SECTION_DOCS[s]) for s in study_spec.SECTIONS)
        ),
        "",
        *_table(
            ["`[study]` key", "meaning"],
            ((f"`{k}`", STUDY_KEY_DOCS[k]) for k in study_spec.STUDY_KEYS),
        ),
        "",
        *_table(
            ["`[retrain]` key", "meaning"],
            ((f"`{k}`", RETRAIN_KEY_DOCS[k]) for k in study_spec.RETRAIN_KEYS),
        ),
        "",
        "Samplers (`study.sampler`): " + ", ".join(f"`{s}`" for s in SAMPLERS) + f" ({single} "
        "with one objective only). Pruners (`study.pruner`): "
        + ", ".join(f"`{p}`" for p in PRUNERS)
        + ".",
        "",
        "`[space]` entries, by `type`:",
        "",
        *_table(["type", "settings"], entries),
        "",
        "Measures (`study.metric`, or `measure` in `study.objectives`), each with the one "
        "direction it accepts:",
        "",
        *_table(
            ["measure", "direction", "what"],
            ((f"`{m}`", d, what) for m, (d, what) in MEASURES.items()),
        ),
    ]


def render() -> str:
    lines = [
        "<!-- Generated by docs/gen_keys.py from the key registry: do not edit by hand. -->",
        "# Key reference",
        "",
        "Every config key, model knob and study-file key the tool accepts, generated from the "
        "code that checks them (`python docs/gen_keys.py`; `tests/test_docs.py` fails when "
        "this page is out of date). `python cli.py keys` prints the config keys in a "
        "terminal.",
        "",
        *config_section(),
        "",
        *presets_section(),
        "",
        *models_section(),
        "",
        *study_section(),
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str]) -> int:
    text = render()
    if "--check" in argv:
        if KEYS_FILE.read_text() != text:
            print(f"{KEYS_FILE} is out of date: run python docs/gen_keys.py", file=sys.stderr)
            return 1
        return 0
    KEYS_FILE.write_text(text)
    print(f"wrote {KEYS_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
