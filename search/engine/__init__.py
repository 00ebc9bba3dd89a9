from search.engine.coordination import GRACE_BEATS, HEARTBEAT_S, retry_lost_trial
from search.engine.loop import open_study
from search.engine.workers import WORKER_ENV, run_workers, worker_envs

__all__ = [
    "GRACE_BEATS",
    "HEARTBEAT_S",
    "WORKER_ENV",
    "open_study",
    "retry_lost_trial",
    "run_workers",
    "worker_envs",
]
