"""What a trial's MLflow run records besides params and metrics: the data it read (MLflow
dataset inputs, told apart by content digests) and, with ``system_metrics``, its CPU and
memory use (MLflow's system metrics monitor), stopped whichever way the trial ends."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import optuna
import pytest

from search import engine
from search.cli_args import SYSTEM_METRICS
from search.engine import data_inputs, objective
from search.errors import ConfigError
from search.store import Tracker, sqlite_uri
from search.study import load_study
from search.training import Dataset, datasets

ROOT = Path(__file__).resolve().parents[3]
# The tiny study (tests/tiny_study.py) with one trial at a fixed learning rate.
ONE_TRIAL = {
    "study": {"n_trials": 1},
    "space": {"optim.lr": {"type": "categorical", "choices": [0.05]}},
}
MONITOR_THREAD = "SystemMetricsMonitor"  # the name MLflow gives its sampling thread


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """A fresh working directory: ./mlruns is created there, nowhere else."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_uri(Path("mlruns/mlflow.db")))
    return tmp_path


def _search(study_file, name: str, size: int, n_trials: int = 1, **options):
    fixed = {"data.synthetic_size": size, "optim.epochs": 1}
    spec = load_study(str(study_file(name, **{**ONE_TRIAL, "fixed": fixed})))
    options = engine.SearchOptions(n_trials=n_trials, **options)
    return engine.run_search(spec, options)


def _trial_runs(study: str) -> list:
    return Tracker(study).find_runs("trial", order_by=["attributes.start_time ASC"])


def _inputs(run) -> dict[str, tuple[str, str, dict]]:
    """context -> (name, digest, profile) of a run's dataset inputs."""
    out = {}
    for item in run.inputs.dataset_inputs:
        tags = {t.key: t.value for t in item.tags}
        ds = item.dataset
        out[tags["mlflow.data.context"]] = (ds.name, ds.digest, json.loads(ds.profile))
    return out


def _digest_in_new_process(size: int) -> str:
    code = (
        "from search.training import datasets\n"
        f"print(datasets.load('synthetic', synthetic_size={size}, synthetic_classes=4).digest)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    return done.stdout.strip()


def _monitor_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == MONITOR_THREAD and t.is_alive()]


# the digest ----------------------------------------------------------------------------------
def test_the_digest_follows_the_content_and_nothing_else():
    first = datasets._load_synthetic.__wrapped__(200, 4)  # two objects, built separately
    again = datasets._load_synthetic.__wrapped__(200, 4)
    assert first is not again and first.digest == again.digest
    assert len(first.digest) == datasets.DIGEST_CHARS
    assert datasets.load("synthetic", synthetic_size=240, synthetic_classes=4).digest != (
        first.digest
    )
    assert datasets.load("digits").digest != first.digest
    changed = first.train_x.copy()
    changed[7, 1, 3, 5] ^= 1  # one bit of one pixel
    arrays = (changed, first.train_y, first.test_x, first.test_y)
    assert Dataset("synthetic", *arrays, first.classes).digest != first.digest
    # rows: any other selection of rows, or the other split, is another fingerprint
    rows = np.arange(10)
    assert first.rows_digest("train", rows) == again.rows_digest("train", rows.copy())
    assert first.rows_digest("train", rows) != first.rows_digest("train", rows + 1)
    assert first.rows_digest("train") != first.rows_digest("test")
    assert first.rows_digest("train", rows[:5], rows[5:]) != first.rows_digest("train", rows)


def test_the_digest_of_a_cifar_sized_dataset_is_cheap(capsys):
    train_x = np.full((50000, 3, 32, 32), 7, dtype=np.uint8)
    test_x = train_x[:10000].copy()
    labels = np.arange(50000, dtype=np.int64) % 10
    cifar = Dataset("cifar10", train_x, labels, test_x, labels[:10000], tuple("0123456789"))
    start = time.perf_counter()
    digest = cifar.digest
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    assert cifar.digest == digest  # cached on the object
    cached = time.perf_counter() - start
    with capsys.disabled():
        print(
            f"\ndigest of 50000+10000 x 3x32x32 uint8 ({(train_x.nbytes + test_x.nbytes) / 1e6:.0f}"
            f" MB): {seconds * 1000:.0f} ms; cached: {cached * 1e6:.1f} us"
        )


# dataset inputs --------------------------------------------------------------------------
def test_trial_runs_record_their_data_and_different_data_is_told_apart(workdir, study_file):
    _search(study_file, "small", 200, n_trials=2)
    _search(study_file, "large", 240)
    small, large = _trial_runs("small"), _trial_runs("large")
    assert len(small) == 2 and len(large) == 1

    expected = _digest_in_new_process(200)  # the same data, loaded by another process
    first = _inputs(small[0])
    assert sorted(first) == ["training", "validation"]
    for context, rows in (("training", 180), ("validation", 20)):  # val_fraction 0.1 of 200
        name, digest, profile = first[context]
        assert name == "synthetic" and len(digest) == datasets.DIGEST_CHARS
        assert profile["rows"] == rows
        assert profile["dataset_train_rows"] == 200
        assert "dataset_test_rows" not in profile  # a trial does not even count the test split
        assert profile["dataset_digest"] == expected
    assert small[0].data.tags["cifar_search.data_digest"] == expected
    assert first["training"][1] != first["validation"][1]
    # the same data and rows give the same digests on every run; other data others
    assert _inputs(small[1]) == first
    other = _inputs(large[0])
    assert other["training"][2]["dataset_digest"] == _digest_in_new_process(240) != expected
    assert {c: d for c, (_, d, _) in other.items()}.keys() == first.keys()
    assert all(other[c][1] != first[c][1] for c in first)
    assert other["training"][2]["rows"] == 216 and other["validation"][2]["rows"] == 24

    # the source and schema that the MLflow UI shows
    dataset = small[0].inputs.dataset_inputs[0].dataset
    assert dataset.source_type == "code" and "synthetic" in dataset.source
    schema = json.loads(dataset.schema)["mlflow_tensorspec"]
    assert json.loads(schema["features"])[0]["tensor-spec"] == {
        "dtype": "uint8",
        "shape": [-1, 3, 32, 32],
    }
    # without --system-metrics, no system metrics
    assert not [k for r in small + large for k in r.data.metrics if k.startswith("system/")]


def test_kfold_trials_record_every_fold(workdir, study_file):
    spec = load_study(
        str(study_file("kfold", **ONE_TRIAL, fixed={"data.kfold": 2, "optim.epochs": 1}))
    )
    engine.run_search(spec, engine.SearchOptions())
    inputs = _inputs(_trial_runs("kfold")[0])
    assert inputs["training"][2]["folds"] == 2
    assert inputs["training"][2]["rows_per_fold"] == [100, 100]
    assert inputs["validation"][2]["rows_per_fold"] == [100, 100]


def test_a_final_run_records_its_training_rows_and_the_test_split(workdir, cifar10_dir):
    from search.config import TrialConfig

    cifar = datasets.load("cifar10", cifar10_dir, download=False)
    assert cifar.source == (cifar10_dir.resolve() / "cifar-10-batches-py").as_uri()
    tracker = Tracker("final-inputs")
    parent = tracker.study_run({})
    run_id = tracker.start_child(parent, "final", "final-trial-0")
    cfg = TrialConfig().with_overrides({"data.dataset": "cifar10", "data.train_limit": 50})
    data_inputs.log_data_inputs(tracker, run_id, cifar, cfg, final=True)
    run = tracker.client.get_run(run_id)
    inputs = _inputs(run)
    assert sorted(inputs) == ["test", "training"]
    assert inputs["training"][2]["rows"] == 50 and inputs["test"][2]["rows"] == 40
    assert inputs["test"][1] == cifar.rows_digest("test")
    assert inputs["test"][2]["dataset_digest"] == cifar.digest
    dataset = run.inputs.dataset_inputs[0].dataset
    assert dataset.source_type == "local"
    assert json.loads(dataset.source) == {"uri": cifar.source}


# system metrics --------------------------------------------------------------------------
def test_system_metrics_are_recorded_on_trial_runs_and_stopped(
    workdir, study_file, monkeypatch, capfd
):
    monkeypatch.setattr(objective, "SYSTEM_METRICS_INTERVAL_S", 0.1)
    # each trial trains long enough for several samples
    train = objective.validate

    def slow_validate(*args, **kwargs):
        time.sleep(0.5)
        return train(*args, **kwargs)

    monkeypatch.setattr(objective, "validate", slow_validate)
    _search(study_file, "sampled", 200, n_trials=2, system_metrics=True)
    runs = _trial_runs("sampled")
    assert len(runs) == 2
    for run in runs:
        metrics = run.data.metrics
        assert "system/cpu_utilization_percentage" in metrics
        assert "system/system_memory_usage_megabytes" in metrics
        assert "system/system_memory_usage_percentage" in metrics
        assert 0 <= metrics["system/cpu_utilization_percentage"] <= 100
    assert not _monitor_threads()
    err = capfd.readouterr().err.lower()
    assert "system metrics" not in err and "gpu metrics" not in err


@pytest.mark.parametrize(
    ("error", "state"),
    [(optuna.TrialPruned, "KILLED"), (RuntimeError, "FAILED"), (KeyboardInterrupt, "FAILED")],
)
def test_the_monitor_stops_however_a_trial_ends(workdir, study_file, monkeypatch, error, state):
    monkeypatch.setattr(objective, "SYSTEM_METRICS_INTERVAL_S", 0.1)

    def ending(*args, **kwargs):
        time.sleep(0.5)
        assert _monitor_threads()  # sampling while the trial runs
        raise error("ended")

    monkeypatch.setattr(objective, "validate", ending)
    # a failed trial does not count: the search stops at the first failure
    stops = {KeyboardInterrupt: KeyboardInterrupt, RuntimeError: ConfigError}.get(error)
    with pytest.raises(stops) if stops else contextlib.nullcontext():
        _search(study_file, "ending", 200, system_metrics=True, max_consecutive_failures=1)
    assert not _monitor_threads()
    (run,) = _trial_runs("ending")
    assert run.info.status == state
    assert "system/cpu_utilization_percentage" in run.data.metrics


def test_the_system_metrics_option_is_off_by_default():
    import click
    from click.testing import CliRunner

    @click.command()
    @SYSTEM_METRICS()
    def command(system_metrics: bool) -> None:
        click.echo(repr(system_metrics))

    runner = CliRunner()
    assert runner.invoke(command, []).output.strip() == "False"
    assert runner.invoke(command, ["--system-metrics"]).output.strip() == "True"
    assert runner.invoke(command, ["--no-system-metrics"]).output.strip() == "False"
    assert "nvidia-ml-py" in runner.invoke(command, ["--help"]).output
