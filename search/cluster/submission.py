"""``cli.py slurm``: check what a cluster run needs (the time limit, the stores on the shared
filesystem), write the study's scripts under ``slurm/<study>/``, and submit them."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
from pathlib import Path

from search.cluster.scripts import (
    SlurmOptions,
    StudyCommand,
    final_script,
    script_names,
    server_script,
    submit_script,
    workers_script,
)
from search.engine import SearchOptions, apply_overrides
from search.engine.workers import worker_argv
from search.errors import ConfigError
from search.store import home, runs_dir, sqlite_file, sqlite_uri
from search.store.filesystems import refuse_unsafe_sharing
from search.study import StudySpec

SLURM_DIR = "slurm"  # <home>/slurm/<study>/ (beside mlruns/) holds the scripts and the logs
# SLURM's time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S
_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def time_limit_seconds(text: str) -> int:
    """Seconds in a SLURM ``--time`` value; a one-line ConfigError when it is not one."""
    match = _TIME.match(text.strip())
    if not match:
        raise ConfigError(
            "expected a SLURM time such as 30, 4:00:00 or 1-12:00:00", key="--time", value=text
        )
    days, first, second, third = match.groups()
    parts = [int(p) for p in (first, second, third) if p is not None]
    if days is not None:  # D-H, D-H:M, D-H:M:S
        hours, minutes, seconds = (parts + [0, 0])[:3]
        return ((int(days) * 24 + hours) * 60 + minutes) * 60 + seconds
    if len(parts) == 3:
        return (parts[0] * 60 + parts[1]) * 60 + parts[2]
    return parts[0] * 60 + (parts[1] if len(parts) == 2 else 0)  # M or M:S


def check_options(options: SlurmOptions) -> None:
    if (options.trials_per_gpu or 1) > 1 and not options.gpus_per_worker:
        raise ConfigError(
            "several trials per GPU need GPUs: set --gpus-per-worker",
            key="--trials-per-gpu",
            value=options.trials_per_gpu,
        )
    for what in ("time", "server_time"):
        value = getattr(options, what)
        if value is None:
            continue
        limit = time_limit_seconds(value)
        if what == "time" and options.signal_seconds >= limit:
            raise ConfigError(
                f"the warning must come before the time limit ({limit} s): lower "
                "--signal-seconds or raise --time",
                key="--signal-seconds",
                value=options.signal_seconds,
            )


def check_stores(spec: StudySpec, search: SearchOptions, options: SlurmOptions) -> None:
    """Refuse, before anything is written, stores that several nodes cannot share (the
    MLflow store is the server job's alone, unless there is none)."""
    refuse_unsafe_sharing(
        spec.name, search.storage, across_nodes=True, tracking=not options.mlflow_server
    )


def study_command(script: Path, spec: StudySpec, search: SearchOptions) -> StudyCommand:
    """The jobs run ``script`` (``cli.py``) in the home (``store.home``: the run state in
    ``mlruns/``), whatever folder SLURM starts them in."""
    study_file = Path(spec.path).resolve()
    worker = worker_argv(script.resolve(), study_file, absolute_paths(search))
    final = [a for a in worker if a != "--no-retrain"]
    return StudyCommand(
        project=home(),
        worker_argv=worker,
        final_argv=final,
        python=worker[0],
        runs_dir=runs_dir(),
    )


def absolute_paths(search: SearchOptions) -> SearchOptions:
    """The jobs start in the home, not in the folder ``slurm`` was called from: paths as
    typed there (``--data-dir data``, ``--storage sqlite:///o.db``) are made absolute."""
    database = sqlite_file(search.storage) if search.storage else None
    query = "?" + search.storage.split("?", 1)[1] if database and "?" in search.storage else ""
    return dataclasses.replace(
        search,
        data_dir=str(Path(search.data_dir).resolve()) if search.data_dir else None,
        checkpoint_dir=str(Path(search.checkpoint_dir).resolve())
        if search.checkpoint_dir
        else None,
        storage=search.storage if database is None else sqlite_uri(database) + query,
    )


def write_scripts(
    script: Path, spec: StudySpec, search: SearchOptions, options: SlurmOptions
) -> list[Path]:
    """Check, then write the study's scripts under ``<home>/slurm/<study>/``, beside
    ``mlruns/``; returns their paths (``submit.sh`` last)."""
    if os.environ.get("MLFLOW_TRACKING_URI") and options.mlflow_server:
        # a tracking server or database of the user's own: the jobs inherit it
        options = dataclasses.replace(options, mlflow_server=False)
    check_options(options)
    apply_overrides(spec, search.overrides)  # a bad --set fails here, not in every task
    check_stores(spec, search, options)
    command = study_command(script, spec, search)
    if not options.mlflow_server:  # the user's own store, if any: written into the scripts
        command = dataclasses.replace(
            command, tracking_uri=os.environ.get("MLFLOW_TRACKING_URI") or None
        )
    folder = command.project / SLURM_DIR / spec.name
    texts = {
        "mlflow-server.sbatch": server_script,
        "workers.sbatch": workers_script,
        "final.sbatch": final_script,
    }
    contents = {
        name: (
            submit_script(spec.name, folder, options, command.tracking_uri)
            if name == "submit.sh"
            else texts[name](spec.name, folder, options, command)
        )
        for name in script_names(options)
    }
    folder.mkdir(parents=True, exist_ok=True)
    if not options.mlflow_server:
        (folder / "mlflow-server.sbatch").unlink(missing_ok=True)  # from an earlier call
    paths = []
    for name, text in contents.items():
        path = folder / name
        partial = path.with_name(f".{name}.tmp")
        partial.write_text(text)
        partial.chmod(0o755)
        os.replace(partial, path)
        paths.append(path)
    return paths


def submit(submit_sh: Path) -> str:
    """Run ``submit.sh``: its output (job ids, how to watch them), or a one-line error."""
    if shutil.which("sbatch") is None:
        raise ConfigError(
            f"sbatch not found: submit from a SLURM login node, or run `bash {submit_sh}` there",
            key="--submit",
        )
    done = subprocess.run(["bash", str(submit_sh)], capture_output=True, text=True)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        raise ConfigError(f"submission failed: {lines[-1]}", key="--submit")
    return done.stdout.rstrip()
