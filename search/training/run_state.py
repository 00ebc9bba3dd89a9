"""What a training run's state *is*, so that a stopped run can continue as the same
computation: model, optimizer, LR scheduler, the position (epoch and batch), the epoch's
data order and running sums, early-stopping state, the history so far, and every random
generator the run draws from (torch CPU and CUDA, numpy, Python, and the run's own
generator, which draws both the data order and the augmentation).

The state is a dict of tensors and plain containers, so that ``torch.load(weights_only=True)``
reads it back. Where it is written, and how safely, is the store's business
(``search.store.checkpoints``): ``train_one`` only takes a state to start from and hands the
states to save to a callback. There is no grad-scaler state: the fast path autocasts to
bf16, which needs no loss scaling.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

STATE_FORMAT = 1  # bumped when the layout below changes; an older state is foreign


class StopRequested(KeyboardInterrupt):
    """Training stopped at a batch boundary because a stop was requested (a signal); the
    state was handed to ``Checkpointing.save`` first when checkpoints are on. A
    KeyboardInterrupt, so that every clean-up path treats it as the interrupt it is."""


def _never() -> bool:
    return False


@dataclass
class Checkpointing:
    """How one ``train_one`` call checkpoints.

    ``start``: a state saved earlier (by ``save``) to continue from, or None to start at
    epoch 1. ``save(state)``: called with the state at the end of every ``every`` epochs,
    at the end of training (so that a finished run is never trained again), and at the
    batch boundary where ``stop_requested()`` first returns True; None = no checkpoints.
    The epoch-end calls run on a thread of their own, one at a time (``SaveBehind``): a
    ``save`` must not need the main thread (signal handling, say).
    ``on_bad_start(error)``: see the field."""

    start: dict[str, Any] | None = None
    save: Callable[[dict[str, Any]], None] | None = None
    every: int = 1
    stop_requested: Callable[[], bool] = field(default=_never)
    # told why ``start`` could not be restored (it was written for another model, say);
    # the run then starts at epoch 1 instead of failing every time it is continued
    on_bad_start: Callable[[Exception], None] | None = None


@dataclass(frozen=True)
class EpochStats:
    """One epoch. ``val_*`` are None when the run evaluates on the test split (which is
    looked at once, after training)."""

    epoch: int
    train_loss: float
    train_acc: float
    lr: float
    seconds: float
    images_per_s: float
    val_loss: float | None = None
    val_acc: float | None = None
    val_top5: float | None = None
    restored: bool = False  # replayed from a checkpoint, not trained in this process

    def metrics(self) -> dict[str, float]:
        return {
            k: v
            for k, v in self.__dict__.items()
            if k not in ("epoch", "restored") and v is not None
        }

    def as_state(self) -> dict[str, float | int | None]:
        return {k: v for k, v in self.__dict__.items() if k != "restored"}


@dataclass
class EpochProgress:
    """The epoch in progress: what a mid-epoch stop must keep to finish the epoch exactly
    as an uninterrupted run would (its order, the batches done, the running sums)."""

    order: torch.Tensor
    loss_sum: torch.Tensor
    correct: torch.Tensor
    first_bad_step: torch.Tensor
    lr: float
    seconds: float  # training seconds of this epoch so far

    def as_state(self) -> dict[str, Any]:
        return clone_to_cpu(
            {
                "order": self.order,
                "loss_sum": self.loss_sum,
                "correct": self.correct,
                "first_bad_step": self.first_bad_step,
                "lr": self.lr,
                "seconds": self.seconds,
            }
        )

    @classmethod
    def from_state(cls, state: dict[str, Any], device: torch.device) -> EpochProgress:
        return cls(
            state["order"].to(device),
            state["loss_sum"].to(device),
            state["correct"].to(device),
            state["first_bad_step"].to(device),
            float(state["lr"]),
            float(state["seconds"]),
        )


@dataclass
class RunProgress:
    """Where a run stands between batches: what a checkpoint holds besides the modules."""

    epoch: int = 1  # the epoch in progress, or the next one to run (1-based)
    step: int = 0  # batches of that epoch done
    current: EpochProgress | None = None  # None until the epoch's order is drawn
    history: list[EpochStats] = field(default_factory=list)
    best_val: float = -1.0
    epochs_since_best: int = 0
    stop_reason: str | None = None
    done: bool = False
    train_seconds: float = 0.0

    def as_state(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        generator: torch.Generator,
    ) -> dict[str, Any]:
        """The whole state, copied: the run goes on changing its own tensors."""
        return {
            "format": STATE_FORMAT,
            "epoch": self.epoch,
            "step": self.step,
            "current": None if self.current is None else self.current.as_state(),
            "history": [s.as_state() for s in self.history],
            "best_val": self.best_val,
            "epochs_since_best": self.epochs_since_best,
            "stop_reason": self.stop_reason,
            "done": self.done,
            "train_seconds": self.train_seconds,
            "model": clone_to_cpu(model.state_dict()),
            "optimizer": clone_to_cpu(optimizer.state_dict()),
            "scheduler": clone_to_cpu(scheduler.state_dict()),
            "random": random_state(generator),
        }

    @classmethod
    def restore(
        cls,
        state: dict[str, Any],
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        generator: torch.Generator,
        device: torch.device,
    ) -> RunProgress:
        """Load ``state`` into the run's modules and generators; the position it holds."""
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        restore_random_state(state["random"], generator)
        current = state["current"]
        return cls(
            epoch=int(state["epoch"]),
            step=int(state["step"]),
            current=None if current is None else EpochProgress.from_state(current, device),
            history=[EpochStats(**s) for s in state["history"]],
            best_val=float(state["best_val"]),
            epochs_since_best=int(state["epochs_since_best"]),
            stop_reason=state["stop_reason"],
            done=bool(state["done"]),
            train_seconds=float(state["train_seconds"]),
        )


def random_state(generator: torch.Generator) -> dict[str, Any]:
    """Every generator a run draws from, as tensors and plain values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    on_gpu = generator.device.type == "cuda"  # the run's GPU only: another may be visible later
    state = {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(generator.device) if on_gpu else None,
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": random.getstate(),
        "generator": generator.get_state(),
    }
    return state


def restore_random_state(state: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and generator.device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], generator.device)
    n = state["numpy"]
    np.random.set_state(
        (
            n["kind"],
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    random.setstate(_as_tuples(state["python"]))
    generator.set_state(state["generator"])


def _as_tuples(value: Any) -> Any:
    """Python's random state is nested tuples; a round trip through a file may give lists."""
    if isinstance(value, list | tuple):
        return tuple(_as_tuples(v) for v in value)
    return value


@dataclass
class SaveWait:
    """How long a process's training loops have stood still for checkpoints: copying the
    state off the device, waiting for a write behind the loop (``SaveBehind``), and the
    writes in line (the last one, a stop's)."""

    seconds: float = 0.0


SAVE_WAIT = SaveWait()  # this process's total, for the checkpoint benchmark


class SaveBehind:
    """Hands states to ``save`` on a thread of their own, one at a time, so that an epoch's
    checkpoint is written (file, fsync, rename: 0.14 s for se_resnet18 on an H200 machine,
    5% of its epoch) while the next epoch trains. The state is copied before the thread
    starts, so the run goes on changing its own tensors. A kill during the write costs
    that write only: the store's write is atomic, and the previous checkpoint stays; the
    loop waits for it before it reports the next epoch. A failed write is raised by the
    next ``submit`` or ``wait``."""

    def __init__(self, save: Callable[[dict[str, Any]], None]) -> None:
        self._save = save
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, take_state: Callable[[], dict[str, Any]], *, wait: bool) -> None:
        """Save ``take_state()``; with ``wait``, return once it is written. A write in line
        supersedes a failed one before it (a stop still saves its batch); a write behind
        the loop first raises the error of the one before."""
        # one write at a time: the files rotate (current -> previous)
        if wait:
            self.join()
            self._error = None
        else:
            self.wait()
        started = time.perf_counter()
        try:
            state = take_state()
            if wait:
                self._save(state)
            else:
                self._thread = threading.Thread(
                    target=self._write, args=(state,), name="checkpoint-write", daemon=False
                )
                self._thread.start()
        finally:
            SAVE_WAIT.seconds += time.perf_counter() - started

    def _write(self, state: dict[str, Any]) -> None:
        try:
            self._save(state)
        except BaseException as exc:  # noqa: BLE001 - raised in the training thread
            self._error = exc

    def join(self) -> None:
        """Wait for the write in flight, if any, keeping its error for ``wait``."""
        started = time.perf_counter()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            SAVE_WAIT.seconds += time.perf_counter() - started

    def wait(self) -> None:
        """Wait for the write in flight and raise its error, if it failed."""
        self.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def clone_to_cpu(tree: Any) -> Any:
    """A copy of ``tree`` with every tensor copied to the CPU: a checkpoint must not share
    storage with tensors the run goes on updating (``.cpu()`` alone copies nothing on a
    CPU run)."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().to("cpu", copy=True)
    if isinstance(tree, dict):
        return {k: clone_to_cpu(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [clone_to_cpu(v) for v in tree]
    if isinstance(tree, tuple):
        return tuple(clone_to_cpu(v) for v in tree)
    return tree


def position_of(state: dict[str, Any]) -> tuple[int, int]:
    """(epochs finished, batches of the next epoch done) of a saved state."""
    return len(state["history"]), int(state["step"])
