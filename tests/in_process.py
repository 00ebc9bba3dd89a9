"""The command line run inside the test process (click's ``CliRunner``), as isolated as a
new process would be where it matters: its own working directory, which is also its home
(``CIFAR_SEARCH_HOME``: ``./mlruns`` is created there), an environment without ``MLFLOW_TRACKING_URI`` unless given one, and afterwards
the directory, the environment, the SIGINT/SIGTERM/SIGUSR1 handlers (commands install their own)
and ``warnings.showwarning`` (the CLI prints warnings its own way) as they were.

MLflow caches one store per tracking URI and Optuna keeps no state between studies, so
each working directory (a ``tmp_path``) is a store of its own; MLflow's cache of each run's
artifact location, by run id, is emptied before and after each command (a copy of a working
directory has the same run ids in another place). ``sys.exit`` in a command is
``result.exit_code``; an exception that escapes a command is raised again here (a real
process would print its traceback and exit 1), so a test sees where it came from.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path

from click.testing import CliRunner, Result


def forget_mlflow_runs() -> None:
    """Empty MLflow's process-wide cache of artifact locations by run id: after a copy
    (``copy_workdir``) the same run ids live in two places, and a command would otherwise
    write the copy's artifacts into the original."""
    try:
        from mlflow.tracking._tracking_service import utils
    except ImportError:
        return
    cache = getattr(utils, "_artifact_repos_cache", None)
    if cache is not None:
        cache.clear()


@contextlib.contextmanager
def isolated(cwd: Path, env: Mapping[str, str | None] | None = None) -> Iterator[None]:
    """Run the block in ``cwd`` with ``env`` (``None`` removes a variable) on top of an
    environment without ``MLFLOW_TRACKING_URI``; restore everything afterwards."""
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    handlers = {
        sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)
    }
    showwarning = warnings.showwarning
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ["CIFAR_SEARCH_HOME"] = str(cwd)  # the run state in cwd/mlruns, as the tests read it
    for key, value in (env or {}).items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    os.chdir(cwd)
    forget_mlflow_runs()
    try:
        yield
    finally:
        forget_mlflow_runs()
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        warnings.showwarning = showwarning


def run_cli(*args: object, cwd: Path, env: Mapping[str, str | None] | None = None) -> Result:
    """``cli.py *args`` in ``cwd``: ``result.exit_code``, ``.stdout``, ``.stderr``, ``.output``."""
    import cli

    with isolated(cwd, env):
        result = CliRunner().invoke(cli.main, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception.with_traceback(result.exc_info[2])
    return result


def copy_workdir(src: Path, dst: Path) -> Path:
    """A copy of a working directory (study files, ``mlruns/`` with its journal, MLflow
    database and artifacts) that refers to its own files only: MLflow records artifact
    locations as absolute paths, which are moved to the copy, so a command run in the copy
    never writes into ``src`` (run it through ``run_cli``, or call ``forget_mlflow_runs``
    first: MLflow remembers each run id's artifact location)."""
    shutil.copytree(src, dst)
    db = dst / "mlruns" / "mlflow.db"
    old, new = f"{src.resolve()}/", f"{dst.resolve()}/"
    with contextlib.closing(sqlite3.connect(db)) as con, con:
        tables = con.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        for (table,) in tables:
            for column in con.execute(f'PRAGMA table_info("{table}")').fetchall():
                name, kind = column[1], (column[2] or "").upper()
                if "CHAR" in kind or "TEXT" in kind or "CLOB" in kind:
                    con.execute(
                        f'UPDATE "{table}" SET "{name}" = replace("{name}", ?, ?) '
                        f'WHERE instr("{name}", ?) > 0',
                        (old, new, old),
                    )
    return dst
