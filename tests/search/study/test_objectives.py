"""Study files with several objectives: the format, its checks at load time, and the
Pareto front and default pick, checked against Optuna's own ``best_trials``."""

from __future__ import annotations

import random
from pathlib import Path

import optuna
import pytest

from search.errors import ConfigError
from search.study import load_study, make_pruner, make_sampler
from search.study.objectives import (
    MEASURES,
    ObjectiveSpec,
    choose,
    dominates,
    pareto_front,
    preferred,
)

HEAD = '[study]\ndataset = "digits"\nn_trials = 4\n'
SPACE = '\n[space]\n"optim.lr" = { type = "float", low = 0.01, high = 0.3, log = true }\n'
TWO = (
    'objectives = [{ measure = "val_acc", direction = "maximize" }, '
    '{ measure = "params", direction = "minimize" }]\n'
)


def write(tmp_path: Path, study_lines: str, name: str = "multi.toml") -> Path:
    path = tmp_path / name
    path.write_text(HEAD + study_lines + SPACE)
    return path


def test_two_objectives(tmp_path: Path):
    spec = load_study(str(write(tmp_path, TWO)))
    assert spec.multi_objective
    assert spec.objectives == (
        ObjectiveSpec("val_acc", "maximize"),
        ObjectiveSpec("params", "minimize"),
    )
    assert spec.directions == ["maximize", "minimize"]
    assert spec.objective_metrics == ["objective.val_acc", "objective.params"]
    # the pruner defaults to none (Optuna cannot prune these); the pruned metric is val_acc
    assert spec.pruner == "none" and isinstance(make_pruner(spec), optuna.pruners.NopPruner)
    assert (spec.metric, spec.direction) == ("val_acc", "maximize")
    settings = spec.settings()
    assert settings["objectives"] == "val_acc:maximize,params:minimize"


def test_the_single_objective_form_is_unchanged(tmp_path: Path):
    spec = load_study(str(write(tmp_path, 'metric = "val_loss"\n')))
    assert not spec.multi_objective and spec.pruner == "hyperband"
    assert spec.objectives == (ObjectiveSpec("val_loss", "minimize"),)
    assert spec.objective_metrics == ["objective"]
    assert spec.settings()["objectives"] == "val_loss:minimize"


def test_a_list_of_one_objective_is_a_single_objective_study(tmp_path: Path):
    one = 'objectives = [{ measure = "val_top5", direction = "maximize" }]\npruner = "median"\n'
    spec = load_study(str(write(tmp_path, one)))
    assert not spec.multi_objective and spec.metric == "val_top5" and spec.pruner == "median"


@pytest.mark.parametrize("sampler", ["tpe", "nsga2", "nsga3", "gp", "random", "qmc"])
def test_samplers_that_handle_several_objectives(tmp_path: Path, sampler: str):
    spec = load_study(str(write(tmp_path, TWO + f'sampler = "{sampler}"\n')))
    study = optuna.create_study(directions=spec.directions, sampler=make_sampler(spec))
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_float("y", 0, 1)), 3)
    assert len(study.best_trials) >= 1


MULTI = 'objectives = [{ measure = "val_acc", direction = "maximize" }, '
BROKEN = [
    ("unknown measure", MULTI + '{ measure = "flops", direction = "minimize" }]\n',
     "study.objectives[1].measure", "unknown measure (did you mean 'train_flops'?)"),
    ("missing direction", MULTI + '{ measure = "params" }]\n',
     "study.objectives[1].direction", "is required: maximize or minimize"),
    ("wrong direction", MULTI + '{ measure = "params", direction = "maximize" }]\n',
     "study.objectives[1].direction", "params must be minimized, not maximized"),
    ("unknown key", MULTI + '{ measure = "params", direction = "minimize", w = 1 }]\n',
     "study.objectives[1].w", "unknown key"),
    ("pruner with several objectives", TWO + 'pruner = "median"\n',
     "study.pruner", "Optuna cannot prune a study with several objectives"),
    ("cma-es with several objectives", TWO + 'sampler = "cmaes"\n',
     "study.sampler", "CmaEsSampler optimizes one objective only"),
    ("both forms", TWO + 'metric = "val_acc"\n',
     "study.metric", "either metric + direction (one objective) or objectives"),
    ("costs only", 'objectives = [{ measure = "params", direction = "minimize" }]\n',
     "study.objectives", "needs a validation measure"),
    ("a measure twice", MULTI + '{ measure = "val_acc", direction = "maximize" }]\n',
     "study.objectives[1].measure", "each measure may appear once"),
    ("not a list", 'objectives = "val_acc"\n', "study.objectives", "expected a list of tables"),
    ("empty list", "objectives = []\n", "study.objectives", "expected a list of tables"),
]  # fmt: skip


@pytest.mark.parametrize("text, key, words", [c[1:] for c in BROKEN], ids=[c[0] for c in BROKEN])
def test_broken_objectives_are_one_line_naming_file_and_key(
    tmp_path: Path, text: str, key: str, words: str
):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_study(str(path))
    message = str(info.value)
    assert info.value.key == key and message.startswith(f"{path}: {key}"), message
    assert words in message and "\n" not in message, message


def test_every_measure_has_a_direction_and_a_description():
    assert set(MEASURES) == {
        "val_acc", "val_top5", "val_loss", "params", "train_flops", "inference_ms", "epoch_seconds"
    }  # fmt: skip
    assert all(d in ("maximize", "minimize") and text for d, text in MEASURES.values())


# the front --------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_pareto_front_and_default_pick_agree_with_optuna(seed: int):
    # an independent implementation to agree with: Optuna's best_trials on the same values,
    # on a coarse grid so that ties and duplicates happen
    rng = random.Random(seed)
    directions = rng.choice(
        [["maximize", "minimize"], ["minimize", "minimize", "maximize"], ["maximize"]]
    )
    points = [
        (n, tuple(rng.randint(0, 6) / 2 for _ in directions)) for n in range(rng.randint(1, 40))
    ]
    study = optuna.create_study(directions=directions)
    for _, values in points:
        study.add_trial(optuna.trial.create_trial(values=list(values)))
    expected = sorted(t.number for t in study.best_trials)
    assert sorted(n for n, _ in pareto_front(points, directions)) == expected
    pick = preferred(points, directions)
    assert pick in expected
    if len(directions) == 1:
        assert pick == study.best_trial.number
    # the pick is the best on the first objective; nothing on the front beats it there
    sign = 1 if directions[0] == "maximize" else -1
    best_first = max(sign * v[0] for _, v in points)
    assert sign * dict(points)[pick][0] == best_first


def test_dominance_needs_one_strict_improvement():
    assert dominates((0.9, 10), (0.8, 10), ["maximize", "minimize"])
    assert not dominates((0.9, 10), (0.9, 10), ["maximize", "minimize"])
    assert not dominates((0.9, 20), (0.8, 10), ["maximize", "minimize"])


def test_choose_a_trial():
    points = [(0, (0.5, 3.0)), (1, (0.9, 9.0)), (2, (0.9, 4.0)), (3, (0.1, 1.0))]
    directions = ["maximize", "minimize"]
    assert choose(points, directions) == 2  # best accuracy, the tie broken by size
    assert choose(points, directions, 0) == 0  # any COMPLETE trial, on the front or not
    assert choose([], directions) is None
    with pytest.raises(ConfigError, match="--trial = 7: no COMPLETE trial"):
        choose(points, directions, 7)
