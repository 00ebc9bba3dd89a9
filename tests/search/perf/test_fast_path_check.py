"""``check-fast-path``: both arms trained per seed on the same holdout and compared."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from cli import main
from search import stats
from search.config import TrialConfig
from search.perf import FAST, FP32, ArmRun, FastPathCheck, check_fast_path
from search.training import datasets as data

TINY = {
    "data.dataset": "synthetic",
    "data.synthetic_size": 400,
    "data.synthetic_classes": 4,
    "model.name": "improved_cnn",
    "model.width": 0.25,
    "optim.epochs": 3,
    "optim.batch_size": 32,
    "optim.lr": 0.05,
    "aug.preset": "none",
    "runtime.device": "cpu",
}


def _dataset() -> data.Dataset:
    return data.load("synthetic", synthetic_size=400, synthetic_classes=4)


def test_arms_are_paired_by_seed_and_differ_where_the_fast_path_applies(cuda_path_on_cpu):
    outcome = check_fast_path(TrialConfig.from_flat(TINY), _dataset(), [0, 1, 2])
    assert [(r.seed, r.arm) for r in outcome.runs] == [
        (s, arm) for s in (0, 1, 2) for arm in (FAST, FP32)
    ]
    assert outcome.fast_path_applied and outcome.comparison.n == 3
    fast = {r.seed: r for r in outcome.runs if r.arm == FAST}
    fp32 = {r.seed: r for r in outcome.runs if r.arm == FP32}
    assert all(fast[s].first_loss != fp32[s].first_loss for s in fast)  # bf16 was on
    assert outcome.not_learning() == []
    assert outcome.chance == pytest.approx(0.25, abs=0.05)


def test_without_the_fast_path_both_arms_are_the_same_fp32_run():
    outcome = check_fast_path(TrialConfig.from_flat(TINY), _dataset(), [0, 1])
    assert not outcome.fast_path_applied
    assert outcome.comparison.diff_mean == 0.0
    assert outcome.comparison.verdict == stats.NO_DIFFERENCE


def test_runs_that_did_not_learn_are_named():
    comparison = stats.compare({0: 0.5}, {FAST: {0: 0.5}})[0]
    flat = ArmRun(FP32, 0, first_loss=2.3, last_loss=2.4, val_acc=0.5, seconds=1, images_per_s=1)
    guessing = ArmRun(
        FAST, 0, first_loss=2.3, last_loss=1.0, val_acc=0.10, seconds=1, images_per_s=1
    )
    fine = ArmRun(FAST, 1, first_loss=2.3, last_loss=1.0, val_acc=0.5, seconds=1, images_per_s=1)
    outcome = FastPathCheck([flat, guessing, fine], comparison, chance=0.10, fast_path_applied=True)
    assert outcome.not_learning() == [flat, guessing]


def test_command_prints_each_run_and_the_paired_verdict(cuda_path_on_cpu):
    args = [
        "check-fast-path",
        "--dataset",
        "synthetic",
        "--model",
        "improved_cnn",
        "--seeds",
        "0,1",
        "--epochs",
        "3",
        "--device",
        "cpu",
    ]
    for key in (
        "data.synthetic_size",
        "data.synthetic_classes",
        "model.width",
        "optim.batch_size",
        "optim.lr",
        "aug.preset",
    ):
        args += ["--set", f"{key}={TINY[key]}"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert sum(line.startswith("seed ") for line in lines) == 4
    assert any(
        line.startswith("fast - fp32 validation accuracy") and "over 2 seeds" in line
        for line in lines
    )
    assert lines[-1].startswith("every run learned")


def test_command_exits_1_when_runs_diverge():
    args = [
        "check-fast-path",
        "--dataset",
        "synthetic",
        "--model",
        "improved_cnn",
        "--seeds",
        "0",
        "--epochs",
        "2",
        "--device",
        "cpu",
        "--set",
        "optim.lr=1e12",
        "--set",
        "optim.momentum=0",
        "--set",
        "optim.nesterov=false",
        "--set",
        "data.synthetic_size=400",
        "--set",
        "model.width=0.25",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert result.output.count("NaN") == 2  # each arm's run says where it diverged
    assert "FAILED: did not learn" in result.output
    assert "seed 0 fast, seed 0 fp32" in result.output
