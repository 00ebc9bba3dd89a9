"""Several workers on one study: claiming the next trial, heartbeats, and lost workers.

- A claim lock serialises "count the finished and running trials, then create the next
  one", so that workers together finish exactly ``n_trials`` trials: a file lock beside a
  journal or SQLite storage, a PostgreSQL advisory lock for a shared server.
- Journal storages have no Optuna heartbeat, so each running trial records its worker
  (host, pid) and a heartbeat timestamp; a RUNNING trial whose process is gone (same
  host) or whose last heartbeat is ``GRACE_BEATS`` intervals old is marked FAIL ("worker lost") and
  its parameters are enqueued once more. RDB storages use Optuna's own heartbeat instead,
  with ``retry_lost_trial`` as its stale-trial callback (see ``search.store.optuna_store``).
- A retry is the one intended repeat of a configuration: on every storage it carries the
  user attribute ``RETRY_ATTR`` (the lost trial's number) and continues the lost trial's
  checkpoint (``search.engine.resume``). A retry lost in turn is retried again only if it
  made progress (its checkpoints moved past where it started): no crash loops.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import threading
import time
import warnings
from pathlib import Path

import optuna
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from search.store.locks import process_alive

HEARTBEAT_S = 20.0  # default: how often a running trial's worker says it is alive
GRACE_BEATS = 3  # missed heartbeats after which a running trial counts as lost
RETRY_ATTR = "retry_of"  # user attribute of a retry: the number of the lost trial it reruns
WARM_START_FROM = "warm_start_from"  # user attribute of a warm-start trial: "<study>#<trial>"
# system attributes of a checkpointed trial: [trial-epochs, batches] in its checkpoints now,
# and when it started (restored from the trial it continues)
PROGRESS_ATTR = "checkpoint_progress"
RESUMED_AT_ATTR = "checkpoint_resumed_at"
# A retry lost before it saved anything new (killed while starting up, or within its first
# epoch: on a preemptible cluster, by chance) is retried again, but only this many times in
# a row: a config that kills its worker every time must not loop forever.
NO_PROGRESS_ATTR = "retries_without_progress"
MAX_NO_PROGRESS = 2
MAX_INTERRUPTED_NO_PROGRESS = 3  # more for retries stopped by a signal (they lost nothing)
HOST = socket.gethostname()
# Where a trial ran, recorded on it (user attributes, and ``cifar_search.<name>`` tags on its
# MLflow run): the node, and under SLURM the job, array task and requeue count, which name
# its log file (``slurm/<study>/worker-<array job>_<task>.log``).
SLURM_VARIABLES = {
    "slurm_job_id": "SLURM_JOB_ID",
    "slurm_array_job_id": "SLURM_ARRAY_JOB_ID",
    "slurm_array_task_id": "SLURM_ARRAY_TASK_ID",
    "slurm_restart_count": "SLURM_RESTART_COUNT",
}


def rdb_storage(study: optuna.Study) -> RDBStorage | None:
    """The study's RDBStorage (Optuna wraps it in a cache), or None for other storages."""
    storage = study._storage
    storage = getattr(storage, "_backend", storage)
    return storage if isinstance(storage, RDBStorage) else None


class ClaimLock:
    """An exclusive lock around trial creation, shared by every worker of a study."""

    def __init__(self, study: optuna.Study, lock_file: Path | None) -> None:
        self.study = study
        self.lock_file = lock_file
        self._fh = None
        self._pg = None

    def acquire(self) -> None:
        storage = rdb_storage(self.study)
        if storage is not None and storage.engine.dialect.name == "postgresql":
            from sqlalchemy import text

            key = int.from_bytes(
                hashlib.sha256(self.study.study_name.encode()).digest()[:8], "big", signed=True
            )
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


def worker_placement() -> dict[str, str]:
    """This worker's node, and its SLURM ids when it runs in a SLURM job."""
    placement = {"node": HOST}
    for name, variable in SLURM_VARIABLES.items():
        if os.environ.get(variable):
            placement[name] = os.environ[variable]
    return placement


class Heartbeat:
    """Records the worker (host, pid) of a running trial and, where Optuna has no
    heartbeat of its own (``beat=False`` for RDB storages), refreshes one in a thread."""

    def __init__(
        self, study: optuna.Study, trial_id: int, interval: float = HEARTBEAT_S, beat: bool = True
    ) -> None:
        self.study, self.trial_id, self.interval, self.beat = study, trial_id, interval, beat
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Heartbeat:
        storage = self.study._storage
        storage.set_trial_system_attr(self.trial_id, "worker", {"host": HOST, "pid": os.getpid()})
        if self.beat:
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
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval)


def lost_reason(trial: optuna.trial.FrozenTrial, now: float, grace: float) -> str | None:
    """Why a RUNNING trial's worker counts as lost, or None while it looks alive."""
    worker = trial.system_attrs.get("worker")
    beat = trial.system_attrs.get("heartbeat")
    if worker and worker.get("host") == HOST and not process_alive(int(worker["pid"])):
        return f"worker lost (process {worker['pid']} on {HOST} is gone)"
    last = (
        beat
        if beat is not None
        else (trial.datetime_start.timestamp() if trial.datetime_start else None)
    )
    if last is not None and now - last > grace:
        where = f" ({worker['host']}:{worker['pid']})" if worker else ""
        return f"worker lost{where}: no heartbeat for {now - last:.0f}s"
    return None


def fail_lost_trials(study: optuna.Study, grace: float) -> list[tuple[int, str]]:
    """Mark lost RUNNING trials FAIL and enqueue each one's parameters once more (not a
    retry of a retry). Returns ``[(trial number, reason), ...]``."""
    failed = []
    now = time.time()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        reason = lost_reason(trial, now, grace)
        if reason is None:
            continue
        if fail_and_retry(study, trial, reason):
            failed.append((trial.number, reason))
    return failed


def fail_and_retry(study: optuna.Study, trial: optuna.trial.FrozenTrial, reason: str) -> bool:
    """Mark a lost RUNNING trial FAIL with ``reason`` and enqueue its retry; False when it
    finished meanwhile after all."""
    try:
        study._storage.set_trial_user_attr(trial._trial_id, "fail_reason", reason)
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    retry_lost_trial(study, trial)
    return True


def made_progress(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a trial's checkpoints moved past the point it started from."""
    now = trial.system_attrs.get(PROGRESS_ATTR)
    started = trial.system_attrs.get(RESUMED_AT_ATTR)
    return now is not None and started is not None and tuple(now) > tuple(started)


def retry_lost_trial(
    study: optuna.Study, trial: optuna.trial.FrozenTrial, *, interrupted: bool = False
) -> None:
    """Enqueue a lost or interrupted trial's parameters once more, marked with
    ``RETRY_ATTR``. A retry that is lost in turn is retried if it made progress (saved a
    checkpoint past where it started); one lost before saving anything new is retried
    ``MAX_NO_PROGRESS`` times in a row, then given up. An ``interrupted`` trial (a signal: it
    saved its exact position, and no fault of its own stopped it) is continued a few times
    more (``MAX_INTERRUPTED_NO_PROGRESS``) before it is given up for the same reason. Also
    Optuna's stale-trial callback on RDB storages, so that both storages mark retries the
    same way."""
    # A trial lost before it suggested anything still has the parameters it was enqueued
    # with (a warm start's); they are what a retry must run.
    params = trial.params or trial.system_attrs.get("fixed_params", {})
    if not params or any(
        t.user_attrs.get(RETRY_ATTR) == trial.number for t in study.get_trials(deepcopy=False)
    ):
        return  # nothing to rerun, or retried already (an interrupted worker that then died)
    in_a_row = 0
    if RETRY_ATTR in trial.user_attrs and not made_progress(trial):
        in_a_row = trial.user_attrs.get(NO_PROGRESS_ATTR, 0) + 1
        # stopped by a signal, it lost nothing; but stopped every time before it saved
        # anything (a start-up longer than the time limit), it would loop forever
        if in_a_row > MAX_NO_PROGRESS + (MAX_INTERRUPTED_NO_PROGRESS if interrupted else 0):
            return
    attrs = {RETRY_ATTR: trial.number, **({NO_PROGRESS_ATTR: in_a_row} if in_a_row else {})}
    attrs.update({k: v for k, v in trial.user_attrs.items() if k == WARM_START_FROM})
    study.enqueue_trial(params, user_attrs=attrs)


def fail_stale_rdb_trials(study: optuna.Study, grace: float) -> list[tuple[int, str]]:
    """Optuna's own stale-trial check for RDB storages (its heartbeat); the storage's
    stale-trial callback (``retry_lost_trial``) enqueues each failed trial's parameters again.

    Optuna skips a RUNNING trial that never got a heartbeat (its worker died inside
    ``study.ask``, before the heartbeat thread started). Workers record themselves on a new
    trial before they release the claim lock, so such a trial, seen under the lock with no
    worker recorded, belongs to a dead worker; it is failed once it is ``grace`` seconds old
    (and retried when it got as far as suggesting parameters)."""
    running = {
        t._trial_id: t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    }
    if not running:
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    lost = []
    now = time.time()
    for trial_id, trial in running.items():
        if study._storage.get_trial(trial_id).state == TrialState.FAIL:
            worker = trial.system_attrs.get("worker")
            where = f" ({worker['host']}:{worker['pid']})" if worker else ""
            # Optuna has already finished the trial, so the reason lives in MLflow only
            lost.append((trial.number, f"worker lost{where}: stale heartbeat"))
        elif "worker" not in trial.system_attrs and trial.datetime_start is not None:
            age = now - trial.datetime_start.timestamp()
            reason = f"worker lost: never started its trial ({age:.0f}s)"
            if age > grace and fail_and_retry(study, trial, reason):
                lost.append((trial.number, reason))
    return lost
