"""Optuna storage: a journal file per study under ``mlruns/`` by default (several worker
processes on one machine can share it; SQLite locks under concurrent writers), or any
RDB URL (``sqlite:///...``, ``postgresql://...``) given with ``--storage``.

The journal is written under a kernel file lock (``flock``) instead of Optuna's default
symlink lock: the kernel releases it the moment its holder dies, however it dies, so a
worker killed while writing never stops the others (Optuna's symlink lock waits 30 s
before breaking a dead holder's lock, and spins forever when the journal path is
relative). A line torn by a writer killed mid-write is cut off by the next writer.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import optuna
from optuna.storages import BaseStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from search.errors import ConfigError
from search.store.locations import journal_path, mask_credentials
from search.store.locks import FlockJournalLock

CREATE_ATTEMPTS = 5  # tries to open an RDB storage that other workers are creating
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)  # what counts toward n_trials


class JournalFile(JournalFileBackend):
    """Optuna's journal file, locked with ``FlockJournalLock``, that repairs a torn tail.

    A writer killed in the middle of its ``write`` can leave a last line without its
    newline. Optuna's reader skips such a tail, but once another line is appended after it
    every reader fails on the file ("Invalid log format"). The torn bytes were never
    acknowledged to anyone (their writer died before returning), so the next writer, holding
    the lock, cuts them off before appending.
    """

    def __init__(self, path: Path) -> None:
        super().__init__(str(path), lock_obj=FlockJournalLock(path))

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        text = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs)
        self._lock.acquire()
        try:
            with open(self._file_path, "rb+") as fh:
                _cut_torn_tail(fh)
                fh.write(text.encode("utf-8"))
                fh.flush()
                os.fsync(fh.fileno())
        finally:
            self._lock.release()


def _cut_torn_tail(fh: BinaryIO) -> None:
    """Truncate the file after its last newline and leave ``fh`` at its end."""
    size = fh.seek(0, os.SEEK_END)
    end = size
    while end > 0:
        start = max(0, end - 4096)
        fh.seek(start)
        newline = fh.read(end - start).rfind(b"\n")
        if newline >= 0:
            end = start + newline + 1
            break
        end = start
    if end != size:
        fh.truncate(end)
    fh.seek(end)


@dataclass(frozen=True)
class Liveness:
    """How an RDB storage finds trials whose worker died: Optuna's heartbeat every
    ``heartbeat_s``, a trial silent for ``grace_s`` is failed and passed to ``on_lost``."""

    heartbeat_s: float
    grace_s: float
    on_lost: Callable[[optuna.Study, FrozenTrial], None]


def open_storage(
    study_name: str, url: str | None, *, create: bool = True, liveness: Liveness | None = None
) -> BaseStorage:
    """The journal file for ``study_name``, or the RDB at ``url``.

    With ``create=False`` a missing journal file is an error instead of a new file (for
    read-only commands such as ``best`` and ``dashboard``). ``liveness`` applies to RDB
    storages only (a journal's workers beat on their own: search.engine.coordination).
    """
    if url is None:
        path = journal_path(study_name)
        if not path.exists() and not create:
            raise ConfigError(
                "no trials yet: run `cli.py search --study NAME` first",
                key="study",
                value=study_name,
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalStorage

        return JournalStorage(JournalFile(path))
    try:
        return _rdb_storage(url, liveness)
    except Exception as exc:  # driver missing, server down, bad URL: one clear line
        hint = ""
        if isinstance(exc, ImportError) and url.startswith("postgresql"):
            hint = " (install the driver: pip install -e '.[postgres]')"
        raise ConfigError(
            f"cannot open Optuna storage: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}{hint}",
            key="--storage",
            value=mask_credentials(url),
        ) from None


def _rdb_storage(url: str, liveness: Liveness | None) -> optuna.storages.RDBStorage:
    # Optuna creates its tables without a lock: several workers opening a new database at
    # the same moment collide in the server's catalog ("duplicate key ... pg_type") or on a
    # table another one has just made. Whoever loses retries and finds the tables made.
    for attempt in range(CREATE_ATTEMPTS):
        try:
            if liveness is None:
                return optuna.storages.RDBStorage(url)
            # Optuna's heartbeat marks a dead worker's trial FAIL and the callback enqueues
            # its parameters once more, marked as journal storages mark it.
            with warnings.catch_warnings():  # both are marked experimental; we rely on them
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url,
                    heartbeat_interval=max(1, round(liveness.heartbeat_s)),
                    grace_period=max(1, round(liveness.grace_s)),
                    heartbeat_stale_trial_callback=liveness.on_lost,
                )
        except Exception as exc:
            if attempt == CREATE_ATTEMPTS - 1 or not _lost_creation_race(exc):
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _lost_creation_race(exc: Exception) -> bool:
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    text = str(exc)
    return isinstance(exc, (IntegrityError, ProgrammingError)) and (
        "already exists" in text or "duplicate key" in text
    )


def finished_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED_STATES))


def state_counts(study: optuna.Study) -> dict[str, int]:
    counts = {"complete": 0, "pruned": 0, "failed": 0, "running": 0}
    names = {
        TrialState.COMPLETE: "complete",
        TrialState.PRUNED: "pruned",
        TrialState.FAIL: "failed",
        TrialState.RUNNING: "running",
    }
    for t in study.get_trials(deepcopy=False):
        if t.state in names:
            counts[names[t.state]] += 1
    return counts
