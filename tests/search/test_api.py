"""``search.api``, the Python API for notebooks and scripts: one real test per function on
the tiny study (real Optuna, MLflow in a temporary SQLite store, real training on
synthetic images), and its quietness in a fresh interpreter, where MLflow is imported for
the first time and creates its database.

Read-only calls run in the session's searched study (``searched``); calls that add runs
run in a private copy (``searched_copy``)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from in_process import isolated, run_cli
from tiny_study import SEARCHED_STUDY

from search import api, engine
from search.config import TrialConfig
from search.errors import ConfigError
from search.store import Tracker
from search.training import final_run, load_dataset
from search.training.packaged import predict_proba

ROOT = Path(__file__).resolve().parents[2]
searched_group = pytest.mark.xdist_group("searched")
# what MLflow, alembic and Optuna print at INFO, and MLflow's run URLs
NOISE = (
    " INFO ",
    "[I ",
    "Creating initial MLflow",
    "Context impl",
    "transactional DDL",
    "View run",
)

NOTEBOOK = """
import json, sys
from search import api, engine

study = sys.argv[1]
result = api.search(study, device="cpu")
config = api.best_config(study)
model = api.load_model(study)
outcome = api.ablate(study, seeds=[0])
json.dump(
    {
        "ran": result.ran,
        "counts": result.counts,
        "best_trial": result.best_trial.number,
        "final_run_id": result.final_run_id,
        "test_accuracy": result.test_accuracy,
        "seeds": list(result.final.results),
        "config_epochs": config.optim.epochs,
        "model": type(model).__name__,
        "variants": [v.name for v in outcome.variants],
    },
    open("result.json", "w"),
)
"""


def _final_run():
    (final,) = Tracker("tiny", create=False).find_runs("final", max_results=1)
    return final


@pytest.mark.slow
def test_search_and_the_rest_are_quiet_in_a_fresh_interpreter(study_file, tmp_path):
    # a notebook's first cell: nothing imported yet, no MLflow database yet
    path = study_file(**{**SEARCHED_STUDY, "study": {"n_trials": 2}})
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-c", NOTEBOOK, str(path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert not [line for line in done.stderr.splitlines() if any(n in line for n in NOISE)]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["ran"] == 2 and result["counts"]["complete"] == 2
    assert result["seeds"] == [0] and result["config_epochs"] == 2
    assert result["model"] == "GraphModule" and result["variants"] == ["baseline", "narrow"]
    with isolated(tmp_path):
        final = _final_run()
    assert result["final_run_id"] == final.info.run_id
    assert final.data.tags["optuna.trial_number"] == str(result["best_trial"])
    assert result["test_accuracy"] == final.data.metrics["test_accuracy_mean"]


@searched_group
def test_search_again_finds_the_done_retrain_and_prints_progress(searched_copy, capsys):
    with isolated(searched_copy):
        result = api.search(searched_copy / "tiny.toml", progress=True)
        final = _final_run()
    assert result.ran == 0 and result.final is None  # nothing to do: the study is finished
    assert result.final_run_id == final.info.run_id
    assert result.test_accuracy == final.data.metrics["test_accuracy_mean"]
    out = capsys.readouterr().out
    assert "nothing to do" in out and "final retrain already done" in out


@searched_group
def test_retrain_adds_a_final_run_and_restores_the_libraries_settings(searched_copy, capsys):
    optuna.logging.set_verbosity(optuna.logging.INFO)
    mlflow_level = logging.getLogger("mlflow").level
    try:
        with isolated(searched_copy):
            epochs: list[tuple[int, int]] = []
            outcome = api.retrain(
                searched_copy / "tiny.toml",
                seeds=[1],
                on_epoch=lambda seed, stats: epochs.append((seed, stats.epoch)),
                progress=True,
            )
            runs = Tracker("tiny", create=False).find_runs("final")
        # the settings of the caller are back (quiet only while the function ran)
        assert optuna.logging.get_verbosity() == optuna.logging.INFO
        assert logging.getLogger("mlflow").level == mlflow_level
    finally:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    assert set(outcome.results) == {1} and epochs == [(1, 1), (1, 2)]
    assert len(runs) == 2 and outcome.run_id in {r.info.run_id for r in runs}
    logged = next(r for r in runs if r.info.run_id == outcome.run_id).data.metrics
    assert logged["seed1.test_accuracy"] == outcome.results[1].final.accuracy
    assert set(outcome.model_uris) == {1}
    out = capsys.readouterr().out
    assert "final retrain on train+validation" in out and "seed 1: test accuracy" in out


@searched_group
def test_best_config_is_the_exported_file_and_reruns_the_final_retrain(searched, tmp_path):
    exported = tmp_path / "best.toml"
    cli = run_cli("best", "--study", "tiny.toml", "--output", exported, cwd=searched)
    assert cli.exit_code == 0, cli.output
    with isolated(searched):
        config = api.best_config("tiny.toml")
        best = api.best(api.load_study("tiny.toml"))
        final = _final_run()
    assert config == TrialConfig.from_file(exported) == best.config
    assert best.trial == int(final.data.tags["optuna.trial_number"])
    assert best.scores["final_test_accuracy_mean"] == final.data.metrics["test_accuracy_mean"]
    rerun = final_run(config, load_dataset(config, None))
    assert rerun.final.accuracy == final.data.metrics["seed0.test_accuracy"]  # exactly


@searched_group
def test_load_model_reproduces_the_logged_test_accuracy(searched):
    with isolated(searched):
        model = api.load_model(searched / "tiny.toml")
        final = _final_run()
        with pytest.raises(ConfigError, match="no retrained MLflow model of seed 7"):
            api.load_model(searched / "tiny.toml", seed=7)
    cfg = api.load_study(searched / "tiny.toml").base_config()
    dataset = load_dataset(cfg, None)
    probabilities = predict_proba(model, dataset.test_x, cfg.runtime.eval_batch_size).numpy()
    assert probabilities.shape == (len(dataset.test_y), 4)
    accuracy = float((probabilities.argmax(1) == dataset.test_y).mean())
    assert accuracy == final.data.metrics["seed0.test_accuracy"]  # exactly, on the CPU


@searched_group
def test_ablate_compares_the_variants_and_reuses_runs(searched_copy):
    path = searched_copy / "tiny.toml"
    seen: list[tuple[str, int]] = []
    with isolated(searched_copy):
        outcome = api.ablate(path, seeds=(0, 1), on_run=lambda v, s, r: seen.append((v.name, s)))
        again = api.ablate(path, seeds=[0, 1], variants=["narrow"])
    assert [v.name for v in outcome.variants] == ["baseline", "narrow"]
    assert seen == [("baseline", 0), ("baseline", 1), ("narrow", 0), ("narrow", 1)]
    assert outcome.of("baseline")[0].from_final  # seed 0 is the final retrain's
    assert outcome.trained == 3 and again.trained == 0
    (comparison,) = outcome.comparisons
    assert comparison.variant == "narrow" and comparison.n == 2


@pytest.mark.parametrize("progress", [False, True])
def test_search_with_workers_runs_the_command_quietly_unless_progress(
    study_file, monkeypatch, progress
):
    # the worker processes are `cli.py search` (tests/test_cli_search.py runs them for real);
    # what the API adds is where their output goes
    calls, study = [], optuna.create_study(study_name="tiny")

    def workers(script, spec, options, **kwargs):
        calls.append((script, spec.name, options.n_trials, kwargs))
        return study

    monkeypatch.setattr(engine, "search_in_workers", workers)
    result = api.search(study_file(), n_trials=4, workers=2, retrain=False, progress=progress)
    ((script, name, n_trials, kwargs),) = calls
    assert script == ROOT / "cli.py" and script.is_file() and (name, n_trials) == ("tiny", 4)
    assert kwargs["workers"] == 2 and result.study is study and result.ran is None
    assert kwargs["stdout"] == (None if progress else subprocess.DEVNULL)


def test_load_study_takes_a_name_a_path_or_a_spec(study_file):
    spec = api.load_study(study_file())
    assert spec.name == "tiny" and api.load_study(spec) is spec
    assert api.load_study("smoke").name == "smoke"
    with pytest.raises(ConfigError, match="did you mean"):
        api.load_study("smok")


def test_mistakes_are_config_errors_before_any_work(study_file, tmp_path):
    path = study_file()
    with pytest.raises(ConfigError, match="n_trials = 0"):
        api.search(path, n_trials=0)
    with pytest.raises(ConfigError, match="searched in"):
        api.search(path, overrides={"optim.lr": 0.1})
    with pytest.raises(ConfigError, match="seeds"):
        api.ablate(path, seeds=[0, 0])
    with pytest.raises(ConfigError, match="a list of seeds"):
        api.retrain(path, seeds=3)
    with pytest.raises(ConfigError, match="no trials yet"):
        api.retrain(path)
    assert not (tmp_path / "mlruns" / "tiny.journal").exists()
