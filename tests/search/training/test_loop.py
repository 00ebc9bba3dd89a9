from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import f1_score

from search.config import TrialConfig
from search.training import NonFiniteLossError, lr_factor, splits, train_one
from search.training import datasets as data
from search.training.protocols import make_fold

TINY = {
    "data.dataset": "synthetic",
    "data.synthetic_size": 400,
    "data.synthetic_classes": 4,
    "model.name": "improved_cnn",
    "model.width": 0.25,
    "optim.epochs": 4,
    "optim.batch_size": 32,
    "optim.lr": 0.05,
    "aug.preset": "none",
    "runtime.device": "cpu",
}


def _cfg(**extra) -> TrialConfig:
    return TrialConfig.from_flat({**TINY, **{k.replace("__", "."): v for k, v in extra.items()}})


def _holdout(cfg: TrialConfig) -> splits.TrainData:
    ds = data.load(
        "synthetic",
        synthetic_size=cfg.data.synthetic_size,
        synthetic_classes=cfg.data.synthetic_classes,
    )
    return make_fold(cfg, ds, 0)  # the stratified holdout a trial trains on


def test_learns_and_reports_every_epoch():
    cfg = _cfg()
    result = train_one(cfg, _holdout(cfg))
    assert [s.epoch for s in result.history] == [1, 2, 3, 4]
    assert result.history[-1].train_loss < result.history[0].train_loss
    assert result.final.accuracy > 0.5  # chance is 0.25
    assert result.final.split == "val" and result.final.n_images == 40
    s = result.history[-1]
    assert 0 <= s.val_acc <= s.val_top5 <= 1 and s.images_per_s > 0 and s.lr > 0
    assert s.val_acc == pytest.approx(result.final.accuracy)


def test_same_seed_same_numbers_other_seed_other_numbers():
    cfg = _cfg(optim__epochs=2, aug__preset="full")
    a, b = train_one(cfg, _holdout(cfg)), train_one(cfg, _holdout(cfg))
    assert [s.train_loss for s in a.history] == [s.train_loss for s in b.history]
    assert a.final.accuracy == b.final.accuracy
    other = cfg.with_overrides({"runtime.seed": 1})
    c = train_one(other, _holdout(other))
    assert [s.train_loss for s in c.history] != [s.train_loss for s in a.history]


def test_evaluation_report_is_consistent():
    cfg = _cfg(optim__epochs=2)
    td = _holdout(cfg)
    report = train_one(cfg, td).final
    cm = report.confusion
    assert cm.shape == (4, 4) and cm.sum() == 40
    assert report.accuracy == pytest.approx(np.trace(cm) / cm.sum())
    per_class = np.diag(cm) / cm.sum(axis=1)
    assert np.allclose(report.per_class_accuracy, per_class)
    y_true = np.repeat(np.arange(4), cm.sum(axis=1))
    y_pred = np.concatenate([np.repeat(np.arange(4), row) for row in cm])
    assert report.f1_macro == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert report.top5 == 1.0  # 4 classes: the true one is always in the top 5


def test_divergence_raises_with_epoch_and_step():
    cfg = _cfg(optim__lr=1e12, optim__epochs=3, optim__momentum=0.0, optim__nesterov=False)
    with pytest.raises(NonFiniteLossError) as err:
        train_one(cfg, _holdout(cfg))
    assert err.value.epoch >= 1 and err.value.step >= 0 and "NaN" in str(err.value)


def test_callback_can_stop_and_sees_each_epoch():
    seen = []

    def on_epoch(stats):
        seen.append(stats.epoch)
        return stats.epoch == 2

    result = train_one(_cfg(), _holdout(_cfg()), on_epoch)
    assert seen == [1, 2] and len(result.history) == 2 and "callback" in result.stop_reason


def test_callback_exception_propagates():
    class Pruned(Exception):
        pass

    def on_epoch(stats):
        raise Pruned

    with pytest.raises(Pruned):
        train_one(_cfg(), _holdout(_cfg()), on_epoch)


def test_early_stopping_on_patience():
    cfg = _cfg(optim__epochs=12, optim__lr=1e-7, runtime__patience=2)  # cannot improve
    result = train_one(cfg, _holdout(cfg))
    assert len(result.history) < 12 and "early stopping" in result.stop_reason


def test_test_split_is_read_once_after_training():
    cfg = _cfg(optim__epochs=2)
    ds = data.load("synthetic", synthetic_size=400, synthetic_classes=4)
    result = train_one(cfg, splits.final_data(ds, 0, 0, "cpu"))
    assert all(s.val_acc is None for s in result.history)
    assert result.final.split == "test" and result.final.n_images == len(ds.test_y)


def test_state_dict_loads_into_a_fresh_model():
    cfg = _cfg(optim__epochs=1)
    result = train_one(cfg, _holdout(cfg))
    from search.training import build_model

    model = build_model(cfg, 4)
    model.load_state_dict(result.state_dict)
    assert result.n_params == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ["cosine", "multistep", "none"])
def test_lr_schedules(name):
    cfg = _cfg(schedule__name=name, schedule__warmup_epochs=1.0, optim__epochs=10)
    factors = [lr_factor(cfg, s, 100, 10) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    if name == "cosine":
        assert factors[-1] < 0.01 and all(a >= b for a, b in zip(factors[9:], factors[10:]))
    if name == "multistep":
        assert factors[49] == 1.0 and factors[50] == pytest.approx(0.1)
        assert factors[75] == pytest.approx(0.01)
    if name == "none":
        assert set(factors[9:]) == {1.0}


@pytest.mark.parametrize("opt,sched", [("adamw", "onecycle"), ("adam", "cosine")])
def test_other_optimizers_run(opt, sched):
    cfg = _cfg(
        optim__name=opt,
        optim__lr=3e-3,
        schedule__name=sched,
        optim__epochs=2,
        optim__label_smoothing=0.1,
        optim__grad_clip=1.0,
    )
    result = train_one(cfg, _holdout(cfg))
    assert math.isfinite(result.history[-1].train_loss)
