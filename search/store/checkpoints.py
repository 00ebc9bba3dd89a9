"""Writing a training run's checkpoint atomically and reading it back safely.

A checkpoint is one file and the version before it (``<name>.prev.pt``). A write goes to a
temporary file in the same folder, is flushed to the disk (fsync), and only then replaces
the current file, whose old version becomes the previous one; the folder is synced too. A
kill at any moment, in the middle of a write included, therefore leaves a loadable
checkpoint: the current one, or the previous one while the new one was being put in place.

Reading uses ``torch.load(weights_only=True)``: a checkpoint holds tensors and plain
containers only, so a file cannot run code. One that is truncated, corrupt, of an older
format or of another run (its hash differs: another config, model or split) costs a
one-line warning naming the file, and the previous version is tried, then none: the run
starts at epoch 1, never a crash loop.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search.config import TrialConfig
from search.store.locks import process_alive

# Keys that change how a run is checkpointed or evaluated, not what it computes.
NOT_IN_RUN_HASH = frozenset(
    {"runtime.checkpoint_every", "runtime.keep_checkpoints", "runtime.eval_batch_size"}
)
# Tests only: seconds to sleep in each write call, so that a kill lands inside a write
# while the real write path runs.
SLOW_WRITE_ENV = "CIFAR_SEARCH_TEST_SLOW_CHECKPOINT_WRITE_S"


def run_hash(cfg: TrialConfig, **identity: Any) -> str:
    """What makes a checkpoint this run's: the config (less what does not change the
    computation) and ``identity`` (device type, fold, split, the state's format, ...)."""
    flat = {k: v for k, v in cfg.to_flat().items() if k not in NOT_IN_RUN_HASH}
    text = json.dumps({"config": flat, **identity}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@dataclass
class WriteCost:
    """What checkpointing has cost one process so far."""

    writes: int = 0
    bytes: int = 0
    seconds: float = 0.0


COST = WriteCost()  # this process's total, for the run's metrics and the benchmark
# in a temporary file's name, so that a write in progress on another machine sharing the
# folder is never taken for a dead one's leftover
HOST = socket.gethostname().replace(".", "-")


class _SlowWriter:
    def __init__(self, fh, delay: float) -> None:
        self.fh, self.delay = fh, delay

    def write(self, data) -> int:
        time.sleep(self.delay)
        return self.fh.write(data)

    def __getattr__(self, name: str):
        return getattr(self.fh, name)


class Checkpoint:
    """The checkpoint of one training run at ``path`` (a fold of a trial, a retrain seed,
    an ablation run), tied to the run by ``run_hash``."""

    def __init__(self, path: Path, run_hash: str) -> None:
        self.path, self.run_hash = Path(path), run_hash
        self.previous = self.path.with_name(self.path.stem + ".prev.pt")

    def save(self, state: dict[str, Any]) -> None:
        import torch  # not at the top: `cli.py studies` reads paths from this package

        started = time.perf_counter()
        folder = self.path.parent
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(f".{self.path.name}.{HOST}.*.tmp"):
            if not process_alive(int(stale.name.rsplit(".", 2)[-2])):  # a write killed half-way
                stale.unlink(missing_ok=True)
        tmp = folder / f".{self.path.name}.{HOST}.{os.getpid()}.tmp"
        delay = float(os.environ.get(SLOW_WRITE_ENV, "0") or 0)
        with tmp.open("wb") as fh:
            torch.save(
                {**state, "run_hash": self.run_hash}, _SlowWriter(fh, delay) if delay else fh
            )
            fh.flush()
            os.fsync(fh.fileno())
        if self.path.exists():
            os.replace(self.path, self.previous)  # kept until the new one is in place
        os.replace(tmp, self.path)
        _sync_folder(folder)
        COST.writes += 1
        COST.bytes += self.path.stat().st_size
        COST.seconds += time.perf_counter() - started

    def load(self) -> dict[str, Any] | None:
        """The newest loadable state of this run, or None (no file, or none usable)."""
        for path in (self.path, self.previous):
            if not path.exists():
                continue
            state, problem = self._read(path)
            if state is not None:
                return state
            fallback = (
                "trying the previous checkpoint"
                if path == self.path and self.previous.exists()
                else "starting from epoch 1"
            )
            warnings.warn(f"checkpoint {path}: {problem}; {fallback}", stacklevel=2)
        return None

    def _read(self, path: Path) -> tuple[dict[str, Any] | None, str]:
        import torch

        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - truncated, corrupt, not a torch file
            text = str(exc).splitlines()[0] if str(exc) else ""
            return None, f"unreadable ({type(exc).__name__}: {text[:120]})"
        if not isinstance(state, dict) or "run_hash" not in state:
            return None, "not a checkpoint of this tool"
        if state["run_hash"] != self.run_hash:
            return None, (
                "belongs to another run (its config, model, split or device differ, or "
                "another version of the tool wrote it)"
            )
        return state, ""

    def remove(self) -> None:
        for path in (self.path, self.previous):
            path.unlink(missing_ok=True)


def _sync_folder(folder: Path) -> None:
    """Make the renames durable: a crash of the machine must not undo them."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_folder(folder: Path) -> None:
    """Delete a run's checkpoint folder (its files, then the folder if empty)."""
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if path.is_file():
            path.unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        pass  # something else lives there: leave it


def disk_usage(root: Path) -> int:
    """Bytes of every file under ``root`` (0 when it does not exist)."""
    if not root.is_dir():
        return 0
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
