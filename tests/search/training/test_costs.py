"""The cost measures of a multi-objective study, on real models on the CPU."""

from __future__ import annotations

import pytest
import torch

from search.config import TrialConfig
from search.training.costs import (
    inference_ms_per_image,
    train_flops_per_image,
    training_seconds_per_epoch,
)
from search.training.loop import EpochStats, TrainResult


def _cfg(**flat) -> TrialConfig:
    return TrialConfig.from_flat({"model.name": "resnet20", "model.width": 0.25, **flat})


def test_flops_follow_the_model_and_the_image_size():
    small = train_flops_per_image(_cfg())
    assert small > 0
    assert train_flops_per_image(_cfg(**{"model.width": 0.5})) > 3 * small  # ~ width squared
    # training upsamples by aug.resize: convolutions see resize^2 more pixels
    assert train_flops_per_image(_cfg(**{"aug.resize": 2})) == pytest.approx(4 * small, rel=0.02)


def test_inference_time_is_measured_once_per_architecture_and_device():
    cpu = torch.device("cpu")
    first = inference_ms_per_image(_cfg(), 10, cpu, batch_size=16, repeats=2)
    assert first > 0
    # the same architecture (another learning rate) reuses the measurement: noise must not
    # decide between two trials of one model
    again = inference_ms_per_image(_cfg(**{"optim.lr": 0.5}), 10, cpu, batch_size=16, repeats=2)
    assert again == first
    wider = inference_ms_per_image(_cfg(**{"model.width": 1.0}), 10, cpu, batch_size=16, repeats=2)
    assert wider != first


def _result(seconds: list[float]) -> TrainResult:
    history = [EpochStats(i + 1, 1.0, 0.5, 0.1, s, 100.0) for i, s in enumerate(seconds)]
    return TrainResult(
        _cfg(),
        history,
        None,
        1,
        sum(seconds),
        0.0,
        "cpu",  # type: ignore[arg-type]
    )


def test_seconds_per_epoch_leave_out_each_folds_warm_up_epoch():
    assert training_seconds_per_epoch([_result([9.0, 1.0, 2.0, 3.0])]) == 2.0
    assert training_seconds_per_epoch([_result([9.0, 1.0]), _result([8.0, 3.0])]) == 2.0
    assert training_seconds_per_epoch([_result([5.0])]) == 5.0  # one epoch: all there is
