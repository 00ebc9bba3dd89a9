"""A new MLflow store copied from the cached empty one is the store MLflow itself makes:
same schema and migrations, its default experiment's artifacts beside it, and usable."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import mlflow

from search.cache import cache_dir
from search.store import Tracker, sqlite_uri
from search.store.empty_store import _migrate, create_sqlite_store


def _schema(db: Path) -> tuple:
    """Tables with their columns, indexes, the migration and the experiments. Not the
    CREATE statements' text: MLflow's table rebuilds order their constraints differently
    from one run to the next (a set's order), in a copy and in a new migration alike."""
    with contextlib.closing(sqlite3.connect(db)) as con:
        names = con.execute("SELECT type, name FROM sqlite_master ORDER BY type, name").fetchall()
        columns = {
            name: con.execute(f'PRAGMA table_info("{name}")').fetchall()
            for kind, name in names
            if kind == "table"
        }
        version = con.execute("SELECT version_num FROM alembic_version").fetchall()
        experiments = con.execute("SELECT experiment_id, name FROM experiments").fetchall()
    return names, columns, version, experiments


def _default_artifacts(db: Path) -> str:
    with contextlib.closing(sqlite3.connect(db)) as con:
        (row,) = con.execute("SELECT artifact_location FROM experiments WHERE experiment_id = 0")
    return row[0]


def test_a_copied_store_is_the_store_mlflow_makes(tmp_path):
    made, copied = tmp_path / "made" / "mlflow.db", tmp_path / "copied" / "mlflow.db"
    made.parent.mkdir()
    copied.parent.mkdir()
    _migrate(made, made.parent / "artifacts")
    create_sqlite_store(copied)
    assert (cache_dir() / f"mlflow-{mlflow.__version__}-empty.db").is_file()
    assert _schema(copied) == _schema(made)
    assert _default_artifacts(copied) == f"{(copied.parent / 'artifacts').as_uri()}/0"
    assert not list(copied.parent.glob("*.creating"))
    # usable: a run logged and read back
    tracker = Tracker("s", sqlite_uri(copied))
    run_id = tracker.study_run({"a": "b"})
    assert tracker.client.get_run(run_id).data.tags["a"] == "b"


def test_without_a_writable_cache_the_store_is_made_in_place(tmp_path, monkeypatch):
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")
    monkeypatch.setenv("CIFAR_SEARCH_CACHE", str(blocked / "cache"))
    db = tmp_path / "mlflow.db"
    create_sqlite_store(db)
    reference = tmp_path / "ref.db"
    _migrate(reference, tmp_path / "artifacts")
    assert _schema(db) == _schema(reference)
