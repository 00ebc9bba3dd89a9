"""Shared by the worker-process tests: a study of short CPU trials, and readers of its
storage and MLflow runs."""
from __future__ import annotations

import os
from pathlib import Path

import mlflow
import optuna
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[1]

STUDY = """
[study]
dataset = "synthetic"
n_trials = 3
sampler = "random"
seed = 0
pruner = "none"
[space]
"optim.lr" = { type = "float", low = 0.01, high = 0.2, log = true }
[fixed]
"model.name" = "improved_cnn"
"model.width" = 0.25
"optim.epochs" = EPOCHS
"optim.batch_size" = 32
"aug.preset" = "none"
"runtime.device" = "cpu"
"data.synthetic_size" = 200
"data.synthetic_classes" = 4
"""


def env_for(work: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlruns' / 'mlflow.db'}"
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
