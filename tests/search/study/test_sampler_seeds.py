"""Per-trial sampler seeds: real Optuna studies on a real journal file, several "workers"
(one study object and sampler each, as separate processes have) on one storage."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from search.store import open_storage
from search.study import TrialSeededSampler, load_study, study_sampler, suggest, trial_seed

STUDY = """
[study]
dataset = "synthetic"
n_trials = 12
sampler = "SAMPLER"
seed = 7
pruner = "none"
[space]
SPACE
[fixed]
"model.name" = "improved_cnn"
"""
CONTINUOUS = """"optim.lr" = { type = "float", low = 1e-3, high = 0.3, log = true }
"optim.weight_decay" = { type = "float", low = 1e-5, high = 1e-2, log = true }"""
DISCRETE = """"optim.batch_size" = { type = "int", low = 32, high = 128, step = 32 }
"model.dropout" = { type = "categorical", choices = [0.0, 0.1, 0.2] }"""


def spec_for(tmp_path: Path, sampler: str, space: str = CONTINUOUS):
    path = tmp_path / f"seeds-{sampler}.toml"
    path.write_text(STUDY.replace("SAMPLER", sampler).replace("SPACE", space))
    return load_study(str(path))


def worker(spec, folder: Path) -> optuna.Study:
    """What one worker process holds: its own sampler on the shared journal file."""
    storage = open_storage(spec.name, None)
    return optuna.create_study(
        study_name=spec.name, storage=storage, sampler=study_sampler(spec), load_if_exists=True
    )


def objective(trial: optuna.Trial, spec) -> float:
    for param in spec.space:
        trial._suggest(param.key, param.distribution())
    return sum(float(v) for v in trial.params.values() if not isinstance(v, str))


def run_trials(study: optuna.Study, spec, n: int) -> None:
    study.optimize(lambda t: objective(t, spec), n_trials=n)


def params_of(study: optuna.Study) -> list[tuple]:
    return [tuple(sorted(t.params.items())) for t in study.trials]


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_trial_seeds_differ_by_trial_and_by_study_seed():
    seeds = {trial_seed(s, n) for s in range(3) for n in range(200)}
    assert len(seeds) == 600 and all(0 <= s < 2**32 for s in seeds)
    assert trial_seed(0, 5) == trial_seed(0, 5)


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.parametrize("sampler", ["tpe", "random", "cmaes", "gp"])
def test_interleaved_workers_never_repeat_a_configuration(in_tmp, sampler):
    spec = spec_for(in_tmp, sampler)
    workers = [worker(spec, in_tmp) for _ in range(3)]
    for _ in range(3):  # each worker in turn creates the next trial, as under the claim lock
        for w in workers:
            run_trials(w, spec, 1)
    params = params_of(workers[0])
    assert len(params) == 9 and len(set(params)) == 9, params


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_a_resumed_study_draws_new_points(in_tmp, sampler):
    spec = spec_for(in_tmp, sampler)
    run_trials(worker(spec, in_tmp), spec, 4)
    resumed = worker(spec, in_tmp)  # a new process after a crash: a new sampler object
    run_trials(resumed, spec, 4)
    params = params_of(resumed)
    assert len(params) == 8 and len(set(params)) == 8, params


@pytest.mark.parametrize("sampler", ["tpe", "random", "grid"])
def test_one_uninterrupted_worker_is_reproducible(tmp_path, monkeypatch, sampler):
    space = DISCRETE if sampler == "grid" else CONTINUOUS
    runs = []
    for attempt in ("first", "second"):
        folder = tmp_path / attempt
        folder.mkdir()
        monkeypatch.chdir(folder)
        monkeypatch.setenv("CIFAR_SEARCH_HOME", str(folder))  # its mlruns/ there
        spec = spec_for(folder, sampler, space)
        study = worker(spec, folder)
        run_trials(study, spec, 8)
        runs.append(params_of(study))
    assert runs[0] == runs[1]
    assert len(set(runs[0])) == 8


def test_grid_workers_cover_the_grid_once(in_tmp):
    spec = spec_for(in_tmp, "grid", DISCRETE)
    workers = [worker(spec, in_tmp) for _ in range(3)]
    for _ in range(4):
        for w in workers:
            run_trials(w, spec, 1)
    params = params_of(workers[0])
    assert len(params) == 12 and len(set(params)) == 12


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_qmc_workers_share_one_sequence(in_tmp, monkeypatch):
    spec = spec_for(in_tmp, "qmc")
    assert not isinstance(study_sampler(spec), TrialSeededSampler)
    assert isinstance(study_sampler(spec_for(in_tmp, "tpe")), TrialSeededSampler)
    workers = [worker(spec, in_tmp) for _ in range(3)]
    for _ in range(3):
        for w in workers:
            run_trials(w, spec, 1)
    params = params_of(workers[0])
    assert len(set(params)) == 9
    # one worker alone walks the same scrambled sequence: the same 9 points, in order
    alone = in_tmp / "alone"
    alone.mkdir()
    monkeypatch.chdir(alone)
    monkeypatch.setenv("CIFAR_SEARCH_HOME", str(alone))  # its mlruns/ there
    single = worker(spec_for(alone, "qmc"), alone)
    run_trials(single, spec, 9)
    assert params_of(single) == params


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_qmc_fallback_draws_do_not_repeat_after_a_resume(in_tmp):
    """QMC samples a parameter outside its first trial's space (a conditional one) with a
    random fallback sampler: a resumed process must not repeat its draws either."""
    space = (
        CONTINUOUS
        + """
"model.attention" = { type = "categorical", choices = ["se", "none"] }
"model.dropout" = { type = "float", low = 0.0, high = 0.5, when = { "model.attention" = "se" } }"""
    )
    path = in_tmp / "cond.toml"
    path.write_text(
        STUDY.replace("SAMPLER", "qmc")
        .replace("SPACE", space)
        .replace('"improved_cnn"', '"resnet20"')
    )
    spec = load_study(str(path))

    def honour_when(trial: optuna.Trial) -> float:  # as trials do: `when` respected
        return suggest(spec, trial).optim.lr

    worker(spec, in_tmp).optimize(honour_when, n_trials=8)
    resumed = worker(spec, in_tmp)  # a new process: a new sampler and fallback
    resumed.optimize(honour_when, n_trials=8)
    drawn = [t.params["model.dropout"] for t in resumed.trials if "model.dropout" in t.params]
    assert len(drawn) >= 4 and len(set(drawn)) == len(drawn), drawn
