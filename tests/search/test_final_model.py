"""What a final retrain hands on, through the command line: each seed's model as an MLflow
model that loads back with plain MLflow and reproduces the logged test accuracy, the error
analysis of the first seed's model (MLflow artifacts, the terminal summary, report.md),
`best --register` and `train --test --out`."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
from in_process import isolated, run_cli
from PIL import Image

from search.store import Tracker, sqlite_uri
from search.store.logged_model import logged_models
from search.study import load_study
from search.training import load_dataset
from search.training.packaged import predict_proba

pytestmark = pytest.mark.xdist_group("searched")
ANALYSIS = ["error_analysis.json", "per_class_accuracy.png", "reliability.png"]
# drawn only when the model makes mistakes (the tiny searched study's may make none)
MISTAKES = ["wrong_images.png", "gradcam.png"]


def _env(work: Path) -> dict[str, str]:
    return {"MLFLOW_TRACKING_URI": sqlite_uri(work / "mlruns" / "mlflow.db")}


def _final(work: Path):
    with isolated(work, _env(work)):
        tracker = Tracker("tiny", create=False)
        (final,) = tracker.find_runs("final")
        return tracker, final


def test_the_retrained_model_loads_back_and_reproduces_its_test_accuracy(searched):
    tracker, final = _final(searched)
    with isolated(searched, _env(searched)):
        (model,) = logged_models(tracker.client, final.info.run_id)
        assert model.source_run_id == final.info.run_id and model.name.endswith("-seed0")
        loaded = mlflow.pytorch.load_model(model.model_uri)
        spec = load_study(str(searched / "tiny.toml"))
        dataset = load_dataset(spec.base_config(), None)
        signature = mlflow.models.get_model_info(model.model_uri).signature
    batch = spec.base_config().runtime.eval_batch_size  # as the final evaluation batched it
    probabilities = predict_proba(loaded, dataset.test_x, batch).numpy()
    assert probabilities.shape == (len(dataset.test_y), 4)
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    accuracy = float((probabilities.argmax(1) == dataset.test_y).mean())
    assert accuracy == final.data.metrics["seed0.test_accuracy"]  # exactly
    assert model.metrics and {m.key for m in model.metrics} >= {"seed0.test_accuracy"}
    # the input is raw uint8 images: the normalisation is inside the model
    assert signature.inputs.to_dict()[0]["tensor-spec"]["dtype"] == "uint8"


def test_the_error_analysis_is_logged_and_summarised(searched):
    tracker, final = _final(searched)
    names = {a.path for a in tracker.client.list_artifacts(final.info.run_id)}
    assert set(ANALYSIS) <= names
    with isolated(searched, _env(searched)):
        local = Path(tracker.client.download_artifacts(final.info.run_id, "error_analysis.json"))
        doc = json.loads(local.read_text())
    assert doc["accuracy"] == pytest.approx(final.data.metrics["seed0.test_accuracy"])
    assert 0 <= doc["ece"] <= 1 and len(doc["per_class_accuracy"]) == 4
    log = (searched / "first-search.log").read_text()
    assert "error analysis (seed 0):" in log and "calibration: ECE" in log


def test_best_registers_the_retrained_model(searched_copy):
    result = run_cli("best", "--study", "tiny.toml", "--register", "tiny-cnn", cwd=searched_copy)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("registered tiny-cnn version 1: final-trial-")
    again = run_cli("best", "--study", "tiny.toml", "--register", "tiny-cnn", cwd=searched_copy)
    assert "version 2" in again.stdout
    with isolated(searched_copy, _env(searched_copy)):
        model = mlflow.pytorch.load_model("models:/tiny-cnn/2")
    assert model is not None
    bad = run_cli("best", "--study", "tiny.toml", "--register", "a/b", cwd=searched_copy)
    assert bad.exit_code == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_report_shows_where_the_final_model_fails(searched, tmp_path):
    result = run_cli("report", "--study", "tiny.toml", "--out", tmp_path / "r", cwd=searched)
    assert result.exit_code == 0, result.output
    md = (tmp_path / "r" / "report.md").read_text()
    assert "## Error analysis (test split, seed 0)" in md and "### Most confused classes" in md
    for name in ["per_class_accuracy.png", "reliability.png"]:
        assert f"({name})" in md
        with Image.open(tmp_path / "r" / name) as image:
            assert len(image.convert("RGB").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 20


def test_train_test_out_writes_the_error_analysis(study_file, tmp_path):
    args = ["--dataset", "synthetic", "--model", "improved_cnn", "--set", "model.width=0.25"]
    args += ["--set", "optim.epochs=1", "--set", "data.synthetic_size=200", "--device", "cpu"]
    result = run_cli("train", *args, "--test", "--out", tmp_path / "out", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert "error analysis:" in result.stdout and "most confused" in result.stdout
    analysis = json.loads((tmp_path / "out" / "error_analysis.json").read_text())
    assert analysis["accuracy"] < 1  # one epoch: there are mistakes to show
    for name in ANALYSIS + MISTAKES:
        assert (tmp_path / "out" / name).exists(), name
        if name.endswith(".png"):
            with Image.open(tmp_path / "out" / name) as image:
                assert len(image.convert("RGB").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 20
    # without --test the run is scored on validation: no error analysis, never the test split
    result = run_cli("train", *args, "--out", tmp_path / "val", cwd=tmp_path)
    assert result.exit_code == 0 and "error analysis" not in result.stdout
    assert not (tmp_path / "val" / "error_analysis.json").exists()


def _searched_tiny(study_file, tmp_path, monkeypatch):
    from search import engine

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_uri(Path("mlruns/mlflow.db")))
    spec = load_study(str(study_file("faults", study={"n_trials": 1}, retrain={"seeds": [0, 1]})))
    return spec, engine.run_search(spec, engine.SearchOptions()).study


def test_a_failing_analysis_costs_the_analysis_not_the_retrain(study_file, tmp_path, monkeypatch):
    # faults injected into the figures; the retrain's handling of them is under test
    from search.reporting import error_report, final_figures
    from search.retrain import retrain_study

    def broken(*args, **kwargs):
        raise RuntimeError("no figure today")

    spec, study = _searched_tiny(study_file, tmp_path, monkeypatch)
    monkeypatch.setattr(error_report, "reliability_png", broken)
    with pytest.warns(UserWarning, match="error analysis not written: RuntimeError"):
        outcome = retrain_study(spec, study, artifacts=final_figures)
    run = Tracker("faults", create=False).client.get_run(outcome.run_id)
    assert run.info.status == "FINISHED"
    names = {a.path for a in Tracker("faults", create=False).client.list_artifacts(run.info.run_id)}
    assert {"model_seed0.pt", "model_seed1.pt", "confusion_matrix.png"} <= names


def test_a_model_that_cannot_be_packaged_keeps_its_weights(study_file, tmp_path, monkeypatch):
    from search import retrain

    def refuses(*args, **kwargs):
        raise RuntimeError("torch.export cannot trace this model")

    spec, study = _searched_tiny(study_file, tmp_path, monkeypatch)
    monkeypatch.setattr(retrain, "log_classifier", refuses)
    with pytest.warns(UserWarning, match="seed 0: the model was not logged as an MLflow model"):
        outcome = retrain.retrain_study(spec, study)
    assert sorted(outcome.results) == [0, 1] and outcome.model_uris == {}  # both seeds trained
    tracker = Tracker("faults", create=False)
    assert tracker.client.get_run(outcome.run_id).info.status == "FINISHED"
    names = {a.path for a in tracker.client.list_artifacts(outcome.run_id)}
    assert {"model_seed0.pt", "model_seed1.pt"} <= names
