"""Several workers on one study: claiming the next trial, heartbeats, and lost workers.

- A claim lock serialises "count the finished and running trials, then create the next
  one", so that workers together finish exactly ``n_trials`` trials: a file lock beside a
  journal or SQLite storage, a PostgreSQL advisory lock for a shared server.
- Journal storages have no Optuna heartbeat, so each running trial records its worker
  (host, pid) and a heartbeat timestamp; a RUNNING trial whose process is gone (same
  host) or whose heartbeat is older than ``GRACE_S`` is marked FAIL ("worker lost") and
  its parameters are enqueued once more. RDB storages use Optuna's own heartbeat with
  ``RetryHeartbeatStaleTrialCallback`` instead (see ``search.storage``).
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import threading
import time
from pathlib import Path

import optuna
from optuna.storages import RDBStorage
from optuna.trial import TrialState

HEARTBEAT_S = 10.0     # how often a running trial's worker says it is alive
GRACE_S = 120.0        # silence after which a running trial counts as lost
HOST = socket.gethostname()


class ClaimLock:
    """An exclusive lock around trial creation, shared by every worker of a study."""

    def __init__(self, study: optuna.Study, lock_file: Path | None) -> None:
        self.study = study
        self.lock_file = lock_file
        self._fh = None
        self._pg = None

    def acquire(self) -> None:
        storage = self.study._storage
        if isinstance(storage, RDBStorage) and storage.engine.dialect.name == "postgresql":
            from sqlalchemy import text

            key = int.from_bytes(hashlib.sha256(self.study.study_name.encode()).digest()[:8],
                                 "big", signed=True)
            self._pg = storage.engine.connect()
            self._pg.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
            self._pg_key = key
        elif self.lock_file is not None:
            self.lock_file.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.lock_file.open("a")
            fcntl.flock(self._fh, fcntl.LOCK_EX)

    def release(self) -> None:
        """Idempotent: the objective releases as soon as its trial exists."""
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None
        if self._pg is not None:
            from sqlalchemy import text

            self._pg.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self._pg_key})
            self._pg.close()
            self._pg = None

    def __enter__(self) -> ClaimLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class Heartbeat:
    """Records the worker of a running trial and refreshes its heartbeat in a thread."""

    def __init__(self, study: optuna.Study, trial_id: int, interval: float = HEARTBEAT_S) -> None:
        self.study, self.trial_id, self.interval = study, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Heartbeat:
        storage = self.study._storage
        storage.set_trial_system_attr(self.trial_id, "worker", {"host": HOST, "pid": os.getpid()})
        storage.set_trial_system_attr(self.trial_id, "heartbeat", time.time())
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.study._storage.set_trial_system_attr(self.trial_id, "heartbeat", time.time())
            except Exception:  # the trial may have just finished; never kill the worker
                return

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lost_reason(trial: optuna.trial.FrozenTrial, now: float, grace: float = GRACE_S) -> str | None:
    """Why a RUNNING trial's worker counts as lost, or None while it looks alive."""
    worker = trial.system_attrs.get("worker")
    beat = trial.system_attrs.get("heartbeat")
    if worker and worker.get("host") == HOST and not _alive(int(worker["pid"])):
        return f"worker lost (process {worker['pid']} on {HOST} is gone)"
    last = beat if beat is not None else (trial.datetime_start.timestamp()
                                          if trial.datetime_start else None)
    if last is not None and now - last > grace:
        where = f" ({worker['host']}:{worker['pid']})" if worker else ""
        return f"worker lost{where}: no heartbeat for {now - last:.0f}s"
    return None


def fail_lost_trials(study: optuna.Study, grace: float = GRACE_S) -> list[tuple[int, str]]:
    """Mark lost RUNNING trials FAIL and enqueue each one's parameters once more (not a
    retry of a retry). Returns ``[(trial number, reason), ...]``."""
    failed = []
    now = time.time()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        reason = lost_reason(trial, now, grace)
        if reason is None:
            continue
        storage = study._storage
        try:
            storage.set_trial_user_attr(trial._trial_id, "fail_reason", reason)
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # it finished after all
        failed.append((trial.number, reason))
        if "retry_of" not in trial.user_attrs:
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
    return failed
