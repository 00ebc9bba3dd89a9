from __future__ import annotations

import itertools
from pathlib import Path

import optuna
import pytest

from search.config import TrialConfig
from search.errors import ConfigError
from search.study import (
    current_value,
    grid_space,
    list_studies,
    load_study,
    make_sampler,
    param_values,
    suggest,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

STUDY = """\
[study]
dataset = "cifar100"
n_trials = 5
sampler = "{sampler}"

[fixed]
model.name = "se_resnet18"
optim.epochs = 3

[space]
"optim.lr" = {{ type = "float", low = 0.01, high = 0.3, log = true }}
"model.attention" = {{ type = "categorical", choices = ["se", "none"] }}
"model.se_reduction" = {{ type = "categorical", choices = [8, 16, 32], when = {{ "model.attention" = "se" }} }}
"optim.batch_size" = {{ type = "int", low = 64, high = 256, step = 64 }}
"model.dropout" = {{ type = "float", low = 0.0, high = 0.5, step = 0.1 }}
"optim.label_smoothing" = {{ type = "float", low = 0.0, high = 0.2, step = 0.05 }}
"runtime.patience" = {{ type = "int", low = 1, high = 8, log = true }}
"""

PARAMS = {
    "optim.lr": 0.05,
    "model.attention": "se",
    "model.se_reduction": 8,
    "optim.batch_size": 192,
    "model.dropout": 0.3,
    "optim.label_smoothing": 0.1,
    "runtime.patience": 4,
}


@pytest.fixture
def spec(tmp_path: Path):
    path = tmp_path / "space.toml"
    path.write_text(STUDY.format(sampler="tpe"))
    return load_study(str(path))


def test_suggest_with_a_fixed_trial(spec):
    trial = optuna.trial.FixedTrial(PARAMS)
    cfg = suggest(spec, trial)
    assert cfg == spec.base_config().with_overrides(PARAMS)
    assert cfg.optim.lr == 0.05 and cfg.model.se_reduction == 8 and cfg.optim.batch_size == 192
    assert cfg.model.dropout == 0.3 and cfg.runtime.patience == 4
    assert cfg.data.dataset == "cifar100" and cfg.optim.epochs == 3  # the fixed values
    # the names Optuna records are the flat config keys, in file order
    assert list(trial.params) == list(PARAMS)
    assert all(cfg.to_flat()[key] == value for key, value in trial.params.items())
    # and each is suggested with exactly the distribution the study file declares
    assert trial.distributions == {p.key: p.distribution() for p in spec.space}


def test_condition_not_met_skips_the_parameter(spec):
    params = {k: v for k, v in PARAMS.items() if k != "model.se_reduction"}
    trial = optuna.trial.FixedTrial({**params, "model.attention": "none"})
    cfg = suggest(spec, trial)  # FixedTrial raises if asked for a parameter it lacks
    assert "model.se_reduction" not in trial.params
    assert cfg.model.attention == "none" and cfg.model.se_reduction is None


def test_conditional_parameter_appears_only_when_its_condition_holds(spec):
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    configs = {}

    def objective(trial: optuna.Trial) -> float:
        configs[trial.number] = suggest(spec, trial)
        return 0.0

    study.optimize(objective, n_trials=30)
    seen = set()
    for trial in study.trials:
        has_r = "model.se_reduction" in trial.params
        assert has_r == (trial.params["model.attention"] == "se")
        assert has_r == (configs[trial.number].model.se_reduction is not None)
        seen.add(has_r)
    assert seen == {True, False}, "both branches must be exercised"


def test_condition_on_a_skipped_parameter_reads_the_base_config(tmp_path: Path):
    # model.attention is searched only for resnet18, so for se_resnet18 it is skipped and
    # the model's own default ("se") decides whether the SE ratio is searched
    path = tmp_path / "nested.toml"
    path.write_text("""\
[study]
dataset = "cifar10"
n_trials = 5
[space]
"model.name" = { type = "categorical", choices = ["resnet18", "se_resnet18"] }
"model.attention" = { type = "categorical", choices = ["se", "none"], when = { "model.name" = "resnet18" } }
"model.se_reduction" = { type = "categorical", choices = [8, 16], when = { "model.attention" = "se" } }
""")
    spec = load_study(str(path))
    trial = optuna.trial.FixedTrial({"model.name": "se_resnet18", "model.se_reduction": 8})
    cfg = suggest(spec, trial)
    assert list(trial.params) == ["model.name", "model.se_reduction"]
    assert cfg.model.name == "se_resnet18" and cfg.model.se_reduction == 8
    trial = optuna.trial.FixedTrial({"model.name": "resnet18", "model.attention": "none"})
    assert suggest(spec, trial).model.attention == "none"
    assert list(trial.params) == ["model.name", "model.attention"]


def test_current_value_resolves_model_and_preset_defaults():
    base = TrialConfig().with_overrides({"model.name": "se_resnet18", "aug.preset": "standard"})
    assert current_value("model.attention", {}, base) == "se"
    assert current_value("model.attention", {"model.name": "resnet18"}, base) == "none"
    assert current_value("aug.flip", {}, base) is True
    assert current_value("aug.flip", {"aug.preset": "none"}, base) is False
    assert current_value("optim.lr", {"optim.lr": 0.2}, base) == 0.2
    assert current_value("optim.lr", {}, base) == base.optim.lr


def test_grid_visits_every_combination_once():
    spec = load_study("cifar10-grid")
    grid = grid_space(spec)
    assert grid == {"model.se_reduction": [8, 16, 32], "model.dropout": [0.0, 0.3, 0.5, 0.7]}
    assert spec.space_size() == 12
    study = optuna.create_study(direction=spec.direction, sampler=make_sampler(spec))
    visited = []

    def objective(trial: optuna.Trial) -> float:
        cfg = suggest(spec, trial)
        visited.append((cfg.model.se_reduction, cfg.model.dropout))
        return 0.0

    study.optimize(objective, n_trials=spec.n_trials)
    assert sorted(visited) == sorted(itertools.product(*grid.values()))
    assert len(set(visited)) == 12


def test_grid_values_are_exact(spec):
    by_key = {p.key: p for p in spec.space}
    assert param_values(by_key["model.dropout"]) == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    assert param_values(by_key["optim.label_smoothing"]) == [0.0, 0.05, 0.1, 0.15, 0.2]
    assert param_values(by_key["optim.batch_size"]) == [64, 128, 192, 256]
    assert param_values(by_key["runtime.patience"]) == list(range(1, 9))
    assert param_values(by_key["model.attention"]) == ["se", "none"]
    assert param_values(by_key["optim.lr"]) is None
    # the counts space_size multiplies agree with the values listed
    for p in spec.space:
        values = param_values(p)
        assert p.count() == (None if values is None else len(values))


def test_grid_space_rejects_a_continuous_parameter(spec):
    with pytest.raises(ConfigError) as info:
        grid_space(spec)
    assert info.value.key == "space.optim.lr" and str(spec.path) in str(info.value)


def test_space_size():
    assert load_study("cifar10-grid").space_size() == 12
    assert load_study("cifar100-seresnet").space_size() is None


@pytest.mark.parametrize("path", list_studies(), ids=lambda p: p.stem)
def test_every_sampled_config_is_valid(path: Path):
    """Random trials of each shipped study produce valid configs whose flat values are the
    sampled ones (load-time checks must leave no combination that fails at trial time)."""
    spec = load_study(str(path))
    study = optuna.create_study(
        direction=spec.direction, sampler=optuna.samplers.RandomSampler(seed=1)
    )

    def objective(trial: optuna.Trial) -> float:
        cfg = suggest(spec, trial)
        flat = cfg.to_flat()
        assert all(flat[k] == v for k, v in trial.params.items())
        assert all(flat[k] == v for k, v in spec.fixed.items())
        return 0.0

    study.optimize(objective, n_trials=8, catch=())
    assert len(study.trials) == 8
