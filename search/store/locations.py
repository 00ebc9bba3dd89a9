"""Every path and URL rule, once: the runs folder, the journal and lock files beside it, the
MLflow tracking URI, ``sqlite:///`` parsing and credential masking. Pure functions of
their arguments and the environment: nothing here opens, creates or imports a store."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "CIFAR_SEARCH_HOME"
# The checkout: cli.py, studies/ and, by default, the run state in mlruns/.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
SQLITE_PREFIX = "sqlite:///"


def home() -> Path:
    """The one folder whose ``mlruns/`` holds the run state of every command, whatever the
    current folder: ``$CIFAR_SEARCH_HOME``, else the project root (the checkout that holds
    ``cli.py``), else, for an installed copy without one, the current folder."""
    chosen = os.environ.get(HOME_ENV)
    if chosen:
        return Path(chosen).expanduser().resolve()
    return PROJECT_ROOT if (PROJECT_ROOT / "cli.py").is_file() else Path.cwd().resolve()


def runs_dir() -> Path:
    """``<home>/mlruns``: the Optuna journals, the MLflow store, checkpoints."""
    return home() / "mlruns"


def journal_path(study_name: str) -> Path:
    """Absolute, so that every lock and link derived from it resolves the same way
    whatever the worker's current directory."""
    return runs_dir() / f"{study_name}.journal"


def claim_lock_path(study_name: str, storage_url: str | None) -> Path | None:
    """The lock file beside a journal or SQLite storage (None for server databases)."""
    if storage_url is None:
        return journal_path(study_name).with_suffix(".lock")
    database = sqlite_file(storage_url)
    if database is not None:
        return Path(f"{database}.{study_name}.lock").resolve()
    return None


def checkpoint_root(study_name: str, checkpoint_dir: str | os.PathLike | None = None) -> Path:
    """Where a study's checkpoints live: ``mlruns/checkpoints/<study>`` beside its state, or
    ``<checkpoint_dir>/<study>`` (``--checkpoint-dir``; every machine of a study must see
    the same folder for a lost trial to continue elsewhere). Absolute, like the journal."""
    base = Path(checkpoint_dir) if checkpoint_dir else runs_dir() / "checkpoints"
    return (base / study_name).resolve()


def trial_checkpoints(root: Path, trial_number: int) -> Path:
    """The folder of a search trial's checkpoints: one file per fold (``fold_checkpoint``)."""
    return root / f"trial-{trial_number}"


def fold_checkpoint(folder: Path, fold: int) -> Path:
    return folder / f"fold{fold}.pt"


def final_checkpoint(root: Path, trial_number: int, seed: int) -> Path:
    """One seed of a trial's final retrain."""
    return root / f"final-trial-{trial_number}" / f"seed{seed}.pt"


def ablation_checkpoint(root: Path, run_hash: str) -> Path:
    """One ablation run (variant x seed x split), named by its reuse hash."""
    return root / "ablation" / f"{run_hash}.pt"


def train_checkpoint(out_dir: str | os.PathLike, fold: int | None) -> Path:
    """``train --out DIR``: ``DIR/checkpoints/final.pt`` with ``--test``, else one per fold."""
    name = "final.pt" if fold is None else f"fold{fold}.pt"
    return Path(out_dir).resolve() / "checkpoints" / name


def tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` when set, else the SQLite store ``<home>/mlruns/mlflow.db``
    (as an absolute path: MLflow caches stores by URI, so a relative one would keep
    pointing at the first working directory's database)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or sqlite_uri(runs_dir() / "mlflow.db")


def sqlite_uri(path: Path) -> str:
    return f"{SQLITE_PREFIX}{path.resolve()}"


def sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (without its ``?query``), else None."""
    if not uri.startswith(SQLITE_PREFIX):
        return None
    return Path(uri[len(SQLITE_PREFIX) :].split("?", 1)[0])


def storage_label(study_name: str, url: str | None) -> str:
    """Where the study lives, safe to print and log (credentials masked)."""
    return mask_credentials(url) if url else str(journal_path(study_name))


def mask_credentials(url: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    userinfo, at, host = rest.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in userinfo else url
