"""`cli.py search | best | train --config | dashboard | studies | retrain` as a user runs
them, in a temporary working directory (so ./mlruns is created there)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from optuna.storages.journal import JournalFileBackend, JournalStorage

from search.config import TrialConfig

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
"model.dropout" = { type = "categorical", choices = [0.0, 0.3] }
[fixed]
"model.name" = "improved_cnn"
"model.width" = 0.25
"optim.epochs" = 2
"optim.batch_size" = 32
"aug.preset" = "none"
"data.synthetic_size" = 200
"data.synthetic_classes" = 4
[retrain]
epochs = 2
seeds = [0]
[[ablation]]
name = "narrow"
set = { "model.width" = 0.125 }
"""


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> Path:
    """One small study searched and retrained through the CLI, shared by the tests below."""
    work = tmp_path_factory.mktemp("work")
    (work / "tiny.toml").write_text(STUDY)
    proc = cli("search", "--study", str(work / "tiny.toml"), "--device", "cpu", cwd=work)
    assert proc.returncode == 0, proc.stderr
    (work / "first-search.log").write_text(proc.stdout)
    return work


@pytest.mark.slow
def test_search_prints_progress_summary_and_final(searched):
    first = (searched / "first-search.log").read_text()
    assert "  trial 0 epoch 1/2" in first and "val_acc" in first
    assert "[1 complete, 0 pruned, 0 failed]" in first
    assert "top trials" in first and "final retrain on train+validation" in first
    assert "seed 0: test accuracy" in first and "final (trial" in first
    log = cli("search", "--study", str(searched / "tiny.toml"), "--no-retrain", cwd=searched)
    assert log.returncode == 0, log.stderr
    assert "nothing to do" in log.stdout and "best trial" in log.stdout
    assert "top trials" in log.stdout
    assert (searched / "mlruns" / "tiny.journal").exists()
    assert (searched / "mlruns" / "mlflow.db").exists()


@pytest.mark.slow
def test_best_then_train_config_round_trip(searched):
    for fmt in ("toml", "json"):
        out = searched / f"best.{fmt}"
        proc = cli("best", "--study", str(searched / "tiny.toml"), "--format", fmt,
                   "--output", str(out), cwd=searched)
        assert proc.returncode == 0, proc.stderr
        best = TrialConfig.from_file(out)
        run_dir = searched / f"rerun-{fmt}"
        proc = cli("train", "--config", str(out), "--test", "--out", str(run_dir), cwd=searched)
        assert proc.returncode == 0, proc.stderr
        assert TrialConfig.from_file(run_dir / "config.toml") == best
    doc = json.loads((searched / "best.json").read_text())
    storage = JournalStorage(JournalFileBackend(str(searched / "mlruns" / "tiny.journal")))
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert doc["trial"] == study.best_trial.number
    assert doc["scores"]["val_acc"] == pytest.approx(study.best_value)
    assert "final_test_accuracy_mean" in doc["scores"]


def test_studies_lists_files(searched):
    proc = cli("studies", cwd=searched)
    assert proc.returncode == 0, proc.stderr
    assert "smoke" in proc.stdout and "cifar100-seresnet" in proc.stdout


@pytest.mark.slow
def test_retrain_chosen_trial_with_seeds(searched):
    proc = cli("retrain", "--study", str(searched / "tiny.toml"), "--trial", "1", "--seeds", "3,4",
               cwd=searched)
    assert proc.returncode == 0, proc.stderr
    assert "seed 3: test accuracy" in proc.stdout and "seed 4: test accuracy" in proc.stdout
    bad = cli("retrain", "--study", str(searched / "tiny.toml"), "--seeds", "a,b", cwd=searched)
    assert bad.returncode == 2 and "--seeds" in bad.stderr


@pytest.mark.slow
def test_ablate_twice_then_report(searched):
    args = ("ablate", "--study", str(searched / "tiny.toml"), "--seeds", "2", "--out",
            str(searched / "abl"))
    first = cli(*args, cwd=searched)
    assert first.returncode == 0, first.stderr
    assert "baseline: best trial" in first.stdout and "4 run(s) trained" in first.stdout
    header = next(line for line in first.stdout.splitlines() if line.startswith("variant"))
    for column in ("acc % (mean ± sd)", "diff pp", "95% CI pp", "t-test p", "Wilcoxon p",
                   "Holm p", "verdict", "loss", "params", "train s"):
        assert column in header
    assert (searched / "abl" / "ablation.csv").exists()
    again = cli(*args, cwd=searched)
    assert again.returncode == 0 and "0 run(s) trained, 4 reused" in again.stdout

    report = cli("report", "--study", str(searched / "tiny.toml"), "--out",
                 str(searched / "report"), cwd=searched)
    assert report.returncode == 0, report.stderr
    md = (searched / "report" / "report.md").read_text()
    assert "## Ablation" in md and "## Final retrain (test split)" in md


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dashboard_serves_the_study_over_http(searched):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    server = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "dashboard", "--study",
                               str(searched / "tiny.toml"), "--port", str(port)], cwd=searched,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
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


def test_dashboard_on_a_busy_port_is_one_line(searched):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = cli("dashboard", "--study", str(searched / "tiny.toml"), "--port", str(port),
                   cwd=searched)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--port" in lines[0] and "Traceback" not in proc.stderr


BROKEN = {
    "unknown section": "[studdy]\nn_trials = 1\n",
    "unknown study key": '[study]\ndataset = "digits"\nn_trials = 3\nn_trails = 4\n',
    "missing n_trials": '[study]\ndataset = "digits"\n',
    "zero trials": '[study]\ndataset = "digits"\nn_trials = 0\n',
    "unknown sampler": '[study]\ndataset = "digits"\nn_trials = 3\nsampler = "bayes"\n',
    "unknown pruner": '[study]\ndataset = "digits"\nn_trials = 3\npruner = "early"\n',
    "unknown dataset": '[study]\ndataset = "imagenet"\nn_trials = 3\n',
    "bad space key": '[study]\ndataset = "digits"\nn_trials = 3\n[space]\n"optim.lrr" = { type = "float", low = 0.1, high = 0.2 }\n',
    "inverted range": '[study]\ndataset = "digits"\nn_trials = 3\n[space]\n"optim.lr" = { type = "float", low = 0.5, high = 0.1 }\n',
    "unknown model choice": '[study]\ndataset = "digits"\nn_trials = 3\n[space]\n"model.name" = { type = "categorical", choices = ["resnet18", "resnet19"] }\n',
    "searched and fixed": '[study]\ndataset = "digits"\nn_trials = 3\n[fixed]\n"optim.lr" = 0.1\n[space]\n"optim.lr" = { type = "float", low = 0.01, high = 0.2 }\n',
    "fixed wrong type": '[study]\ndataset = "digits"\nn_trials = 3\n[fixed]\n"optim.epochs" = "ten"\n[space]\n"optim.lr" = { type = "float", low = 0.01, high = 0.2 }\n',
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


def test_set_on_a_searched_key_is_refused(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(STUDY)
    proc = cli("search", "--study", str(path), "--set", "optim.lr=0.1", cwd=tmp_path)
    assert proc.returncode == 2 and "optim.lr" in proc.stderr and "searched" in proc.stderr


def test_unknown_study_name_lists_available(tmp_path):
    proc = cli("search", "--study", "smok", cwd=tmp_path)
    assert proc.returncode == 2 and "smoke" in proc.stderr
    assert not (tmp_path / "mlruns").exists()
