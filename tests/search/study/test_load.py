from __future__ import annotations

import os
from pathlib import Path

import optuna
import pytest

from search.config import TrialConfig
from search.errors import ConfigError
from search.study import (
    STUDIES_DIR,
    AblationSpec,
    list_studies,
    load_study,
    make_pruner,
    make_sampler,
    pruner_kwargs,
    resolve_study_path,
)

SHIPPED = [
    "cifar10-grid",
    "cifar10-seresnet",
    "cifar100-architectures",
    "cifar100-efficiency",
    "cifar100-seresnet",
    "smoke",
]

GOOD = """\
[study]
dataset = "cifar10"
n_trials = 5

[fixed]
model.name = "se_resnet18"
optim.epochs = 3

[space]
"optim.lr" = { type = "float", low = 0.01, high = 0.3, log = true }
"model.attention" = { type = "categorical", choices = ["se", "none"] }
"model.se_reduction" = { type = "categorical", choices = [8, 16], when = { "model.attention" = "se" } }
"""


def write(tmp_path: Path, text: str, name: str = "study.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def edit(old: str, new: str, text: str = GOOD) -> str:
    assert old in text, old  # keep the broken cases honest about what they change
    return text.replace(old, new)


# shipped studies ---------------------------------------------------------------------------


def test_every_shipped_study_is_listed():
    assert [p.stem for p in list_studies()] == SHIPPED


@pytest.mark.parametrize("path", list_studies(), ids=lambda p: p.stem)
def test_shipped_study_loads(path: Path):
    spec = load_study(str(path))
    cfg = spec.base_config()
    assert isinstance(cfg, TrialConfig) and cfg.data.dataset == spec.dataset
    assert spec.name == path.stem and spec.space and spec.description
    assert spec.retrain.epochs >= 1 and spec.retrain.seeds
    assert isinstance(make_sampler(spec), optuna.samplers.BaseSampler)
    assert isinstance(make_pruner(spec), optuna.pruners.BasePruner)
    assert path.read_text().startswith("#"), "a comment header says what the study is for"


def test_cifar100_seresnet_contents():
    spec = load_study("cifar100-seresnet")
    assert spec.dataset == "cifar100" and spec.n_trials == 60
    assert (spec.sampler, spec.pruner) == ("tpe", "hyperband")
    keys = [p.key for p in spec.space]
    assert keys[:2] == ["model.name", "model.se_reduction"]
    assert {
        "model.dropout",
        "optim.weight_decay",
        "optim.lr",
        "optim.label_smoothing",
        "aug.crop_padding",
        "aug.flip",
        "aug.jitter",
        "aug.erasing",
    } <= set(keys)
    cfg = spec.base_config()
    assert cfg.aug.preset == "none" and cfg.optim.epochs == 30 and cfg.optim.batch_size == 256
    assert cfg.optim.nesterov and cfg.schedule.warmup_epochs == 1.0
    assert spec.retrain.epochs == 200 and spec.retrain.seeds == (0, 1, 2)
    lr = next(p for p in spec.space if p.key == "optim.lr")
    assert (lr.type, lr.low, lr.high, lr.log) == ("float", 0.02, 0.4, True)
    assert spec.space_size() is None  # lr is continuous


def test_efficiency_study_is_accuracy_against_size_and_speed():
    spec = load_study("cifar100-efficiency")
    assert spec.multi_objective and spec.pruner == "none"
    assert [str(o) for o in spec.objectives] == [
        "val_acc:maximize",
        "params:minimize",
        "inference_ms:minimize",
    ]
    models = next(p for p in spec.space if p.key == "model.name").choices
    for family in ("resnet20", "resnet56", "eca_resnet20", "ghost_resnet20", "se_resnet18"):
        assert family in models
    assert "densenet121" in models


def test_grid_and_smoke_studies():
    grid = load_study("cifar10-grid")
    assert grid.sampler == "grid" and grid.pruner == "none" and grid.space_size() == 12
    assert isinstance(make_sampler(grid), optuna.samplers.GridSampler)
    smoke = load_study("smoke")
    assert smoke.dataset == "digits" and smoke.n_trials >= 10
    assert smoke.base_config().aug.flip is False and smoke.base_config().runtime.device == "auto"
    assert smoke.sampler_args == {"n_startup_trials": 4}
    assert pruner_kwargs(smoke) == {"n_startup_trials": 3, "n_warmup_steps": 2}


def test_settings_describe_the_search():
    settings = load_study("smoke").settings()
    assert settings["sampler"] == "tpe" and settings["seed"] == "0"
    assert settings["sampler_args"] == '{"n_startup_trials": 4}'
    assert settings["pruner"] == "median"
    assert settings["pruner_args"] == '{"n_startup_trials": 3, "n_warmup_steps": 2}'
    assert (settings["direction"], settings["metric"], settings["n_trials"]) == (
        "maximize",
        "val_acc",
        "12",
    )
    assert all(isinstance(v, str) for v in settings.values())
    # Hyperband's effective arguments are recorded, not just the file's
    hyper = load_study("cifar100-seresnet").settings()
    assert hyper["pruner_args"] == '{"max_resource": 30, "min_resource": 1, "reduction_factor": 3}'


# a good file, and its variants ---------------------------------------------------------------


def test_good_study(tmp_path: Path):
    spec = load_study(str(write(tmp_path, GOOD)))
    assert spec.name == "study" and spec.direction == "maximize" and spec.metric == "val_acc"
    assert spec.timeout is None and spec.sampler == "tpe" and spec.pruner == "hyperband"
    assert spec.fixed == {"model.name": "se_resnet18", "optim.epochs": 3, "data.dataset": "cifar10"}
    assert [p.key for p in spec.space] == ["optim.lr", "model.attention", "model.se_reduction"]
    assert spec.space[2].when == (("model.attention", ("se",)),)
    assert spec.retrain.epochs == 3 and spec.retrain.seeds == (0,)  # defaults
    assert spec.ablations == ()
    assert pruner_kwargs(spec)["max_resource"] == 3


def test_dotted_nested_and_quoted_keys_mean_the_same(tmp_path: Path):
    nested = """\
[study]
dataset = "cifar10"
n_trials = 5
[fixed.model]
name = "se_resnet18"
[fixed.optim]
epochs = 3
[space]
optim.lr = { type = "float", low = 0.01, high = 0.3, log = true }
model.attention = { type = "categorical", choices = ["se", "none"] }
model.se_reduction = { type = "categorical", choices = [8, 16], when = { model.attention = "se" } }
"""
    a = load_study(str(write(tmp_path, GOOD, "a.toml")))
    b = load_study(str(write(tmp_path, nested, "b.toml")))
    assert (a.fixed, a.space) == (b.fixed, b.space)


def test_optional_settings(tmp_path: Path):
    text = edit(
        "n_trials = 5\n",
        """n_trials = 5
metric = "val_loss"
timeout = 90
sampler = "random"
seed = 3
pruner = "percentile"
description = "x"
[study.pruner_args]
n_warmup_steps = 3
[retrain]
epochs = 7
seeds = [1, 2]
[[ablation]]
name = "no-se"
set = { "model.attention" = "none" }
""",
    )
    spec = load_study(str(write(tmp_path, text)))
    assert spec.direction == "minimize"  # follows the metric when not given
    assert spec.timeout == 90.0 and spec.seed == 3 and spec.description == "x"
    assert pruner_kwargs(spec) == {"percentile": 25.0, "n_warmup_steps": 3}
    assert isinstance(make_pruner(spec), optuna.pruners.PercentilePruner)
    assert isinstance(make_sampler(spec), optuna.samplers.RandomSampler)
    assert spec.retrain.epochs == 7 and spec.retrain.seeds == (1, 2)
    assert spec.ablations == (AblationSpec("no-se", {"model.attention": "none"}),)


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.parametrize(
    "name, cls",
    [
        ("tpe", optuna.samplers.TPESampler),
        ("random", optuna.samplers.RandomSampler),
        ("gp", optuna.samplers.GPSampler),
        ("cmaes", optuna.samplers.CmaEsSampler),
        ("qmc", optuna.samplers.QMCSampler),
        ("nsga2", optuna.samplers.NSGAIISampler),
        ("nsga3", optuna.samplers.NSGAIIISampler),
    ],
)
def test_every_sampler_is_built(tmp_path: Path, name: str, cls: type):
    text = edit("n_trials = 5", f'n_trials = 5\nsampler = "{name}"')
    spec = load_study(str(write(tmp_path, text)))
    assert isinstance(make_sampler(spec), cls)


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.parametrize(
    "name, cls",
    [
        ("hyperband", optuna.pruners.HyperbandPruner),
        ("asha", optuna.pruners.SuccessiveHalvingPruner),
        ("median", optuna.pruners.MedianPruner),
        ("percentile", optuna.pruners.PercentilePruner),
        ("wilcoxon", optuna.pruners.WilcoxonPruner),
        ("none", optuna.pruners.NopPruner),
    ],
)
def test_every_pruner_is_built(tmp_path: Path, name: str, cls: type):
    text = edit("n_trials = 5", f'n_trials = 5\npruner = "{name}"')
    spec = load_study(str(write(tmp_path, text)))
    assert isinstance(make_pruner(spec), cls)


def test_sampler_and_pruner_args_reach_the_constructors(tmp_path: Path):
    text = edit(
        "n_trials = 5",
        """n_trials = 5
pruner = "median"
[study.sampler_args]
n_startup_trials = 2
multivariate = false
[study.pruner_args]
n_startup_trials = 7""",
    )
    spec = load_study(str(write(tmp_path, text)))
    sampler = make_sampler(spec)
    assert sampler._n_startup_trials == 2 and sampler._multivariate is False
    assert make_pruner(spec)._n_startup_trials == 7
    # the file's value replaces one default; the other (no pruning on epoch 1) stays
    assert pruner_kwargs(spec) == {"n_startup_trials": 7, "n_warmup_steps": 2}


def test_values_the_signature_cannot_judge_fail_when_built(tmp_path: Path):
    path = write(
        tmp_path,
        edit(
            "n_trials = 5",
            'n_trials = 5\npruner = "percentile"\n[study.pruner_args]\npercentile = 150',
        ),
    )
    spec = load_study(str(path))
    with pytest.raises(ConfigError) as info:
        make_pruner(spec)
    assert info.value.key == "study.pruner_args" and str(path) in str(info.value)


def test_space_size_counts_grid_points(tmp_path: Path):
    text = edit(
        '"optim.lr" = { type = "float", low = 0.01, high = 0.3, log = true }',
        '"optim.batch_size" = { type = "int", low = 64, high = 256, step = 64 }\n'
        '"model.dropout" = { type = "float", low = 0.0, high = 0.5, step = 0.1 }',
    )
    assert load_study(str(write(tmp_path, text))).space_size() == 4 * 6 * 2 * 2
    assert load_study(str(write(tmp_path, GOOD, "b.toml"))).space_size() is None


# broken files --------------------------------------------------------------------------------

LR = '"optim.lr" = { type = "float", low = 0.01, high = 0.3, log = true }'
SE = (
    '"model.se_reduction" = { type = "categorical", choices = [8, 16], '
    'when = { "model.attention" = "se" } }'
)
ATT = '"model.attention" = { type = "categorical", choices = ["se", "none"] }'

BROKEN = [
    # (id, text, key, words the message must contain)
    ("unknown-section", edit("[space]", "[sapce]"), "sapce", "did you mean 'space'"),
    (
        "unknown-study-key",
        edit("n_trials = 5", "n_trial = 5"),
        "study.n_trial",
        "did you mean 'n_trials'",
    ),
    ("missing-n-trials", edit("n_trials = 5\n", ""), "study.n_trials", "required"),
    ("zero-n-trials", edit("n_trials = 5", "n_trials = 0"), "study.n_trials", "at least 1"),
    ("float-n-trials", edit("n_trials = 5", "n_trials = 5.0"), "study.n_trials", "integer"),
    (
        "bad-direction",
        edit("n_trials = 5", 'n_trials = 5\ndirection = "maximise"'),
        "study.direction",
        "did you mean 'maximize'",
    ),
    (
        "metric-direction",
        edit("n_trials = 5", 'n_trials = 5\nmetric = "val_loss"\ndirection = "maximize"'),
        "study.direction",
        "minimized",
    ),
    (
        "unknown-metric",
        edit("n_trials = 5", 'n_trials = 5\nmetric = "val_accuracy"'),
        "study.metric",
        "val_acc",
    ),
    ("unknown-dataset", edit('"cifar10"', '"cifar1000"'), "study.dataset", "cifar100"),
    (
        "negative-timeout",
        edit("n_trials = 5", "n_trials = 5\ntimeout = -1"),
        "study.timeout",
        ">= 0",
    ),
    (
        "unknown-sampler",
        edit("n_trials = 5", 'n_trials = 5\nsampler = "tpee"'),
        "study.sampler",
        "tpe, random, gp, cmaes, qmc, grid",
    ),
    (
        "unknown-pruner",
        edit("n_trials = 5", 'n_trials = 5\npruner = "hyperbnd"'),
        "study.pruner",
        "hyperband, asha, median",
    ),
    (
        "bad-sampler-arg",
        edit("n_trials = 5", "n_trials = 5\n[study.sampler_args]\nn_startup = 3"),
        "study.sampler_args.n_startup",
        "did you mean 'n_startup_trials'",
    ),
    (
        "sampler-arg-type",
        edit("n_trials = 5", 'n_trials = 5\n[study.sampler_args]\nn_startup_trials = "ten"'),
        "study.sampler_args.n_startup_trials",
        "expected an integer",
    ),
    (
        "sampler-arg-callable",
        edit("n_trials = 5", "n_trials = 5\n[study.sampler_args]\ngamma = 3"),
        "study.sampler_args.gamma",
        "Python object",
    ),
    (
        "seed-in-sampler-args",
        edit("n_trials = 5", "n_trials = 5\n[study.sampler_args]\nseed = 3"),
        "study.sampler_args.seed",
        "study.seed",
    ),
    (
        "bad-pruner-arg",
        edit(
            "n_trials = 5",
            'n_trials = 5\npruner = "median"\n[study.pruner_args]\nreduction_factor = 3',
        ),
        "study.pruner_args.reduction_factor",
        "n_startup_trials",
    ),
    (
        "unknown-space-key",
        edit('"optim.lr"', '"optim.lrr"'),
        "space.optim.lrr",
        "did you mean 'optim.lr'",
    ),
    (
        "unknown-entry-key",
        edit("low = 0.01", "lo = 0.01"),
        "space.optim.lr.lo",
        "did you mean 'low'",
    ),
    (
        "missing-type",
        edit('type = "float", ', 'typ = "float", '),
        "space.optim.lr.type",
        "missing type",
    ),
    (
        "unknown-type",
        edit('type = "float"', 'type = "real"'),
        "space.optim.lr.type",
        "categorical, int, float",
    ),
    (
        "float-type-on-int-key",
        edit(SE, '"model.se_reduction" = { type = "float", low = 4, high = 32 }'),
        "space.model.se_reduction.type",
        "int",
    ),
    (
        "inverted-range",
        edit("low = 0.01, high = 0.3", "low = 0.3, high = 0.01"),
        "space.optim.lr.low",
        "below high",
    ),
    (
        "empty-float-range",
        edit("low = 0.01, high = 0.3", "low = 0.1, high = 0.1"),
        "space.optim.lr.low",
        "empty range",
    ),
    ("log-low-zero", edit("low = 0.01", "low = 0.0"), "space.optim.lr.low", "log"),
    ("log-with-step", edit("log = true", "log = true, step = 0.01"), "space.optim.lr.log", "step"),
    (
        "step-too-large",
        edit(LR, '"model.dropout" = { type = "float", low = 0.0, high = 0.3, step = 0.5 }'),
        "space.model.dropout.step",
        "larger than the range",
    ),
    (
        "step-not-divisor",
        edit(LR, '"model.dropout" = { type = "float", low = 0.0, high = 0.5, step = 0.2 }'),
        "space.model.dropout.step",
        "not a multiple",
    ),
    (
        "negative-step",
        edit(LR, '"optim.batch_size" = { type = "int", low = 64, high = 256, step = -64 }'),
        "space.optim.batch_size.step",
        "positive",
    ),
    (
        "bound-out-of-range",
        edit(LR, '"model.dropout" = { type = "float", low = 0.0, high = 1.0 }'),
        "space.model.dropout.high",
        "out of range",
    ),
    (
        "empty-choices",
        edit('choices = ["se", "none"]', "choices = []"),
        "space.model.attention.choices",
        "non-empty",
    ),
    (
        "duplicate-choices",
        edit('choices = ["se", "none"]', 'choices = ["se", "se"]'),
        "space.model.attention.choices",
        "twice",
    ),
    (
        "bad-choice-value",
        edit('choices = ["se", "none"]', 'choices = ["se", "sse"]'),
        "space.model.attention.choices",
        "se, eca, none",
    ),
    (
        "unregistered-model",
        edit(
            'model.name = "se_resnet18"\n',
            "",
            edit(
                LR,
                '"model.name" = { type = "categorical", choices = ["se_resnet18", "se_resnet99"] }',
            ),
        ),
        "space.model.name.choices",
        "unknown model",
    ),
    (
        "knob-the-model-lacks",
        edit(
            'model.name = "se_resnet18"',
            'model.name = "densenet121"',
            edit(
                f"{ATT}\n{SE}\n",
                '"model.se_reduction" = { type = "categorical", choices = [8, 16] }\n',
            ),
        ),
        "space.model.se_reduction.choices",
        "does not take",
    ),
    (
        "fixed-knob-a-choice-lacks",
        edit(
            'model.name = "se_resnet18"',
            "model.se_reduction = 8",
            edit(
                f"{ATT}\n{SE}\n",
                '"model.name" = { type = "categorical", choices = ["resnet18", "densenet121"] }\n',
            ),
        ),
        "space.model.name.choices",
        "does not take",
    ),
    (
        "space-key-also-fixed",
        edit(LR, '"optim.epochs" = { type = "int", low = 1, high = 5 }'),
        "space.optim.epochs",
        "fixed.optim.epochs",
    ),
    (
        "searched-dataset",
        edit(LR, '"data.dataset" = { type = "categorical", choices = ["cifar10", "cifar100"] }'),
        "space.data.dataset",
        "study.dataset",
    ),
    (
        "when-undeclared",
        edit('{ "model.attention" = "se" }', '{ "model.attenton" = "se" }'),
        "space.model.se_reduction.when.model.attenton",
        "did you mean 'model.attention'",
    ),
    (
        "when-declared-later",
        edit(f"{ATT}\n{SE}", f"{SE}\n{ATT}"),
        "space.model.se_reduction.when.model.attention",
        "declared earlier",
    ),
    (
        "when-impossible-value",
        edit('{ "model.attention" = "se" }', '{ "model.attention" = "eca" }'),
        "space.model.se_reduction.when.model.attention",
        "never takes",
    ),
    (
        "when-refers-to-a-typo-in-choices",  # reported where the typo is, not at the when
        edit(
            'model.name = "se_resnet18"\n',
            "",
            edit(
                "[space]\n",
                '[space]\n"model.name" = { type = "categorical", choices = ["resnet18", '
                '"se_resnt18"] }\n"model.dropout" = { type = "categorical", choices = [0.0, 0.3], '
                'when = { "model.name" = "se_resnet18" } }\n',
            ),
        ),
        "space.model.name.choices",
        "did you mean 'se_resnet18'? space.model.dropout.when refers to it",
    ),
    (
        "when-fixed-never-holds",
        edit('{ "model.attention" = "se" }', '{ "model.name" = "resnet18" }'),
        "space.model.se_reduction.when.model.name",
        "never",
    ),
    (
        "grid-continuous",
        edit("n_trials = 5", 'n_trials = 5\nsampler = "grid"'),
        "space.optim.lr",
        "grid",
    ),
    (
        "grid-conditional",
        edit(LR + "\n", "", edit("n_trials = 5", 'n_trials = 5\nsampler = "grid"')),
        "space.model.se_reduction.when",
        "grid",
    ),
    (
        "grid-args",
        edit(
            "n_trials = 5", 'n_trials = 5\nsampler = "grid"\n[study.sampler_args]\nsearch_space = 1'
        ),
        "study.sampler_args.search_space",
        "[space]",
    ),
    ("empty-space", edit(f"{LR}\n{ATT}\n{SE}\n", ""), "space", "no parameters"),
    ("entry-not-a-table", edit(LR, '"optim.lr" = 0.1'), "space.optim.lr", "table"),
    (
        "fixed-wrong-type",
        edit("optim.epochs = 3", 'optim.epochs = "ten"'),
        "fixed.optim.epochs",
        "integer",
    ),
    (
        "fixed-unknown-key",
        edit("optim.epochs = 3", "optim.epoch = 3"),
        "fixed.optim.epoch",
        "did you mean 'optim.epochs'",
    ),
    (
        "fixed-dataset",
        edit("optim.epochs = 3", 'data.dataset = "cifar100"'),
        "fixed.data.dataset",
        "study.dataset",
    ),
    (
        "fixed-unregistered-model",
        edit('"se_resnet18"', '"se_resnet19"'),
        "fixed.model.name",
        "unknown model",
    ),
    ("retrain-duplicate-seeds", GOOD + "[retrain]\nseeds = [0, 0]\n", "retrain.seeds", "distinct"),
    ("retrain-empty-seeds", GOOD + "[retrain]\nseeds = []\n", "retrain.seeds", "non-empty"),
    ("retrain-negative-seed", GOOD + "[retrain]\nseeds = [-1]\n", "retrain.seeds", ">= 0"),
    (
        "retrain-unknown-key",
        GOOD + "[retrain]\nepoch = 3\n",
        "retrain.epoch",
        "did you mean 'epochs'",
    ),
    ("retrain-epochs-zero", GOOD + "[retrain]\nepochs = 0\n", "retrain.epochs", "at least 1"),
    (
        "retrain-epochs-needed",
        edit(
            "optim.epochs = 3\n",
            "",
            edit(LR, '"optim.epochs" = { type = "int", low = 1, high = 5 }'),
        ),
        "retrain.epochs",
        "optim.epochs is searched",
    ),
    ("ablation-not-a-list", GOOD + "[ablation]\nname = 'x'\n", "ablation", "[[ablation]]"),
]


@pytest.mark.parametrize("text, key, words", [c[1:] for c in BROKEN], ids=[c[0] for c in BROKEN])
def test_broken_study_names_file_and_key(tmp_path: Path, text: str, key: str, words: str):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_study(str(path))
    err = info.value
    message = str(err)
    assert err.file == str(path) and err.key == key, message
    assert message.startswith(f"{path}: {key}"), message
    assert words in message, message
    assert "\n" not in message


def test_at_least_a_dozen_kinds_of_broken_files():
    assert len(BROKEN) >= 12 and len({c[0] for c in BROKEN}) == len(BROKEN)


def test_toml_syntax_error(tmp_path: Path):
    path = write(tmp_path, edit("[fixed]", "[fixed"))
    with pytest.raises(ConfigError) as info:
        load_study(str(path))
    message = str(info.value)
    assert message.startswith(f"{path}: not valid TOML") and "line 5" in message
    assert "\n" not in message


def test_missing_study_file(tmp_path: Path):
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_study(str(path))
    assert info.value.file == str(path) and "no such study file" in str(info.value)


def test_loading_creates_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, GOOD, "good.toml")
    write(tmp_path, edit("n_trials = 5", "n_trials = 0"), "bad.toml")
    before = sorted(os.walk(tmp_path))
    studies_before = sorted(os.walk(STUDIES_DIR))
    load_study("good", studies_dir=tmp_path)
    load_study("good.toml")
    with pytest.raises(ConfigError):
        load_study("bad.toml")
    for path in list_studies():
        load_study(str(path))
    assert sorted(os.walk(tmp_path)) == before
    assert sorted(os.walk(STUDIES_DIR)) == studies_before


# finding study files ---------------------------------------------------------------------------


def test_resolve_by_name_and_by_path(tmp_path: Path):
    write(tmp_path, GOOD, "alpha.toml")
    write(tmp_path, GOOD, "beta.toml")
    assert resolve_study_path("alpha", tmp_path) == tmp_path / "alpha.toml"
    assert resolve_study_path(str(tmp_path / "beta.toml")) == tmp_path / "beta.toml"
    assert resolve_study_path("smoke") == STUDIES_DIR / "smoke.toml"
    assert [p.name for p in list_studies(tmp_path)] == ["alpha.toml", "beta.toml"]
    assert list_studies(tmp_path / "missing") == []
    spec = load_study("alpha", studies_dir=tmp_path)
    assert spec.name == "alpha" and spec.path == tmp_path / "alpha.toml"


def test_a_path_is_used_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub", GOOD, "gamma.toml")
    assert resolve_study_path("sub/gamma.toml") == Path("sub/gamma.toml")
    with pytest.raises(ConfigError) as info:
        load_study("sub/gamma")  # a separator makes it a path, and that file does not exist
    assert info.value.file == "sub/gamma"
    # a path ignores studies_dir, and errors name the file the way the user wrote it
    assert load_study("sub/gamma.toml", studies_dir=tmp_path / "elsewhere").name == "gamma"
    write(tmp_path / "sub", edit("n_trials = 5", "n_trials = 0"), "delta.toml")
    with pytest.raises(ConfigError) as info:
        load_study("sub/delta.toml")
    assert str(info.value).startswith("sub/delta.toml: study.n_trials")


def test_unknown_name_lists_the_available_ones(tmp_path: Path):
    write(tmp_path, GOOD, "alpha.toml")
    write(tmp_path, GOOD, "beta.toml")
    with pytest.raises(ConfigError) as info:
        resolve_study_path("alpah", tmp_path)
    message = str(info.value)
    assert "did you mean 'alpha'" in message and "available: alpha, beta" in message
    assert info.value.key == "study" and info.value.value == "alpah" and "\n" not in message
    with pytest.raises(ConfigError) as info:
        load_study("cifar100-seresnt")
    assert "did you mean 'cifar100-seresnet'" in str(info.value)


# model knobs: one validator per knob (cifar_models), warnings for knobs with no effect ----


@pytest.mark.parametrize(
    "old, new, where",
    [
        (
            "optim.epochs = 3",
            'optim.epochs = 3\nmodel.attention = "eca"\nmodel.eca_kernel = 4',
            "fixed.model.eca_kernel = 4",
        ),
        (
            '"optim.lr"',
            '"model.eca_kernel" = { type = "categorical", choices = [3, 4] }\n"optim.lr"',
            "space.model.eca_kernel.choices = 4",
        ),
        # both ends are odd, but the range takes 4 and 6 too
        (
            '"optim.lr"',
            '"model.eca_kernel" = { type = "int", low = 3, high = 7 }\n"optim.lr"',
            "space.model.eca_kernel = 4: must be an odd integer >= 1 (a value the range takes)",
        ),
    ],
)
def test_an_even_eca_kernel_fails_at_load_time(tmp_path: Path, old, new, where):
    with pytest.raises(ConfigError) as err:
        load_study(str(write(tmp_path, edit(old, new))))
    assert where in str(err.value) and "odd integer" in str(err.value)


def test_an_even_eca_kernel_fails_in_set_and_config_files(tmp_path: Path):
    from search.config import parse_assignments

    with pytest.raises(ConfigError, match="model.eca_kernel = 4: must be an odd integer"):
        parse_assignments(["model.eca_kernel=4"])
    path = write(tmp_path, '[model]\nname = "eca_resnet20"\neca_kernel = 4\n', "cfg.toml")
    with pytest.raises(ConfigError) as err:
        TrialConfig.from_file(path)
    assert str(path) in str(err.value) and "odd integer" in str(err.value)


def _load_warnings(tmp_path: Path, text: str) -> list[str]:
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_study(str(write(tmp_path, text)))
    return [str(w.message) for w in caught]


NO_ATTENTION_SEARCH = edit(
    '"model.attention" = { type = "categorical", choices = ["se", "none"] }\n',
    "",
).replace(', when = { "model.attention" = "se" }', "")


@pytest.mark.parametrize(
    "old, new, because",
    [
        # attention fixed to none
        (
            "optim.epochs = 3",
            'optim.epochs = 3\nmodel.attention = "none"',
            "model.attention is 'none' (fixed)",
        ),
        # a model whose own default attention is none, attention not set at all
        (
            'model.name = "se_resnet18"',
            'model.name = "resnet18"',
            "model.attention is 'none' (the default of resnet18)",
        ),
    ],
)
def test_a_searched_knob_that_cannot_act_is_a_warning(tmp_path: Path, old, new, because):
    messages = _load_warnings(tmp_path, edit(old, new, NO_ATTENTION_SEARCH))
    assert len(messages) == 1 and "space.model.se_reduction can have no effect" in messages[0]
    assert because in messages[0] and "\n" not in messages[0]


def test_knobs_that_can_act_load_without_warnings(tmp_path: Path):
    assert _load_warnings(tmp_path, GOOD) == []  # se_reduction searched only when "se"
    # se_resnet18's own attention is "se"
    assert _load_warnings(tmp_path, NO_ATTENTION_SEARCH) == []


def test_no_warning_when_another_model_keeps_its_own_attention(tmp_path: Path):
    # attention is searched for resnet20 only; se_resnet18's trials keep their own "se"
    text = (
        GOOD.replace('model.name = "se_resnet18"\n', "")
        .replace(
            '"model.attention" = { type = "categorical", choices = ["se", "none"] }',
            '"model.name" = { type = "categorical", choices = ["se_resnet18", "resnet20"] }\n'
            '"model.attention" = { type = "categorical", choices = ["none", "eca"], '
            'when = { "model.name" = "resnet20" } }',
        )
        .replace(', when = { "model.attention" = "se" }', "")
    )
    assert _load_warnings(tmp_path, text) == []


def test_a_log_int_range_is_checked_value_by_value(tmp_path: Path):
    text = edit(
        '"optim.lr"',
        '"model.eca_kernel" = { type = "int", low = 1, high = 9, log = true }\n"optim.lr"',
    )
    with pytest.raises(ConfigError, match="space.model.eca_kernel = 2: must be an odd"):
        load_study(str(write(tmp_path, text)))
