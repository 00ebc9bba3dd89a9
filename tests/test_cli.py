"""The command line as a user runs it, real files included: in this process through click's
CliRunner (tests/in_process.py), and once as a real process (exit code, stderr, no
traceback)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from in_process import run_cli as in_process

import cifar_models

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--set",
    "model.width=0.25",
    "--set",
    "optim.epochs=1",
    "--set",
    "optim.batch_size=32",
    "--device",
    "cpu",
]


def run_cli(*args: str, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_models_lists_every_registered_model(tmp_path):
    proc = in_process("models", cwd=tmp_path)
    assert proc.exit_code == 0, proc.output
    listed = {line.split()[0] for line in proc.stdout.splitlines()[2:] if line.strip()}
    assert set(cifar_models.list_models()) <= listed
    resnet18 = next(line for line in proc.stdout.splitlines() if line.startswith("resnet18 "))
    assert "11,173,962" in resnet18


@pytest.mark.slow
def test_train_test_mode_prints_summary_and_writes_outputs(cifar10_dir, tmp_path):
    out = tmp_path / "out"
    proc = in_process(
        "train",
        "--dataset",
        "cifar10",
        "--data-dir",
        cifar10_dir,
        "--model",
        "se_resnet18",
        *TINY,
        "--test",
        "--out",
        out,
        cwd=tmp_path,
    )
    assert proc.exit_code == 0, proc.output
    assert "per-class test accuracy" in proc.stdout and "truck" in proc.stdout
    assert "macro precision" in proc.stdout and "F1" in proc.stdout
    assert "test accuracy" in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"] == "test" and 0 <= metrics["test_accuracy"] <= 1
    assert len(metrics["per_class_accuracy"]) == 10
    state = torch.load(out / "model.pt", weights_only=True)
    model = cifar_models.create("se_resnet18", 10, width=0.25)
    model.load_state_dict(state)
    # the written config reruns to the same config
    again = in_process(
        "train",
        "--config",
        out / "config.toml",
        "--data-dir",
        cifar10_dir,
        "--test",
        "--out",
        tmp_path / "again",
        cwd=tmp_path,
    )
    assert again.exit_code == 0, again.output
    assert (tmp_path / "again" / "config.toml").read_text() == (out / "config.toml").read_text()


def test_train_kfold_reports_mean_over_folds(cifar10_dir, tmp_path):
    proc = in_process(
        "train",
        "--dataset",
        "cifar10",
        "--data-dir",
        cifar10_dir,
        "--model",
        "resnet20",
        *TINY,
        "--set",
        "data.kfold=2",
        cwd=tmp_path,
    )
    assert proc.exit_code == 0, proc.output
    assert "fold 0 epoch 1/1" in proc.stdout and "fold 1 epoch 1/1" in proc.stdout
    assert "2-fold validation accuracy" in proc.stdout


def test_data_command_shows_stats_and_writes_grid(cifar10_dir, tmp_path):
    grid = tmp_path / "g.png"
    proc = in_process(
        "data", "--dataset", "cifar10", "--data-dir", cifar10_dir, "--grid", grid, cwd=tmp_path
    )
    assert proc.exit_code == 0, proc.output
    assert "training split 100 images -> train 90 + validation 10" in proc.stdout
    assert "channel mean (R, G, B) 0.4863" in proc.stdout  # rows*8 averaged: 124/255
    assert "airplane" in proc.stdout
    assert grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and grid.stat().st_size > 1000


@pytest.mark.parametrize(
    "args,fragments",
    [
        (["train", "--model", "resnet19", "--dataset", "synthetic"], ["model.name", "resnet18"]),
        (
            ["train", "--dataset", "synthetic", "--set", "optim.lrr=0.1"],
            ["optim.lrr", "did you mean 'optim.lr'"],
        ),
        (
            ["train", "--dataset", "synthetic", "--set", "optim.epochs=ten"],
            ["optim.epochs", "integer"],
        ),
        (["train", "--dataset", "synthetic", "--set", "optim.lr"], ["key=value"]),
        (
            ["train", "--dataset", "synthetic", "--config", "/nonexistent.toml"],
            ["/nonexistent.toml"],
        ),
        (["data", "--dataset", "cifar100", "--data-dir", "{empty}"], ["cifar-100-python"]),
        (["bench", "--model", "resnet20", "--concurrency", "1,two"], ["--concurrency", "1,two"]),
        (["bench", "--model", "resnt20"], ["model.name", "did you mean 'resnet20'"]),
        (["check-fast-path", "--model", "resnt20"], ["model.name", "did you mean 'resnet20'"]),
        (["check-fast-path", "--seeds", "0,x", "--dataset", "synthetic"], ["--seeds", "0,x"]),
        (["check-fast-path", "--data-dir", "{empty}"], ["cifar-10-batches-py"]),
        (["bench", "--model", "resnet2O"], ["did you mean 'resnet20'"]),  # 1 edit, not 2
        # click's own usage errors, one line too, with where the help is
        (["search", "--study", "smoke", "--n-trials", "-1"], ["--n-trials", "-1", "--help"]),
        (["search", "--study", "smoke", "--workers", "0"], ["--workers", "search --help"]),
        (["train", "--bogus"], ["--bogus"]),
        (["serch"], ["serch", "search"]),
        (["retrain"], ["--study"]),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, fragments, tmp_path, monkeypatch):
    import cli

    monkeypatch.setenv("CIFAR_DATA_DIR", str(tmp_path / "nothing"))
    monkeypatch.setenv("CIFAR_NO_DOWNLOAD", "1")
    args = [a.replace("{empty}", str(tmp_path / "nothing")) for a in args]
    result = CliRunner().invoke(cli.main, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_bad_input_in_a_real_process_has_no_traceback(tmp_path):
    # the suite's one check of a real `python cli.py` process: its exit code and stderr
    env = {**os.environ, "CIFAR_NO_DOWNLOAD": "1"}
    proc = run_cli("train", "--dataset", "cifar10", "--data-dir", str(tmp_path), env=env)
    assert_one_line_error(proc, "cifar-10-batches-py", str(tmp_path))


def test_a_first_search_prints_only_the_tools_own_lines(study_file, tmp_path):
    # A fresh interpreter, as a user starts it: MLflow configures its loggers when imported,
    # so only a new process shows whether its INFO lines ("Creating initial MLflow database
    # tables...") reach the output on a first run, when the store is created.
    path = study_file("quiet", study={"n_trials": 1}, retrain={"epochs": 1})
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    proc = run_cli("search", "--study", str(path), "--device", "cpu", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "mlruns" / "mlflow.db").exists()  # the store was created by this run
    output = proc.stdout + proc.stderr
    assert "mlflow" not in output.replace("MLflow run", "").lower(), output
    assert " INFO " not in output, output
