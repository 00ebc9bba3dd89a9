"""A new MLflow SQLite store in milliseconds instead of seconds. MLflow makes a store by
running its whole chain of schema migrations (3-6 s on a laptop CPU, before the first trial
of every new study home); the result is the same for every store of one MLflow version. So
it is made once per version into the cache folder (``search.cache``) and copied from
there, with its default experiment's artifact folder pointed at the new store's."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from pathlib import Path

from search.cache import cache_dir
from search.store.locations import sqlite_uri


def create_sqlite_store(db: Path) -> None:
    """Make the SQLite store ``db``: under a temporary name, moved into place at the end.
    MLflow's migrations are not one transaction, and a worker killed in the middle of them
    would leave a half-made store that every later run fails to open ("table spans already
    exists"). The caller holds the store's creation lock."""
    draft = db.with_name(db.name + ".creating")
    draft.unlink(missing_ok=True)  # left by a creator that was killed
    try:
        shutil.copyfile(_template(), draft)
        _point_default_experiment(draft, db.parent / "artifacts")
    except (OSError, sqlite3.Error):  # no writable cache: migrate in place, the slow way
        draft.unlink(missing_ok=True)
        _migrate(draft, db.parent / "artifacts")
    try:  # a link, unlike a rename, never replaces a store made meanwhile by another tool
        os.link(draft, db)
    except FileExistsError:
        pass
    draft.unlink()


def _template() -> Path:
    """The empty store of this MLflow version, made once (atomically: workers may race)."""
    import mlflow

    path = cache_dir() / f"mlflow-{mlflow.__version__}-empty.db"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        _migrate(draft, path.parent / "artifacts")
        os.replace(draft, path)
    finally:
        draft.unlink(missing_ok=True)
    return path


def _migrate(path: Path, artifacts: Path) -> None:
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore(sqlite_uri(path), artifacts.resolve().as_uri())
    store.engine.dispose()


def _point_default_experiment(path: Path, artifacts: Path) -> None:
    """MLflow's default experiment (id 0) keeps its artifacts beside the store that made
    it: in a copy, beside the copy."""
    location = f"{artifacts.resolve().as_uri()}/0"
    with contextlib.closing(sqlite3.connect(path)) as con, con:
        con.execute(
            "UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0", (location,)
        )
