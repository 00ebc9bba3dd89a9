"""Several worker processes on one machine, sharing one study's storage.

Each worker is a plain ``cli.py search`` process (with ``--no-retrain``): they cooperate
through the storage and its claim lock (``search.engine.coordination``), exactly as independent
commands started by hand, on this machine or others, do. With GPUs, each worker is pinned
to one through ``CUDA_VISIBLE_DEVICES``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from search import interrupts
from search.config import TRIALS_PER_GPU, format_value
from search.engine.loop import (
    WORKER_ENV,
    SearchOptions,
    apply_overrides,
    open_study,
)
from search.engine.warm_start import warm_start_trials
from search.errors import ConfigError
from search.interrupts import GRACE_S, INTERRUPTED_CODES
from search.store.filesystems import refuse_unsafe_sharing
from search.training import threads_per_process

if TYPE_CHECKING:
    import optuna

    from search.study import StudySpec


def worker_argv(
    script: str | Path, study: str | Path, options: SearchOptions, *, on_gpus: bool = False
) -> list[str]:
    """The command line of one worker: ``script`` (``cli.py``) ``search`` on ``study`` with
    the same options and ``--set`` overrides, without the final retrain (the parent does it
    once every worker has ended), on ``cuda`` when each worker is pinned to a GPU."""
    argv = [
        sys.executable,
        str(script),
        "search",
        "--study",
        str(study),
        "--no-retrain",
        "--max-failures",
        str(options.max_consecutive_failures),
        "--heartbeat",
        str(options.heartbeat),
    ]
    for flag, value in (
        ("--n-trials", options.n_trials),
        ("--timeout", options.timeout),
        ("--data-dir", options.data_dir),
        ("--storage", options.storage),
        ("--checkpoint-dir", options.checkpoint_dir),
        ("--device", "cuda" if on_gpus else options.device),
    ):
        if value is not None:
            argv += [flag, str(value)]
    for key, value in options.overrides.items():
        argv += ["--set", f"{key}={format_value(value)}"]
    argv += ["--system-metrics"] if options.system_metrics else []
    return argv


def require_gpus(gpus: Sequence[str]) -> None:
    """``--gpus`` on a machine without CUDA: one line now, not one failed trial per worker
    until --max-failures stops them. (The ids themselves are the machine's, which the
    workers' CUDA_VISIBLE_DEVICES picks from; a restricted one here would renumber them.)"""
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(
            "no CUDA GPU on this machine (torch.cuda.is_available() is False): "
            "leave out --gpus, or use --workers N",
            key="--gpus",
            value=",".join(gpus),
        )


def worker_envs(
    workers: int, gpus: Sequence[str] | None, trials_per_gpu: int | None = None
) -> list[dict]:
    """One environment per worker: ``trials_per_gpu`` (default ``TRIALS_PER_GPU``) workers
    per listed GPU, or ``workers`` CPU/auto workers when no GPUs are listed. Each gets its
    share of the CPU cores (``OMP_NUM_THREADS``) unless the caller set that already."""
    per_gpu = trials_per_gpu or TRIALS_PER_GPU
    slots = [g for g in gpus for _ in range(per_gpu)] if gpus else [None] * workers
    threads = str(threads_per_process(len(slots)))
    envs = []
    for index, gpu in enumerate(slots):
        env = {"OMP_NUM_THREADS": threads, **os.environ, WORKER_ENV: str(index)}
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        envs.append(env)
    return envs


def run_workers(argv: Sequence[str], envs: Sequence[dict], stdout: int | None = None) -> list[int]:
    """Start one process per environment, wait for all and return their exit codes. Ctrl-C,
    SIGTERM or SIGUSR1 is passed on to every worker (each saves its trial's checkpoint,
    marks it FAIL "interrupted" with a retry to continue it, and exits with the signal's
    code), then KeyboardInterrupt is raised once they have all ended. ``stdout``: where
    their output goes, as ``subprocess.Popen`` takes it (default: this process's)."""
    procs: list[subprocess.Popen] = []
    try:
        for env in envs:  # one by one, so that a signal meanwhile reaches those started
            procs.append(subprocess.Popen(list(argv), env=env, stdout=stdout))
        return [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.Signals(interrupts.exit_code() - 128))
        # Each worker ends within its own grace period; one hung past it (its watchdog
        # thread starved by a stuck extension) is killed, never left behind.
        deadline = time.monotonic() + GRACE_S + 1
        for p in procs:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        raise  # the command was interrupted, whatever the workers' own exit codes


class WorkersFailed(Exception):
    """A worker of ``search --workers`` ended with a non-zero exit code (one killed by a
    signal has a negative code: a failure too). ``exit_code`` is the parent's: an
    interrupted worker's code (130, 143 or 138) when one was interrupted, else the highest
    code, at least 1."""

    def __init__(self, codes: Sequence[int]) -> None:
        self.codes = list(codes)
        interrupted = [c for c in self.codes if c in INTERRUPTED_CODES]
        self.interrupted = bool(interrupted)
        self.exit_code = interrupted[0] if interrupted else max(max(self.codes), 1)
        super().__init__(f"worker exit codes {self.codes}")


def search_in_workers(
    script: str | Path,
    spec: StudySpec,
    options: SearchOptions,
    *,
    workers: int = 1,
    gpus: Sequence[str] | None = None,
    trials_per_gpu: int | None = None,
    on_start: Callable[[int], None] | None = None,
    stdout: int | None = None,
) -> optuna.Study:
    """``search --workers`` / ``--gpus``: run ``script`` (``cli.py``) ``search`` on ``spec`` in
    worker processes sharing its storage (``worker_argv``, ``worker_envs``) and return the
    study once every one has ended; ``on_start(n)`` is told how many start; ``stdout`` is
    where their output goes (``run_workers``). Raises
    ``WorkersFailed`` when one failed, and ``KeyboardInterrupt`` after Ctrl-C / SIGTERM,
    passed on to every worker (``run_workers``)."""
    # What every worker would find wrong, found once here: --set values, the stored
    # study's objectives, the warm start's source (one error line, not one per worker).
    checked = apply_overrides(spec, options.overrides)
    if gpus:
        require_gpus(gpus)
    refuse_unsafe_sharing(spec.name, options.storage, across_nodes=False)  # one node
    warm_start_trials(checked, options.storage)
    open_study(checked, options.storage, heartbeat=options.heartbeat)
    argv = worker_argv(script, spec.path, options, on_gpus=bool(gpus))
    envs = worker_envs(workers, gpus, trials_per_gpu)
    if on_start is not None:
        on_start(len(envs))
    codes = run_workers(argv, envs, stdout)
    if any(codes):
        raise WorkersFailed(codes)
    return open_study(spec, options.storage, create=False)
