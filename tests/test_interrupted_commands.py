"""Ctrl-C in any long command is one line on stderr and exit code 130, never click's
"Aborted!" with exit code 1 or a traceback: real processes (the fork server's), real
SIGINT sent while the command works."""

from __future__ import annotations

import signal
import time

import pytest
from resilience_helpers import spawn_cli
from tiny_study import write_study

TRAIN = [
    "train", "--dataset", "synthetic", "--model", "improved_cnn", "--device", "cpu",
    "--set", "model.width=0.25", "--set", "data.synthetic_size=1000", "--set", "optim.epochs=50",
]  # fmt: skip


def _interrupt(proc, after: str | None, wait: float = 0.0) -> list[str]:
    if after is not None:
        proc.wait_for_output(after)
    time.sleep(wait)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Aborted" not in err and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted (SIGINT): "), err
    return lines


def _study(work):
    return write_study(
        work,
        "res",
        fixed={"optim.epochs": 1, "data.synthetic_size": 1000},
        retrain={"epochs": 50, "seeds": [0]},
        ablation=[{"name": "narrow", "set": {"model.width": 0.125}}],
    )


@pytest.mark.slow
def test_ctrl_c_in_train(tmp_path):
    (line,) = _interrupt(spawn_cli(tmp_path, *TRAIN), "epoch  1/50")
    assert "nothing was kept" in line  # no --out: no checkpoint to continue from


@pytest.mark.slow
def test_ctrl_c_in_retrain_and_ablate(tmp_path):
    path = _study(tmp_path)
    assert spawn_cli(tmp_path, "search", "--study", path, "--no-retrain").wait(timeout=300) == 0
    (line,) = _interrupt(spawn_cli(tmp_path, "retrain", "--study", path), "seed 0 epoch  1/50")
    assert "continue from the last checkpoint" in line
    proc = spawn_cli(tmp_path, "ablate", "--study", path, "--base", "fixed", "--seeds", "0")
    _interrupt(proc, None, wait=8.0)  # its imports and first epochs print nothing


@pytest.mark.slow
def test_ctrl_c_in_bench(tmp_path):
    proc = spawn_cli(tmp_path, "bench", "--model", "resnet20", "--device", "cpu", "--steps", "500")
    (line,) = _interrupt(proc, None, wait=5.0)
    assert line == "interrupted (SIGINT): no table; see above"
