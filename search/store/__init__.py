"""Where state lives: paths and URLs, the Optuna storage, MLflow runs."""

from search.store.locations import (
    HOME_ENV,
    checkpoint_root,
    claim_lock_path,
    home,
    journal_path,
    mask_credentials,
    runs_dir,
    sqlite_file,
    sqlite_uri,
    storage_label,
    tracking_uri,
)
from search.store.locks import file_lock
from search.store.optuna_store import (
    FINISHED_STATES,
    Liveness,
    finished_count,
    open_storage,
    state_counts,
)
from search.store.tracker import RETRY_TAG, STATE_TAG, TRIAL_TAG, Tracker, config_of

__all__ = [
    "HOME_ENV",
    "FINISHED_STATES",
    "RETRY_TAG",
    "STATE_TAG",
    "TRIAL_TAG",
    "Liveness",
    "Tracker",
    "checkpoint_root",
    "claim_lock_path",
    "home",
    "config_of",
    "file_lock",
    "finished_count",
    "journal_path",
    "mask_credentials",
    "open_storage",
    "runs_dir",
    "sqlite_file",
    "sqlite_uri",
    "state_counts",
    "storage_label",
    "tracking_uri",
]
