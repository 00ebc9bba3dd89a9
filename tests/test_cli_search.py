"""`cli.py search | best | train --config | dashboard | studies | retrain | ablate | report`
as a user runs them, in this process (click's CliRunner, tests/in_process.py) and in a
temporary working directory (so ./mlruns is created there).

The study is searched once per session (the ``searched`` fixture, conftest.py): read-only
commands run in it, commands that add to it run in a private copy (``searched_copy``).
The dashboard is a real server process; tests/test_cli.py keeps a real-process check of the
exit code and stderr."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import optuna
import pytest
from click.testing import CliRunner
from in_process import run_cli as cli
from optuna.storages.journal import JournalFileBackend, JournalStorage
from tiny_study import SEARCHED_STUDY

from search.config import TrialConfig
from search.store import Tracker, sqlite_uri

ROOT = Path(__file__).resolve().parents[1]


def _artifacts(work: Path, kind: str) -> set[str]:
    """Artifact paths of the newest ``kind`` run (study, final) of the study in ``work``."""
    tracker = Tracker("tiny", sqlite_uri(work / "mlruns" / "mlflow.db"), create=False)
    run = tracker.find_runs(kind, order_by=["attributes.start_time DESC"], max_results=1)[0]
    listing = tracker.client.list_artifacts(run.info.run_id)
    folders = [a.path for a in listing if a.is_dir]
    nested = [a.path for f in folders for a in tracker.client.list_artifacts(run.info.run_id, f)]
    return {a.path for a in listing} | set(nested)


# the tests that use the session's searched study run in one xdist worker: one search
searched_group = pytest.mark.xdist_group("searched")


@pytest.mark.slow
@searched_group
def test_search_prints_progress_summary_and_final(searched, searched_copy):
    first = (searched / "first-search.log").read_text()
    assert "  trial 0 epoch 1/2" in first and "val_acc" in first
    assert "[1 complete, 0 pruned, 0 failed]" in first
    assert "top trials" in first and "final retrain on train+validation" in first
    assert "seed 0: test accuracy" in first and "final (trial" in first
    assert (searched / "mlruns" / "tiny.journal").exists()
    assert (searched / "mlruns" / "mlflow.db").exists()
    # the command wires the reporting layer's writers into the engine and the retrain
    assert "optuna/optimization_history.html" in _artifacts(searched, "study")
    assert {"confusion_matrix.png", "training_curves.png"} <= _artifacts(searched, "final")
    # the same command again (in a copy: it logs to the study's MLflow run) has nothing to do
    log = cli("search", "--study", searched_copy / "tiny.toml", "--no-retrain", cwd=searched_copy)
    assert log.exit_code == 0, log.output
    assert "nothing to do" in log.stdout and "best trial" in log.stdout
    assert "top trials" in log.stdout


@pytest.mark.slow
@searched_group
def test_best_then_train_config_round_trip(searched, tmp_path):
    for fmt in ("toml", "json"):
        out = tmp_path / f"best.{fmt}"
        proc = cli(
            "best",
            "--study",
            searched / "tiny.toml",
            "--format",
            fmt,
            "--output",
            out,
            cwd=searched,
        )
        assert proc.exit_code == 0, proc.output
        best = TrialConfig.from_file(out)
        run_dir = tmp_path / f"rerun-{fmt}"
        proc = cli("train", "--config", out, "--test", "--out", run_dir, cwd=tmp_path)
        assert proc.exit_code == 0, proc.output
        assert TrialConfig.from_file(run_dir / "config.toml") == best
    doc = json.loads((tmp_path / "best.json").read_text())
    storage = JournalStorage(JournalFileBackend(str(searched / "mlruns" / "tiny.journal")))
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert doc["trial"] == study.best_trial.number
    assert doc["scores"]["val_acc"] == pytest.approx(study.best_value)
    assert "final_test_accuracy_mean" in doc["scores"]


@searched_group
def test_studies_lists_files(searched):
    proc = cli("studies", cwd=searched)
    assert proc.exit_code == 0, proc.output
    assert "smoke" in proc.stdout and "cifar100-seresnet" in proc.stdout


@pytest.mark.slow
@searched_group
def test_retrain_chosen_trial_with_seeds(searched_copy):
    work = searched_copy
    proc = cli("retrain", "--study", work / "tiny.toml", "--trial", "1", "--seeds", "3,4", cwd=work)
    assert proc.exit_code == 0, proc.output
    assert "seed 3: test accuracy" in proc.stdout and "seed 4: test accuracy" in proc.stdout
    final = _artifacts(work, "final")
    assert {"confusion_matrix.png", "training_curves.png", "model_seed3.pt"} <= final
    bad = cli("retrain", "--study", work / "tiny.toml", "--seeds", "a,b", cwd=work)
    assert bad.exit_code == 2 and "--seeds" in bad.stderr


@pytest.mark.slow
@searched_group
def test_ablate_twice_then_report(searched_copy, tmp_path):
    work = searched_copy
    args = ("ablate", "--study", work / "tiny.toml", "--seeds", "0,1", "--out", tmp_path / "abl")
    first = cli(*args, cwd=work)
    assert first.exit_code == 0, first.output
    assert "baseline: best trial" in first.stdout
    # baseline seed 0 is the final retrain's (search retrained the best trial with seed 0)
    assert "3 run(s) trained, 1 reused (1 from the final retrain)" in first.stdout
    header = next(line for line in first.stdout.splitlines() if line.startswith("variant"))
    for column in (
        "acc % (mean ± sd)",
        "diff pp",
        "95% CI pp",
        "t-test p",
        "Wilcoxon p",
        "Holm p",
        "verdict",
        "loss",
        "params",
        "train s",
    ):
        assert column in header
    assert (tmp_path / "abl" / "ablation.csv").exists()
    again = cli(*args, cwd=work)
    assert again.exit_code == 0 and "0 run(s) trained, 4 reused" in again.stdout

    report = cli("report", "--study", work / "tiny.toml", "--out", tmp_path / "report", cwd=work)
    assert report.exit_code == 0, report.output
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Ablation" in md and "## Final retrain (test split)" in md


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@searched_group
def test_dashboard_serves_the_study_over_http(searched):
    # a real server process, read-only on the shared study
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["CIFAR_SEARCH_HOME"] = str(searched)
    server = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "cli.py"),
            "dashboard",
            "--study",
            str(searched / "tiny.toml"),
            "--port",
            str(port),
        ],
        cwd=searched,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.time() + 60
        body = None
        while time.time() < deadline and body is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as r:
                    body = json.loads(r.read())
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()
                time.sleep(0.5)
        assert body is not None, "dashboard did not answer"
        names = [s["study_name"] for s in body["study_summaries"]]
        assert names == ["tiny"]
    finally:
        server.terminate()
        server.wait(timeout=10)


@searched_group
def test_dashboard_on_a_busy_port_is_one_line(searched):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = cli("dashboard", "--study", searched / "tiny.toml", "--port", port, cwd=searched)
    assert proc.exit_code == 2, proc.output
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--port" in lines[0] and "Traceback" not in proc.stderr


HEAD = '[study]\ndataset = "digits"\nn_trials = 3\n'
BROKEN = {
    "unknown section": "[studdy]\nn_trials = 1\n",
    "unknown study key": '[study]\ndataset = "digits"\nn_trials = 3\nn_trails = 4\n',
    "missing n_trials": '[study]\ndataset = "digits"\n',
    "zero trials": '[study]\ndataset = "digits"\nn_trials = 0\n',
    "unknown sampler": '[study]\ndataset = "digits"\nn_trials = 3\nsampler = "bayes"\n',
    "unknown pruner": '[study]\ndataset = "digits"\nn_trials = 3\npruner = "early"\n',
    "unknown dataset": '[study]\ndataset = "imagenet"\nn_trials = 3\n',
    "bad space key": HEAD + '[space]\n"optim.lrr" = { type = "float", low = 0.1, high = 0.2 }\n',
    "inverted range": HEAD + '[space]\n"optim.lr" = { type = "float", low = 0.5, high = 0.1 }\n',
    "unknown model choice": HEAD
    + '[space]\n"model.name" = { type = "categorical", choices = ["resnet18", "resnet19"] }\n',
    "searched and fixed": HEAD
    + '[fixed]\n"optim.lr" = 0.1\n[space]\n"optim.lr" = { type = "float", low = 0.01, high = 0.2 }\n',
    "fixed wrong type": HEAD
    + '[fixed]\n"optim.epochs" = "ten"\n[space]\n"optim.lr" = { type = "float", low = 0.01, high = 0.2 }\n',
    "toml syntax": '[study\ndataset = "digits"\n',
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_broken_study_file_exit_2_one_line_nothing_created(kind, tmp_path, monkeypatch):
    # in-process through click (the same code path as the script, minus 5 s of imports)
    import cli as cli_module

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "broken.toml"
    path.write_text(BROKEN[kind])
    proc = CliRunner().invoke(cli_module.main, ["search", "--study", str(path)])
    assert proc.exit_code == 2, (kind, proc.output)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(path) in lines[0], lines
    assert proc.exception is None or isinstance(proc.exception, SystemExit)
    assert not (tmp_path / "mlruns").exists()


def test_set_on_a_searched_key_is_refused(tmp_path, study_file):
    path = study_file("s", **SEARCHED_STUDY)
    proc = cli("search", "--study", path, "--set", "optim.lr=0.1", cwd=tmp_path)
    assert proc.exit_code == 2 and "optim.lr" in proc.stderr and "searched" in proc.stderr


def test_unknown_study_name_lists_available(tmp_path):
    proc = cli("search", "--study", "smok", cwd=tmp_path)
    assert proc.exit_code == 2 and "smoke" in proc.stderr
    assert not (tmp_path / "mlruns").exists()


def test_a_set_of_a_searched_key_fails_before_anything_is_printed(study_file, tmp_path):
    path = study_file("tiny")
    result = cli("search", "--study", path, "--set", "optim.lr=0.1", cwd=tmp_path)
    assert result.exit_code == 2 and result.stdout == ""
    assert "optim.lr = 0.1: this key is searched in [space]" in result.stderr
    assert not (tmp_path / "mlruns").exists()  # nothing half-made either


def test_the_search_never_opens_the_test_split(study_file, make_cifar10, tmp_path):
    """The test file replaced by a folder (opening it fails, even as root): the search runs
    and logs its trials; the final retrain, which needs it, names it in one line."""
    data = make_cifar10(tmp_path / "data")
    test_file = data / "cifar-10-batches-py" / "test_batch"
    test_file.unlink()
    test_file.mkdir()
    path = study_file(
        "c10",
        study={"dataset": "cifar10", "n_trials": 2},
        fixed={"data.synthetic_size": None, "data.synthetic_classes": None},
        retrain={"epochs": 1, "seeds": [0]},
    )
    args = ("--study", path, "--data-dir", data, "--device", "cpu")
    searched = cli("search", *args, "--no-retrain", cwd=tmp_path)
    assert searched.exit_code == 0, searched.output
    assert "trial 1" in searched.stdout
    retrained = cli("retrain", *args[:4], cwd=tmp_path)
    assert retrained.exit_code == 2, retrained.output
    lines = retrained.stderr.strip().splitlines()
    assert len(lines) == 1 and str(test_file) in lines[0] and "test split" in lines[0], lines


@pytest.mark.slow
def test_best_output_reruns_the_final_retrain_exactly(study_file, tmp_path):
    """The search trains 1 epoch per trial, the final retrain 3 with seed 2: the exported
    file must rerun the final result (same test accuracy), not the search's recipe."""
    path = study_file(
        "final",
        study={"n_trials": 2},
        fixed={"optim.epochs": 1},
        retrain={"epochs": 3, "seeds": [2]},
    )
    assert cli("search", "--study", path, cwd=tmp_path).exit_code == 0
    best = cli("best", "--study", path, "--output", tmp_path / "best.toml", cwd=tmp_path)
    assert best.exit_code == 0, best.output
    assert "(search), final test accuracy" in best.stdout
    text = (tmp_path / "best.toml").read_text()
    assert "reproduces the final retrain's seed 2" in text
    cfg = TrialConfig.from_file(tmp_path / "best.toml")
    assert cfg.optim.epochs == 3 and cfg.runtime.seed == 2
    rerun = cli(
        "train", "--config", tmp_path / "best.toml", "--test", "--out", tmp_path / "r", cwd=tmp_path
    )
    assert rerun.exit_code == 0, rerun.output
    accuracy = json.loads((tmp_path / "r" / "metrics.json").read_text())["test_accuracy"]
    client = mlflow.MlflowClient(sqlite_uri(tmp_path / "mlruns" / "mlflow.db"))
    experiment = client.get_experiment_by_name("final")
    (final,) = client.search_runs([experiment.experiment_id], "tags.`cifar_search.kind` = 'final'")
    assert final.data.metrics["seed2.test_accuracy"] == accuracy  # the same, exactly
