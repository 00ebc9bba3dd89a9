"""Shared by the worker-process tests: a study of short CPU trials (the tiny study of
tests/tiny_study.py, named "res"), worker processes from the fork server
(tests/forkserver.py), and readers of the study's storage and MLflow runs."""

from __future__ import annotations

import os
from pathlib import Path

import forkserver
import mlflow
import optuna
from optuna.trial import TrialState
from tiny_study import write_study

ROOT = Path(__file__).resolve().parents[1]


def study_file(work: Path, epochs: int, n_trials: int = 3, name: str = "res") -> Path:
    """``work/<name>.toml``: the tiny study with ``n_trials`` trials of ``epochs`` epochs."""
    return write_study(work, name, study={"n_trials": n_trials}, fixed={"optim.epochs": epochs})


def spawn_cli(work: Path, *args: object, env: dict | None = None) -> forkserver.Forked:
    """``python cli.py *args`` as a new process in ``work``, with ``env_for(work)``."""
    return forkserver.spawn_cli([str(a) for a in args], work, env or env_for(work))


def env_for(work: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlruns' / 'mlflow.db'}"
    env["CIFAR_SEARCH_HOME"] = str(work)  # the run state in work/mlruns
    return env


def mlflow_trial_runs(work: Path) -> dict[int, list]:
    client = mlflow.MlflowClient(tracking_uri=env_for(work)["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("res")
    runs = client.search_runs([experiment.experiment_id], "tags.`cifar_search.kind` = 'trial'")
    by_trial: dict[int, list] = {}
    for r in runs:
        by_trial.setdefault(int(r.data.tags["optuna.trial_number"]), []).append(r)
    return by_trial


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
