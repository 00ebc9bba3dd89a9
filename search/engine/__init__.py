"""How a search runs: the trial objective, the claim -> count -> trial -> stop loop, the
coordination of several workers on one study, worker processes, and continuing lost work
from checkpoints (``resume``)."""

from search.engine.coordination import GRACE_BEATS, HEARTBEAT_S, RETRY_ATTR, retry_lost_trial
from search.engine.loop import (
    SearchOptions,
    SearchOutcome,
    TrialEvent,
    apply_overrides,
    open_study,
    run_search,
)
from search.engine.objective import EpochEvent, Objective
from search.engine.workers import (
    WORKER_ENV,
    WorkersFailed,
    run_workers,
    search_in_workers,
    worker_envs,
)

__all__ = [
    "GRACE_BEATS",
    "HEARTBEAT_S",
    "RETRY_ATTR",
    "WORKER_ENV",
    "EpochEvent",
    "Objective",
    "SearchOptions",
    "SearchOutcome",
    "TrialEvent",
    "WorkersFailed",
    "apply_overrides",
    "open_study",
    "retry_lost_trial",
    "run_search",
    "run_workers",
    "search_in_workers",
    "worker_envs",
]
