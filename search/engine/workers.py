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
import time
from collections.abc import Sequence

from search.interrupts import GRACE_S
from search.training import threads_per_process

WORKER_ENV = "CIFAR_SEARCH_WORKER"   # the worker's index, used to prefix its output


def worker_envs(workers: int, gpus: Sequence[str] | None, trials_per_gpu: int) -> list[dict]:
    """One environment per worker: ``trials_per_gpu`` workers per listed GPU, or
    ``workers`` CPU/auto workers when no GPUs are listed. Each gets its share of the CPU
    cores (``OMP_NUM_THREADS``) unless the caller set that already."""
    slots = [g for g in gpus for _ in range(trials_per_gpu)] if gpus else [None] * workers
    threads = str(threads_per_process(len(slots)))
    envs = []
    for index, gpu in enumerate(slots):
        env = {"OMP_NUM_THREADS": threads, **os.environ, WORKER_ENV: str(index)}
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        envs.append(env)
    return envs


def run_workers(argv: Sequence[str], envs: Sequence[dict]) -> list[int]:
    """Start one process per environment, wait for all and return their exit codes. Ctrl-C /
    SIGTERM is passed on to every worker (each ends its trial as FAIL "interrupted" and
    exits 130), then KeyboardInterrupt is raised once they have all ended."""
    procs: list[subprocess.Popen] = []
    try:
        for env in envs:  # one by one, so that a signal meanwhile reaches those started
            procs.append(subprocess.Popen(list(argv), env=env))
        return [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
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
