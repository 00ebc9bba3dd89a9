"""Warm starts: a study begins with another finished study's best configurations, restricted
to its own space, enqueued once however often the search is rerun."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from in_process import run_cli

from search import engine
from search.engine.warm_start import DONE_ATTR, FROM_ATTR
from search.errors import ConfigError
from search.store import sqlite_uri
from search.study import load_study

SOURCE_SPACE = {
    "optim.lr": {"type": "float", "low": 0.005, "high": 0.3, "log": True},
    "model.dropout": {"type": "categorical", "choices": [0.0, 0.1, 0.3]},
    "optim.weight_decay": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True},
}
# This study searches a narrower learning rate, fewer dropout values and no weight decay.
TARGET_SPACE = {
    "optim.lr": {"type": "float", "low": 0.01, "high": 0.1, "log": True},
    "model.dropout": {"type": "categorical", "choices": [0.0, 0.3]},
}


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_uri(Path("mlruns/mlflow.db")))
    return tmp_path


def searched_source(study_file, n_trials: int = 6) -> optuna.Study:
    spec = load_study(str(study_file("source", study={"n_trials": n_trials}, space=SOURCE_SPACE)))
    return engine.run_search(spec, engine.SearchOptions()).study


def ranked_by_accuracy(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    return sorted(complete, key=lambda t: (-t.value, t.number))


def test_top_k_start_the_study_restricted_to_its_space(workdir, study_file):
    source = searched_source(study_file)
    top = ranked_by_accuracy(source)[:3]
    spec = load_study(
        str(
            study_file(
                "target",
                study={"n_trials": 4, "warm_start": {"study": "source", "top": 3}},
                space=TARGET_SPACE,
            )
        )
    )
    warnings: list[str] = []
    events = []
    study = engine.run_search(
        spec, engine.SearchOptions(), on_trial=events.append, on_warning=warnings.append
    ).study

    # what the warm start should have queued, worked out here from the source's trials
    expected, dropped = [], []
    for t in top:
        kept = {}
        for key in ("optim.lr", "model.dropout"):
            value = t.params[key]
            fits = 0.01 <= value <= 0.1 if key == "optim.lr" else value in (0.0, 0.3)
            (kept.__setitem__(key, value) if fits else dropped.append((t.number, key)))
        if kept and kept not in expected:
            expected.append(kept)
    warmed = [t for t in study.trials if FROM_ATTR in t.user_attrs]
    assert len(warmed) == len(expected)
    assert [t.number for t in warmed] == list(range(len(expected)))  # before any sampled one
    for trial, params in zip(warmed, expected, strict=True):
        assert {k: trial.params[k] for k in params} == params
        assert "optim.weight_decay" not in trial.params  # not searched here: ignored
        source_number = int(trial.user_attrs[FROM_ATTR].split("#")[1])
        assert trial.user_attrs[FROM_ATTR].startswith("source#")
        assert source.trials[source_number].params["model.dropout"] in (0.0, 0.1, 0.3)
    assert len(warnings) == len(dropped)
    for (number, key), line in zip(dropped, warnings, strict=True):
        assert f"{key} = " in line and f"source trial {number} " in line and "\n" not in line
    assert events[0].warm_start_from == warmed[0].user_attrs[FROM_ATTR]

    # rerunning with a higher target does not queue them again
    assert study.user_attrs[DONE_ATTR] == "source:top3"
    again = engine.run_search(spec, engine.SearchOptions(n_trials=6)).study
    assert len([t for t in again.trials if FROM_ATTR in t.user_attrs]) == len(expected)
    assert len(again.trials) == 6


def test_the_front_of_a_multi_objective_source(workdir, study_file):
    objectives = [
        {"measure": "val_acc", "direction": "maximize"},
        {"measure": "epoch_seconds", "direction": "minimize"},
    ]
    source_spec = load_study(
        str(
            study_file(
                "source",
                study={"n_trials": 5, "objectives": objectives},
                space=TARGET_SPACE,
            )
        )
    )
    source = engine.run_search(source_spec, engine.SearchOptions()).study
    front = sorted(t.number for t in source.best_trials)
    spec = load_study(
        str(
            study_file(
                "target",
                study={"n_trials": 2, "warm_start": {"study": "source", "front": True}},
                space=TARGET_SPACE,
            )
        )
    )
    study = engine.run_search(spec, engine.SearchOptions()).study
    froms = [t.user_attrs[FROM_ATTR] for t in study.trials if FROM_ATTR in t.user_attrs]
    # the front's configurations, each once (two front trials may share a configuration)
    configs = {tuple(sorted(source.trials[n].params.items())) for n in front}
    assert len(froms) == len(configs)
    assert {int(f.split("#")[1]) for f in froms} <= set(front)


def test_a_missing_or_empty_source_is_one_line(workdir, study_file):
    path = study_file(
        "target", study={"warm_start": {"study": "nowhere", "top": 2}}, space=TARGET_SPACE
    )
    result = run_cli("search", "--study", path, "--device", "cpu", cwd=workdir)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert "study.warm_start.study = 'nowhere'" in line and "search it first" in line

    with pytest.raises(ConfigError, match="cannot warm-start from itself"):
        load_study(str(study_file("self", study={"warm_start": {"study": "self"}})))
    with pytest.raises(ConfigError, match="study.warm_start.top.*either top = K or front"):
        load_study(
            str(study_file("t2", study={"warm_start": {"study": "s", "top": 2, "front": True}}))
        )
    with pytest.raises(ConfigError, match="study.warm_start.top = 0: must be at least 1"):
        load_study(str(study_file("t3", study={"warm_start": {"study": "s", "top": 0}})))


def test_a_lost_warm_start_trial_is_retried_with_its_configuration():
    # a worker that died before suggesting anything leaves a trial whose params are empty:
    # the retry must run the configuration it was enqueued with, still marked as warm start
    from search.engine.coordination import RETRY_ATTR, retry_lost_trial

    study = optuna.create_study()
    study.enqueue_trial({"optim.lr": 0.05}, user_attrs={FROM_ATTR: "source#3"})
    study.ask()  # the worker takes the queued trial, then dies
    lost = study.trials[0]
    assert lost.params == {} and lost.state == optuna.trial.TrialState.RUNNING
    retry_lost_trial(study, lost)
    retry = study.trials[1]
    assert retry.state == optuna.trial.TrialState.WAITING
    assert retry.user_attrs == {RETRY_ATTR: 0, FROM_ATTR: "source#3"}
    assert retry.system_attrs["fixed_params"] == {"optim.lr": 0.05}


def test_grid_and_warm_start_do_not_mix(study_file):
    path = study_file(
        "grid",
        study={"sampler": "grid", "warm_start": {"study": "s"}},
        space={"model.dropout": {"type": "categorical", "choices": [0.0, 0.3]}, "optim.lr": None},
    )
    with pytest.raises(
        ConfigError, match="study.warm_start = .*grid sampler runs every grid point"
    ):
        load_study(str(path))


def test_with_workers_a_missing_source_is_reported_once(workdir, study_file):
    path = study_file(
        "target", study={"warm_start": {"study": "nowhere", "top": 2}}, space=TARGET_SPACE
    )
    result = run_cli("search", "--study", path, "--workers", "2", "--device", "cpu", cwd=workdir)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: study.warm_start.study"), (
        result.stderr
    )
    assert "starting 2 workers" not in result.stdout
