"""The search end to end on tiny data: real Optuna journal storage, real MLflow (SQLite
under a temporary ./mlruns), real training on the CPU."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import optuna
import pytest
from optuna.storages.journal import JournalFileBackend, JournalStorage
from tiny_study import write_study

from search import engine
from search.config import TrialConfig
from search.errors import ConfigError
from search.reporting import best_config_document, final_figures, write_study_plots
from search.retrain import final_retrain, trial_config
from search.store import Tracker, sqlite_uri
from search.study import load_study

# The studies below are the tiny study (tests/tiny_study.py, the ``study_file`` fixture)
# with these changes; their trials train 3 epochs.
EPOCHS = {"optim.epochs": 3}


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """A fresh working directory: ./mlruns is created there, nowhere else."""
    monkeypatch.chdir(tmp_path)
    # the tool's default store, spelled out so that mlflow's own fluent API reads it too
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_uri(Path("mlruns/mlflow.db")))
    return tmp_path


SEARCH = {
    "study": {
        "n_trials": 6,
        "sampler": "tpe",
        "seed": 1,
        "pruner": "median",
        "sampler_args": {"n_startup_trials": 3},
        "pruner_args": {"n_startup_trials": 2, "n_warmup_steps": 1},
    },
    "space": {
        "optim.lr": {"type": "float", "low": 1e-4, "high": 0.3, "log": True},
        "model.dropout": {"type": "categorical", "choices": [0.0, 0.2]},
    },
    "fixed": EPOCHS,
    "retrain": {"epochs": 2, "seeds": [0, 1]},
}


def test_search_then_resume_then_mlflow_layout(workdir, study_file):
    spec = load_study(str(study_file("tiny", **SEARCH)))
    events = []
    outcome = engine.run_search(
        spec, engine.SearchOptions(), on_trial=events.append, after_search=write_study_plots
    )
    assert outcome.ran >= 6
    # plain Optuna sees the trials in the journal file
    storage = JournalStorage(JournalFileBackend(str(workdir / "mlruns" / "tiny.journal")))
    study = optuna.load_study(study_name="tiny", storage=storage)
    states = [t.state for t in study.trials]
    finished = [
        s for s in states if s in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    ]
    assert len(finished) == 6
    assert study.user_attrs["study.sampler"] == "tpe" and "version.torch" in study.user_attrs
    assert [e.trial for e in events] == [t.number for t in study.trials]

    # the same command again runs nothing
    again = engine.run_search(spec, engine.SearchOptions())
    assert again.ran == 0 and len(again.study.trials) == len(study.trials)
    # a raised target runs exactly the difference
    more = engine.run_search(spec, engine.SearchOptions(n_trials=7))
    assert more.ran == 1

    runs = mlflow.search_runs(experiment_names=["tiny"], output_format="list")
    kinds = [r.data.tags["cifar_search.kind"] for r in runs]
    assert kinds.count("study") == 1
    trial_runs = {
        int(r.data.tags["optuna.trial_number"]): r
        for r in runs
        if r.data.tags["cifar_search.kind"] == "trial"
    }
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert sorted(trial_runs) == [t.number for t in study.trials]
    parent_id = next(r.info.run_id for r in runs if r.data.tags["cifar_search.kind"] == "study")
    assert mlflow.get_run(parent_id).info.status == "FINISHED"
    for t in study.trials:
        run = trial_runs[t.number]
        assert run.data.tags["mlflow.parentRunId"] == parent_id
        assert TrialConfig.from_flat(run.data.params) == trial_config(t)
        expected = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}[t.state.name]
        assert run.info.status == expected
        if t.state.name == "COMPLETE":
            assert run.data.metrics["objective"] == pytest.approx(t.value)
            assert "val_acc" in run.data.metrics
    artifacts = {a.path for a in Tracker("tiny").client.list_artifacts(parent_id, "optuna")}
    assert "optuna/optimization_history.html" in artifacts

    # the final retrain: a child run with test metrics and artifacts
    outcome = final_retrain(spec, study, Tracker("tiny"), parent_id, artifacts=final_figures)
    assert sorted(outcome.results) == [0, 1]
    assert all(r.final.split == "test" for r in outcome.results.values())
    assert outcome.config.optim.epochs == 2
    final = mlflow.get_run(outcome.run_id)
    assert final.data.tags["mlflow.parentRunId"] == parent_id
    assert final.data.tags["cifar_search.kind"] == "final"
    assert 0 <= final.data.metrics["test_accuracy_mean"] <= 1
    assert "seed1.test_accuracy" in final.data.metrics
    names = {a.path for a in Tracker("tiny").client.list_artifacts(outcome.run_id)}
    assert {
        "confusion_matrix.png",
        "training_curves.png",
        "classification_report.txt",
        "config.toml",
        "model_seed0.pt",
        "per_class_accuracy.json",
    } <= names

    # best: read from MLflow, resolves to the best trial's exact config as the final
    # retrain trained it (its epochs, its first seed)
    text = best_config_document(spec, "toml")
    final_recipe = {"optim.epochs": outcome.config.optim.epochs, "runtime.seed": 0}
    assert TrialConfig.from_toml_text(text) == trial_config(study.best_trial).with_overrides(
        final_recipe
    )
    assert "final_test_accuracy_mean" in text


FAILING = {  # every trial is enqueued: the sampler draws nothing (no seed)
    "study": {"n_trials": 2, "seed": None},
    "space": {"optim.lr": {"type": "categorical", "choices": [0.05, 1e12]}},
    "fixed": EPOCHS,
}


def test_failing_trial_is_contained_and_logged(workdir, study_file):
    spec = load_study(str(study_file("failing", **FAILING)))
    study = engine.open_study(spec, None)
    for lr in (1e12, 0.05, 0.05):  # the first diverges (NaN loss), then two good ones
        study.enqueue_trial({"optim.lr": lr})
    outcome = engine.run_search(spec, engine.SearchOptions(overrides={"optim.momentum": 0.0}))
    states = [t.state.name for t in outcome.study.trials]
    assert states == ["FAIL", "COMPLETE", "COMPLETE"]
    failed = outcome.study.trials[0]
    assert "NonFiniteLossError" in failed.user_attrs["fail_reason"]
    run = next(
        r
        for r in mlflow.search_runs(experiment_names=["failing"], output_format="list")
        if r.data.tags.get("optuna.trial_number") == "0"
    )
    assert run.info.status == "FAILED"
    assert "NaN" in run.data.tags["cifar_search.reason"]


def test_consecutive_failures_stop_the_study_with_a_clear_error(workdir, study_file):
    spec = load_study(str(study_file("doomed", **FAILING)))
    study = engine.open_study(spec, None)
    for _ in range(4):
        study.enqueue_trial({"optim.lr": 1e12})
    # the study's newest trial is the WAITING one (as another worker's would be): the reason
    # named is that of this worker's last failure
    with pytest.raises(ConfigError, match=r"3 trials failed in a row \(last: NonFiniteLossError"):
        engine.run_search(
            spec,
            engine.SearchOptions(overrides={"optim.momentum": 0.0}, max_consecutive_failures=3),
        )
    assert [t.state.name for t in study.trials] == ["FAIL"] * 3 + ["WAITING"]


def test_kfold_objective_is_the_mean_over_folds(workdir, study_file):
    spec = load_study(
        str(
            study_file(
                "kfold",
                study={"n_trials": 1, "seed": None},
                space={"optim.lr": {"type": "categorical", "choices": [0.05]}},
                fixed={**EPOCHS, "data.kfold": 3},
            )
        )
    )
    outcome = engine.run_search(spec, engine.SearchOptions())
    trial = outcome.study.trials[0]
    folds = trial.user_attrs["fold_values"]
    assert len(folds) == 3
    assert trial.value == pytest.approx(np.mean(folds))
    # pruning sees fold 0 only: one report per epoch of fold 0
    assert sorted(trial.intermediate_values) == [1, 2, 3]


LEAK = {  # CIFAR-10 files (conftest.py), 2 epochs
    "study": {"dataset": "cifar10", "seed": 3},
    "fixed": {
        "optim.batch_size": 16,
        "aug.preset": "standard",
        "data.synthetic_size": None,
        "data.synthetic_classes": None,
    },
}


def test_test_split_never_read_during_search(tmp_path, monkeypatch, make_cifar10):
    """Scrambling the test split (labels and pixels) leaves every trial's value unchanged."""
    values = []
    for scrambled in (False, True):
        work = tmp_path / ("scrambled" if scrambled else "clean")
        data_dir = make_cifar10(work / "data", scramble_test=scrambled)
        monkeypatch.chdir(work)
        monkeypatch.setenv("CIFAR_SEARCH_HOME", str(work))  # its mlruns/ there
        monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_uri(work / "mlruns" / "mlflow.db"))
        path = write_study(work, "leak", **LEAK)
        outcome = engine.run_search(
            load_study(str(path)), engine.SearchOptions(data_dir=str(data_dir))
        )
        values.append([t.value for t in outcome.study.trials])
    assert len(values[0]) == 3 and None not in values[0]
    assert values[0] == values[1]


OOM = {  # the model is searched (its trials are enqueued)
    "study": {"n_trials": 1, "seed": None},
    "space": {
        "optim.lr": None,
        "model.name": {"type": "categorical", "choices": ["oom_net", "broken_net", "improved_cnn"]},
    },
    "fixed": {**EPOCHS, "model.name": None},
}


@pytest.fixture
def faulty_models():
    """Registered models whose forward pass fails: ``oom_net`` runs out of (simulated)
    CUDA memory, ``broken_net`` raises an ordinary bug."""
    import torch

    import cifar_models
    from cifar_models import registry

    def failing(error: Exception, num_classes: int) -> torch.nn.Module:
        class Failing(torch.nn.Linear):
            def forward(self, x):
                raise error

        return Failing(3 * 32 * 32, num_classes)

    @cifar_models.register_model("test")
    def oom_net(num_classes: int, *, width: float = 1.0) -> torch.nn.Module:
        return failing(
            torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"), num_classes
        )

    @cifar_models.register_model("test")
    def broken_net(num_classes: int, *, width: float = 1.0) -> torch.nn.Module:
        return failing(RuntimeError("boom in forward"), num_classes)

    yield
    registry._REGISTRY.pop("oom_net")
    registry._REGISTRY.pop("broken_net")


def test_out_of_memory_fails_the_trial_with_batch_and_model(workdir, faulty_models, study_file):
    spec = load_study(str(study_file("oom", **OOM)))
    study = engine.open_study(spec, None)
    study.enqueue_trial({"model.name": "oom_net"})
    study.enqueue_trial({"model.name": "improved_cnn"})
    outcome = engine.run_search(spec, engine.SearchOptions())
    first, second = outcome.study.trials
    assert first.state.name == "FAIL" and second.state.name == "COMPLETE"
    assert first.user_attrs["fail_reason"] == "out of memory (batch 32, model oom_net)"
    run = mlflow.get_run(first.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED"
    assert run.data.tags["cifar_search.reason"] == "out of memory (batch 32, model oom_net)"


def test_unexpected_error_saves_its_traceback_and_the_study_goes_on(
    workdir, faulty_models, study_file
):
    spec = load_study(str(study_file("boom", **OOM)))
    study = engine.open_study(spec, None)
    study.enqueue_trial({"model.name": "broken_net"})
    study.enqueue_trial({"model.name": "improved_cnn"})
    outcome = engine.run_search(spec, engine.SearchOptions())
    first, second = outcome.study.trials
    assert first.state.name == "FAIL" and second.state.name == "COMPLETE"
    assert first.user_attrs["fail_reason"] == "RuntimeError: boom in forward"
    client = mlflow.MlflowClient()
    names = [a.path for a in client.list_artifacts(first.user_attrs["mlflow_run_id"])]
    assert names == ["traceback.txt"]
    text = client.download_artifacts(
        first.user_attrs["mlflow_run_id"], "traceback.txt", str(workdir)
    )
    assert "boom in forward" in Path(text).read_text()


def test_a_sqlite_tracking_uri_with_a_query_is_created_and_reused(tmp_path):
    db = tmp_path / "store" / "mlflow.db"
    uri = f"sqlite:///{db}?timeout=60"
    first = Tracker("q", uri)
    assert db.exists() and not db.with_name("mlflow.db.creating").exists()
    run_id = first.study_run({})
    assert Tracker("q", uri).study_run({}) == run_id  # the same store, opened again


def test_a_stored_study_with_other_objectives_is_refused(workdir, tmp_path):
    # Optuna keeps a study's directions for good: a file whose objectives changed since the
    # study was created must not silently optimize the stored directions
    first = load_study(str(write_study(tmp_path / "a", "same")))
    engine.open_study(first, None)
    objectives = [
        {"measure": "val_acc", "direction": "maximize"},
        {"measure": "params", "direction": "minimize"},
    ]
    changed = load_study(str(write_study(tmp_path / "b", "same", study={"objectives": objectives})))
    with pytest.raises(ConfigError, match="stored study optimizes val_acc:maximize but the"):
        engine.open_study(changed, None)
    flipped = load_study(str(write_study(tmp_path / "c", "same", study={"metric": "val_loss"})))
    with pytest.raises(ConfigError, match="study.objectives.*val_loss:minimize"):
        engine.open_study(flipped, None, create=False)
    # another measure with the same direction: the stored metric names tell them apart
    top5 = load_study(str(write_study(tmp_path / "d", "same", study={"metric": "val_top5"})))
    with pytest.raises(ConfigError, match="optimizes val_acc:maximize but the file now names"):
        engine.open_study(top5, None)


def test_experiments_open_in_mlflows_model_training_view(workdir):
    # MLflow 3's UI shows an experiment without this tag in its GenAI view (traces)
    tracker = Tracker("fresh")
    tags = tracker.client.get_experiment(tracker.experiment_id).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    # an experiment made by an earlier version of the tool gets the tag on its next search
    old = tracker.client.create_experiment("older")
    assert "mlflow.experimentKind" not in tracker.client.get_experiment(old).tags
    Tracker("older", create=False)  # read-only commands leave it as it is
    assert "mlflow.experimentKind" not in tracker.client.get_experiment(old).tags
    Tracker("older")
    assert tracker.client.get_experiment(old).tags["mlflow.experimentKind"] == (
        "custom_model_development"
    )


FOUR = [
    {"measure": "val_acc", "direction": "maximize"},
    {"measure": "params", "direction": "minimize"},
    {"measure": "train_flops", "direction": "minimize"},
    {"measure": "epoch_seconds", "direction": "minimize"},
]


def test_four_objectives_are_measured_logged_and_plotted(workdir, study_file):
    from search.store import TRIAL_TAG
    from search.training.costs import train_flops_per_image

    spec = load_study(str(study_file("four", study={"n_trials": 2, "objectives": FOUR})))
    outcome = engine.run_search(spec, engine.SearchOptions(), after_search=write_study_plots)
    tracker = Tracker("four", create=False)
    parent = tracker.client.get_run(outcome.parent_run_id)
    assert parent.info.status == "FINISHED"  # Optuna draws no front beyond 3 objectives
    plots = {a.path for a in tracker.client.list_artifacts(outcome.parent_run_id, "optuna")}
    assert "optuna/optimization_history.html" in plots
    assert "optuna/pareto_front.html" not in plots
    runs = {int(r.data.tags[TRIAL_TAG]): r for r in tracker.find_runs("trial")}
    for trial in outcome.study.trials:
        metrics = runs[trial.number].data.metrics
        values = dict(zip(spec.measures, trial.values, strict=True))
        assert {m: metrics[f"objective.{m}"] for m in spec.measures} == pytest.approx(values)
        cfg = TrialConfig.from_flat(trial.user_attrs["config"])
        assert values["train_flops"] == train_flops_per_image(cfg, 4)  # the dataset's classes
        assert values["params"] == metrics["n_params"] and values["epoch_seconds"] > 0


def test_a_cost_that_cannot_be_measured_fails_the_trial_not_the_study(
    workdir, study_file, monkeypatch
):
    import torch

    from search.engine import objective

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    # the fault is injected into the measurement; the objective's handling is under test
    monkeypatch.setattr(objective, "inference_ms_per_image", out_of_memory)
    measures = [FOUR[0], {"measure": "inference_ms", "direction": "minimize"}]
    spec = load_study(str(study_file("oom", study={"n_trials": 1, "objectives": measures})))
    events = []
    # every trial fails the same way, so the failure-streak rule ends the study
    with pytest.raises(ConfigError, match="2 trials failed in a row .last: out of memory"):
        engine.run_search(
            spec, engine.SearchOptions(max_consecutive_failures=2), on_trial=events.append
        )
    study = engine.open_study(spec, None, create=False)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL] * 2
    reason = study.trials[0].user_attrs["fail_reason"]
    assert reason == "out of memory (batch 32, model improved_cnn)"
    assert [e.reason for e in events] == [reason, reason]
    runs = Tracker("oom", create=False).find_runs("trial")
    assert [r.info.status for r in runs] == ["FAILED", "FAILED"]
    assert {r.data.tags["cifar_search.reason"] for r in runs} == {reason}


@pytest.mark.parametrize(
    "fixed, state, epochs_run",
    [
        ({"optim.epochs": 2}, "PRUNED", 1),  # pruned after epoch 1: epoch 2 saved
        ({"optim.epochs": 1}, "COMPLETE", 1),  # its last epoch: nothing left to save
        ({"optim.epochs": 1, "data.kfold": 2}, "PRUNED", 1),  # fold 1 is still to run
    ],
)
def test_a_trial_is_never_pruned_after_its_last_epoch(
    workdir, study_file, monkeypatch, fixed, state, epochs_run
):
    # a pruner that prunes whenever it is asked (val_acc is never above 2): the objective's
    # choice of when to ask is under test
    from search.engine import loop

    monkeypatch.setattr(loop, "make_pruner", lambda spec: optuna.pruners.ThresholdPruner(lower=2.0))
    spec = load_study(str(study_file("always", study={"n_trials": 1}, fixed=fixed)))
    (trial,) = engine.run_search(spec, engine.SearchOptions()).study.trials
    assert trial.state.name == state
    assert len(trial.intermediate_values) == epochs_run
