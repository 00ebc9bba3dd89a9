"""A stopped and continued run is the same computation as one that never stopped: on the
CPU, per-epoch values, final weights and optimizer state are bit-identical, whatever batch
the stop lands on, with full augmentation, dropout, a warm-up schedule and early stopping."""

from __future__ import annotations

import io
import threading
import time

import pytest
import torch

from search.config import TrialConfig
from search.training import Checkpointing, StopRequested, datasets, final_run, train_one
from search.training.protocols import make_fold

RECIPE = {
    "data.dataset": "synthetic",
    "data.synthetic_size": 240,
    "data.synthetic_classes": 4,
    "model.name": "improved_cnn",
    "model.width": 0.25,
    "model.dropout": 0.3,
    "optim.epochs": 4,
    "optim.batch_size": 32,
    "optim.lr": 0.05,
    "schedule.warmup_epochs": 1,
    "aug.preset": "full",
    "runtime.device": "cpu",
}
STEPS_PER_EPOCH = 216 // 32  # 240 images, 10% validation


def _setup(**extra):
    cfg = TrialConfig.from_flat({**RECIPE, **extra})
    ds = datasets.load("synthetic", synthetic_size=240, synthetic_classes=4)
    return cfg, ds, make_fold(cfg, ds, 0)


def _round_trip(state: dict) -> dict:
    """Through a file, as a checkpoint travels: tensors and plain containers only."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


class StopAt:
    """Asks for a stop before global batch ``at`` (counting every batch of the run)."""

    def __init__(self, at: int) -> None:
        self.at, self.seen = at, 0

    def __call__(self) -> bool:
        self.seen += 1
        return self.seen > self.at


def _assert_same(a, b) -> None:
    assert [s.as_state() | {"seconds": 0, "images_per_s": 0} for s in a.history] == [
        s.as_state() | {"seconds": 0, "images_per_s": 0} for s in b.history
    ]
    assert a.final.accuracy == b.final.accuracy and a.final.loss == b.final.loss
    assert a.state_dict.keys() == b.state_dict.keys()
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)


@pytest.mark.parametrize("stop_at", [3, STEPS_PER_EPOCH * 2 + 1, STEPS_PER_EPOCH * 3])
def test_stopped_mid_epoch_and_continued_equals_uninterrupted(stop_at):
    cfg, _, data = _setup()
    reference_states: list[dict] = []
    reference = train_one(cfg, data, checkpointing=Checkpointing(save=reference_states.append))

    saved: list[dict] = []
    with pytest.raises(StopRequested):
        train_one(
            cfg,
            data,
            checkpointing=Checkpointing(save=saved.append, stop_requested=StopAt(stop_at)),
        )
    stopped = _round_trip(saved[-1])
    assert (len(stopped["history"]), stopped["step"]) == divmod(stop_at, STEPS_PER_EPOCH)

    replayed = []
    resumed_states: list[dict] = []
    resumed = train_one(
        cfg,
        data,
        on_epoch=replayed.append,
        checkpointing=Checkpointing(start=stopped, save=resumed_states.append),
    )
    _assert_same(reference, resumed)
    # the restored epochs were passed on first, marked, then the new ones
    restored = stop_at // STEPS_PER_EPOCH
    assert [s.restored for s in replayed] == [True] * restored + [False] * (4 - restored)
    # the optimizer's state (momentum buffers) is the same at the end too
    last_ref, last_res = reference_states[-1]["optimizer"], resumed_states[-1]["optimizer"]
    assert all(
        torch.equal(
            last_ref["state"][i]["momentum_buffer"], last_res["state"][i]["momentum_buffer"]
        )
        for i in last_ref["state"]
    )


def test_epoch_checkpoints_every_n_and_always_the_last():
    cfg, _, data = _setup(**{"optim.epochs": 5})
    saved: list[dict] = []
    train_one(cfg, data, checkpointing=Checkpointing(save=saved.append, every=2))
    assert [len(s["history"]) for s in saved] == [2, 4, 5]
    assert [s["done"] for s in saved] == [False, False, True]


def test_a_finished_state_is_evaluated_not_trained():
    cfg, ds, _ = _setup()
    saved: list[dict] = []
    reference = final_run(cfg, ds, checkpointing=Checkpointing(save=saved.append))
    batches = StopAt(0)  # would stop at the first batch it is asked about
    again = final_run(
        cfg, ds, checkpointing=Checkpointing(start=_round_trip(saved[-1]), stop_requested=batches)
    )
    assert batches.seen == 0  # no batch was trained
    assert again.final.accuracy == reference.final.accuracy
    assert (again.final.confusion == reference.final.confusion).all()


def test_early_stopping_state_survives_the_stop():
    cfg, _, data = _setup(**{"optim.epochs": 12, "runtime.patience": 2, "optim.lr": 0.5})
    reference = train_one(cfg, data)
    assert reference.stop_reason is not None, "the recipe must stop early to test this"
    at = (len(reference.history) - 1) * STEPS_PER_EPOCH  # the last epoch's first batch
    saved: list[dict] = []
    with pytest.raises(StopRequested):
        train_one(
            cfg, data, checkpointing=Checkpointing(save=saved.append, stop_requested=StopAt(at))
        )
    resumed = train_one(cfg, data, checkpointing=Checkpointing(start=_round_trip(saved[-1])))
    assert resumed.stop_reason == reference.stop_reason
    _assert_same(reference, resumed)


def test_a_state_that_cannot_be_restored_starts_over_instead_of_failing():
    cfg, _, data = _setup(**{"optim.epochs": 2})
    other_cfg, _, _ = _setup(**{"optim.epochs": 2, "model.width": 0.5})  # other shapes
    saved: list[dict] = []
    with pytest.raises(StopRequested):
        train_one(
            other_cfg,
            data,
            checkpointing=Checkpointing(save=saved.append, stop_requested=StopAt(8)),
        )
    problems: list[Exception] = []
    resumed = train_one(
        cfg, data, checkpointing=Checkpointing(start=saved[-1], on_bad_start=problems.append)
    )
    assert len(problems) == 1 and isinstance(problems[0], RuntimeError)  # size mismatch
    _assert_same(train_one(cfg, data), resumed)
    assert not any(s.restored for s in resumed.history)


# --- epoch checkpoints written while the next epoch trains (SaveBehind) -----------------


class _Probe:
    """``stop_requested`` as a probe: counts the batches the loop has begun, sets ``event``
    at batch ``at``, and there raises ``raise_at`` if given."""

    def __init__(self, at: int, raise_at: BaseException | None = None) -> None:
        self.at, self.raise_at, self.seen = at, raise_at, 0
        self.event = threading.Event()

    def __call__(self) -> bool:
        self.seen += 1
        if self.seen == self.at:
            self.event.set()
            if self.raise_at is not None:
                raise self.raise_at
        return False


def test_an_epoch_checkpoint_is_written_while_the_next_epoch_trains():
    cfg, _, data = _setup()
    probe = _Probe(at=STEPS_PER_EPOCH + 3)  # the third batch of epoch 2
    written: list[tuple[int, bool, str]] = []

    def save(state: dict) -> None:
        if not written:  # epoch 1's write ends only once epoch 2 has begun training
            written.append((-1, probe.event.wait(timeout=60), ""))
        written.append((state["epoch"], probe.seen, threading.current_thread().name))

    result = train_one(cfg, data, checkpointing=Checkpointing(save=save, stop_requested=probe))
    (_, overlapped, _), first, *_, last = written
    assert overlapped, "epoch 1's checkpoint was written before epoch 2 began"
    assert first[0] == 2 and first[1] >= STEPS_PER_EPOCH + 3 and first[2] == "checkpoint-write"
    # the last state is written in line: train_one returns with it on disk
    assert last[0] == cfg.optim.epochs + 1 and last[2] == threading.current_thread().name
    assert [e for e, *_ in written[1:]] == [2, 3, 4, 5] and len(result.history) == 4


def test_a_failed_background_write_stops_the_run():
    cfg, _, data = _setup()
    reported: list[int] = []

    def save(state: dict) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        train_one(
            cfg, data, lambda s: reported.append(s.epoch), checkpointing=Checkpointing(save=save)
        )
    assert reported == [1]  # epoch 2 is not reported on top of a checkpoint that failed


def test_no_write_is_left_running_when_the_run_ends_in_an_error():
    # a trial pruned or diverged has its checkpoints removed next: no write may follow
    cfg, _, data = _setup()
    probe = _Probe(at=STEPS_PER_EPOCH + 2, raise_at=RuntimeError("CUDA out of memory"))
    finished = threading.Event()

    def save(state: dict) -> None:
        probe.event.wait(timeout=60)
        time.sleep(0.2)  # still writing when the error leaves the loop
        finished.set()

    with pytest.raises(RuntimeError, match="out of memory"):
        train_one(cfg, data, checkpointing=Checkpointing(save=save, stop_requested=probe))
    assert finished.is_set()


def test_a_stop_after_a_failed_background_write_still_saves_its_batch():
    # epoch 1's write failed behind the loop (a full disk, freed since): the stop in
    # epoch 2 saves the whole state at its batch, which supersedes the failed write
    cfg, _, data = _setup()
    saved: list[dict] = []

    def save(state: dict) -> None:
        if not saved and state["step"] == 0:
            saved.append({})  # the failed write
            raise OSError(28, "No space left on device")
        saved.append(state)

    stop = StopAt(STEPS_PER_EPOCH + 2)
    with pytest.raises(StopRequested):
        train_one(cfg, data, checkpointing=Checkpointing(save=save, stop_requested=stop))
    assert (saved[-1]["epoch"], saved[-1]["step"]) == (2, 2)
