"""The options of ``cli.py slurm`` (``search.cluster.SlurmOptions``), defined once as in
``cli_args`` and applied together by ``SLURM_JOB``. Light like ``cli_args``: it imports
click and ``cli_args`` only."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import click

from search.cli_args import WORKERS

SLURM_WORKERS = partial(
    WORKERS, default=2, help="array tasks: one worker of the study each (scale by raising it)"
)
SLURM_JOB_OPTIONS = [
    partial(click.option, "--partition", help="#SBATCH --partition (default: the cluster's)"),
    partial(click.option, "--account", help="#SBATCH --account to charge"),
    partial(
        click.option,
        "--time",
        help="time limit per task (SLURM format: 30, 4:00:00, 1-00:00:00); a task at its "
        "limit checkpoints and requeues itself",
    ),
    partial(
        click.option,
        "--gpus-per-worker",
        type=click.IntRange(min=0),
        default=1,
        show_default=True,
        help="GPUs per task (#SBATCH --gres=gpu:N; 0 = CPU only); each runs --trials-per-gpu "
        "trials at once, one worker process each",
    ),
    partial(
        click.option,
        "--cpus-per-worker",
        type=click.IntRange(min=1),
        default=4,
        show_default=True,
        help="CPU cores per task",
    ),
    partial(click.option, "--mem", help="memory per task, e.g. 16G (default: the cluster's)"),
    partial(
        click.option,
        "--signal-seconds",
        type=click.IntRange(min=10, max=65535),
        default=300,
        show_default=True,
        help="SIGUSR1 this many seconds before the time limit: enough to finish the running "
        "batch and write a checkpoint",
    ),
    partial(
        click.option,
        "--sbatch",
        "sbatch_lines",
        multiple=True,
        metavar="OPTION",
        help="another #SBATCH line for every job, e.g. --sbatch=--qos=long (repeatable)",
    ),
    partial(
        click.option,
        "--mlflow-server/--no-mlflow-server",
        default=True,
        show_default=True,
        help="an MLflow server job that alone writes mlruns/mlflow.db (SQLite on a shared "
        "filesystem takes one writer); ignored when MLFLOW_TRACKING_URI is set",
    ),
    partial(
        click.option, "--server-time", help="the MLflow server job's time limit (default: --time)"
    ),
    partial(
        click.option,
        "--submit",
        "submit_jobs",
        is_flag=True,
        help="submit the jobs with sbatch (else only write them: read, then bash submit.sh)",
    ),
]


def SLURM_JOB(command: Callable) -> Callable:  # noqa: N802 (a decorator, named like the options)
    """Every option of a SLURM job (``search.cluster.SlurmOptions``), in one decorator."""
    for option in reversed(SLURM_JOB_OPTIONS):
        command = option()(command)
    return command
