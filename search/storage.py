"""Optuna storage: a journal file per study under ``mlruns/`` by default (several worker
processes on one machine can share it; SQLite locks under concurrent writers), or any
RDB URL (``sqlite:///...``, ``postgresql://...``) given with ``--storage``."""
from __future__ import annotations

import warnings
from pathlib import Path

import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from search.claims import GRACE_BEATS, HEARTBEAT_S
from search.errors import ConfigError
from search.tracking import RUNS_DIR, mask_credentials

FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)  # what counts toward n_trials


def journal_path(study_name: str) -> Path:
    return RUNS_DIR / f"{study_name}.journal"


def storage_label(study_name: str, url: str | None) -> str:
    """Where the study lives, safe to print and log (credentials masked)."""
    return mask_credentials(url) if url else str(journal_path(study_name))


def open_storage(study_name: str, url: str | None, *, create: bool = True,
                 heartbeat: float = HEARTBEAT_S) -> BaseStorage:
    """The journal file for ``study_name``, or the RDB at ``url``.

    With ``create=False`` a missing journal file is an error instead of a new file (for
    read-only commands such as ``best`` and ``dashboard``).
    """
    if url is None:
        path = journal_path(study_name)
        if not path.exists() and not create:
            raise ConfigError("no trials yet: run `cli.py search --study NAME` first",
                              key="study", value=study_name)
        path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(str(path)))
    try:
        # Optuna's heartbeat marks a dead worker's trial FAIL and the callback enqueues
        # its parameters once more (the journal storage gets the same from search.claims).
        with warnings.catch_warnings():  # both are marked experimental; we rely on them
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url, heartbeat_interval=max(1, round(heartbeat)),
                grace_period=max(1, round(heartbeat * GRACE_BEATS)),
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback())
    except Exception as exc:  # driver missing, server down, bad URL: one clear line
        hint = ""
        if isinstance(exc, ImportError) and url.startswith("postgresql"):
            hint = " (install the driver: pip install -e '.[postgres]')"
        raise ConfigError(f"cannot open Optuna storage: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}{hint}",
                          key="--storage", value=mask_credentials(url)) from None


def finished_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED_STATES))


def state_counts(study: optuna.Study) -> dict[str, int]:
    counts = {"complete": 0, "pruned": 0, "failed": 0, "running": 0}
    names = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned",
             TrialState.FAIL: "failed", TrialState.RUNNING: "running"}
    for t in study.get_trials(deepcopy=False):
        if t.state in names:
            counts[names[t.state]] += 1
    return counts
