"""A final run's model as an MLflow 3 LoggedModel: a real tiny model trained by
``final_run`` on the CPU, packaged (uint8 in, probabilities out) and logged to a real
MLflow store (SQLite in a temporary folder); then loaded back with plain
``mlflow.pytorch.load_model`` and registered."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow.entities import LoggedModelStatus
from mlflow.models import Model
from tiny_study import FIXED

from search.config import TrialConfig, format_value
from search.errors import ConfigError
from search.store import Tracker, sqlite_uri
from search.store.logged_model import (
    MODEL_VERSIONS_TAG,
    classifier_signature,
    log_classifier,
    logged_models,
    register,
)
from search.training import AugmentPlan, BatchAugment, final_run, load_dataset
from search.training.evaluate import _logits
from search.training.packaged import PackagedClassifier, packaged_model, predict_proba

# the tiny study's fixed config, with several evaluation batches like a real test split
CONFIG = {**FIXED, "runtime.eval_batch_size": 16, "data.dataset": "synthetic"}
EXAMPLE = 4  # images in the input example


@pytest.fixture(scope="module")
def trained():
    """(config, dataset, TrainResult, packaged model): a few seconds on a CPU."""
    cfg = TrialConfig.from_flat(CONFIG)
    dataset = load_dataset(cfg, None)
    result = final_run(cfg, dataset)
    mean, std = dataset.mean_std
    model = packaged_model(cfg, dataset.num_classes, result.state_dict, mean, std)
    return cfg, dataset, result, model


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A fresh working directory and MLflow store, also MLflow's global URI (which
    ``mlflow.pytorch.load_model`` reads)."""
    root = tmp_path_factory.mktemp("store")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", sqlite_uri(Path("mlruns/mlflow.db")))
        yield Tracker("tiny")


@pytest.fixture(scope="module")
def logged(trained, store):
    """The final run of trial 0 with seed 0's model logged as ``final.retrain`` will."""
    cfg, dataset, result, model = trained
    tracker = store
    run_id = tracker.start_child(tracker.study_run({}), "final", "final-trial-0", config=cfg)
    metrics = {f"seed0.{k}": v for k, v in result.final.metrics().items()}
    tracker.log_metrics(run_id, metrics)  # as final_retrain logs each seed's test scores
    model_info = log_classifier(
        tracker.client,
        run_id,
        model,
        "final-trial-0-seed0",
        dataset.test_x[:EXAMPLE],
        params={"runtime.seed": "0"},
        metrics=metrics,
        tags={"cifar_search.seed": "0"},
    )
    status_while_running = tracker.client.get_run(run_id).info.status
    tracker.end(run_id, "FINISHED")
    return run_id, model_info, status_while_running


def _accuracy(probabilities: torch.Tensor, labels: np.ndarray) -> float:
    return float((probabilities.argmax(1).numpy() == labels).mean())


def _evaluation_probabilities(cfg, dataset, model: torch.nn.Module) -> torch.Tensor:
    """What the final evaluation computes (``evaluate._logits``: ``BatchAugment.eval_batch``
    then the model, in eval_batch_size batches), as probabilities."""
    mean, std = dataset.mean_std
    augment = BatchAugment(AugmentPlan.from_config(cfg.aug), mean, std, torch.device("cpu"))
    images = torch.from_numpy(dataset.test_x)
    logits = _logits(model, augment, images, cfg, torch.device("cpu"))
    return torch.softmax(logits, dim=1)


def test_the_loaded_model_reproduces_the_logged_test_accuracy_exactly(trained, logged):
    cfg, dataset, result, packaged = trained
    _, info, _ = logged
    loaded = mlflow.pytorch.load_model(info.model_uri)
    assert not isinstance(loaded, PackagedClassifier)  # a torch.export graph: no project code
    probabilities = predict_proba(loaded, dataset.test_x, cfg.runtime.eval_batch_size)
    assert probabilities.shape == (len(dataset.test_y), dataset.num_classes)
    assert probabilities.dtype == torch.float32
    assert torch.allclose(probabilities.sum(1), torch.ones(len(dataset.test_y)))
    assert bool(((probabilities >= 0) & (probabilities <= 1)).all())
    accuracy = _accuracy(probabilities, dataset.test_y)
    assert 0.25 < accuracy < 1.0  # learned something, and not everything: the check has teeth
    assert accuracy == result.final.accuracy
    # the README's snippet as written, and what it says about .eval()
    with torch.inference_mode():
        readme = loaded(torch.as_tensor(dataset.test_x[:8]))
    assert torch.allclose(readme, probabilities[:8], atol=1e-6)
    with pytest.raises(NotImplementedError):
        loaded.eval()
    # bit for bit what the evaluation computed in its batches; in other batch sizes the CPU
    # convolutions may round differently, so only nearly and with the same predictions
    expected = _evaluation_probabilities(cfg, dataset, packaged.model)
    assert torch.equal(probabilities, expected)
    for batch_size in (1, 7):
        other = predict_proba(loaded, dataset.test_x, batch_size)
        assert torch.allclose(other, expected, atol=1e-5)
        assert torch.equal(other.argmax(1), expected.argmax(1))


def test_leaving_out_the_normalisation_is_caught(trained):
    # the same weights with mean 0 and std 1: raw [0, 1] pixels reach the model
    cfg, dataset, _, packaged = trained
    unnormalised = PackagedClassifier(packaged.model, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    probabilities = predict_proba(unnormalised, dataset.test_x)
    assert not torch.equal(probabilities, _evaluation_probabilities(cfg, dataset, packaged.model))


@pytest.mark.parametrize("resize", [1, 2])
def test_normalise_is_batch_augments_eval_batch(resize):
    plan = AugmentPlan.from_config(TrialConfig().with_overrides({"aug.resize": resize}).aug)
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    expected = BatchAugment(plan, mean, std, torch.device("cpu")).eval_batch(images)
    packaged = PackagedClassifier(torch.nn.Identity(), mean, std, plan.resize)
    assert torch.equal(packaged.normalise(images), expected)
    assert expected.shape[-1] == 32 * resize


def test_signature_and_input_example(trained, logged):
    _, dataset, _, _ = trained
    _, info, _ = logged
    signature = mlflow.models.get_model_info(info.model_uri).signature
    (image,) = signature.inputs.inputs
    assert image.type == np.dtype(np.uint8) and image.shape == (-1, 3, 32, 32)
    (output,) = signature.outputs.inputs
    assert output.type == np.dtype(np.float32) and output.shape == (-1, dataset.num_classes)
    folder = mlflow.artifacts.download_artifacts(info.model_uri)
    example = Model.load(folder).load_input_example(folder)
    assert np.array_equal(example, dataset.test_x[:EXAMPLE])
    assert (Path(folder) / "data" / "model.pt2").is_file()
    # the generic python_function flavour serves it too, and enforces the uint8 input
    pyfunc = mlflow.pyfunc.load_model(info.model_uri)
    assert pyfunc.predict(dataset.test_x[:3]).shape == (3, dataset.num_classes)
    with pytest.raises(mlflow.exceptions.MlflowException, match="schema"):
        pyfunc.predict(dataset.test_x[:3].astype(np.float32))


def test_the_model_is_linked_to_its_run_with_params_and_metrics(trained, store, logged):
    cfg, _, result, _ = trained
    run_id, info, status_while_running = logged
    client = store.client
    assert status_while_running == "RUNNING"  # logging a model leaves the run open
    assert info.status == LoggedModelStatus.READY
    assert info.source_run_id == run_id and info.name == "final-trial-0-seed0"
    assert info.experiment_id == store.experiment_id  # the study's experiment, not Default
    assert info.params == {k: format_value(v) for k, v in cfg.to_flat().items()}
    assert info.tags["cifar_search.seed"] == "0"
    metrics = {m.key: m.value for m in info.metrics}
    assert metrics == {f"seed0.{k}": v for k, v in result.final.metrics().items()}
    assert {m.run_id for m in info.metrics} == {run_id}
    # the run lists it among its outputs, and keeps the metrics
    run = client.get_run(run_id)
    assert [o.model_id for o in run.outputs.model_outputs] == [info.model_id]
    assert run.data.metrics["seed0.test_accuracy"] == result.final.accuracy
    # logged before the model, then linked to it: one point in the run's history, not two
    assert len(client.get_metric_history(run_id, "seed0.test_accuracy")) == 1
    assert [m.model_id for m in logged_models(client, run_id)] == [info.model_id]
    # MLflow's own search finds it by its test accuracy
    found = client.search_logged_models(
        [store.experiment_id], filter_string=f"metrics.`seed0.test_accuracy` >= {0.25}"
    )
    assert [m.model_id for m in found] == [info.model_id]


def test_register_gives_version_1_then_2(trained, store, logged):
    _, dataset, _, packaged = trained
    _, info, _ = logged
    assert register(store.uri, info.model_uri, "tiny-classifier") == 1
    assert register(store.client, info.model_id, "tiny-classifier") == 2
    loaded = mlflow.pytorch.load_model("models:/tiny-classifier/2")
    assert torch.equal(
        predict_proba(loaded, dataset.test_x), predict_proba(packaged, dataset.test_x)
    )
    version = store.client.get_model_version("tiny-classifier", "2")
    assert version.run_id == info.source_run_id
    tag = store.client.get_logged_model(info.model_id).tags[MODEL_VERSIONS_TAG]
    assert [(v["name"], str(v["version"])) for v in json.loads(tag)] == [
        ("tiny-classifier", "1"),
        ("tiny-classifier", "2"),
    ]
    with pytest.raises(ConfigError, match="registered model name = 'a/b'"):
        register(store.uri, info.model_uri, "a/b")


def test_logging_prints_nothing(trained, store, capfd):
    _, dataset, _, packaged = trained
    run_id = store.start_child(store.study_run({}), "final", "quiet")
    capfd.readouterr()
    info = log_classifier(store.uri, run_id, packaged, "quiet", dataset.test_x[:2])
    register(store.uri, info.model_uri, "quiet-classifier")
    assert capfd.readouterr() == ("", "")


class _Branchy(torch.nn.Module):
    """Data-dependent control flow: torch.export cannot trace it."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float().mean(dim=(2, 3))
        return torch.softmax(x if x.sum() > 0 else -x, dim=1)


def test_a_model_that_cannot_be_exported_is_left_failed(trained, store):
    _, dataset, _, _ = trained
    run_id = store.start_child(store.study_run({}), "final", "branchy")
    with pytest.raises(Exception):  # noqa: B017 (torch.export's error type varies by release)
        log_classifier(store.uri, run_id, _Branchy(), "branchy", dataset.test_x[:2])
    (model,) = logged_models(store.uri, run_id)
    assert model.status == LoggedModelStatus.FAILED


def test_the_input_example_must_be_a_uint8_batch(trained):
    _, dataset, _, packaged = trained
    with pytest.raises(ValueError, match="n >= 2"):
        classifier_signature(packaged, dataset.test_x[:1])
    with pytest.raises(ValueError, match="uint8"):
        classifier_signature(packaged, dataset.test_x[:2].astype(np.float32))
