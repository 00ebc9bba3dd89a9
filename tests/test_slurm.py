"""A study as a SLURM job array on a real one-node cluster (``.ci/slurm-cluster`` starts one):
``cli.py slurm --submit`` submits an MLflow server job, 3 workers and the final retrain;
one task gets SLURM's warning signal (it checkpoints and requeues itself), another task's
worker is killed with SIGKILL (its trial continues elsewhere from its checkpoint). Then
everything must add up: the study's trials, MLflow, the retrain, the logs.

Without a cluster this skips, unless ``CIFAR_SEARCH_REQUIRE_SLURM`` is set (``.ci/run``
sets it: there a cluster that cannot start is a failure)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pytest
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState
from tiny_study import write_study

from search.engine.coordination import PROGRESS_ATTR

CLI = Path(__file__).resolve().parents[1] / "cli.py"
N_TRIALS = 8
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("slurm")]


def _cluster_problem() -> str | None:
    try:
        states = subprocess.run(
            ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30
        ).stdout.split()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"no SLURM cluster here ({exc}); start one with `sudo .ci/slurm-cluster`"
    if not {"idle", "mixed", "allocated"} & set(states):
        return f"the SLURM node is not up (sinfo: {states}); see `sudo .ci/slurm-cluster`"
    return None


@pytest.fixture
def cluster() -> None:
    problem = _cluster_problem()
    if problem and os.environ.get("CIFAR_SEARCH_REQUIRE_SLURM"):
        pytest.fail(problem)
    if problem:
        pytest.skip(problem)


def _run(*argv: str, cwd: Path | None = None, env: dict | None = None) -> str:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (argv, done.stdout, done.stderr)
    return done.stdout


def _study(work: Path) -> optuna.Study:
    storage = JournalStorage(JournalFileBackend(str(work / "mlruns" / "sl.journal")))
    return optuna.load_study(study_name="sl", storage=storage)


def _trials(work: Path) -> list[optuna.trial.FrozenTrial]:
    try:
        return _study(work).trials
    except (KeyError, FileNotFoundError):
        return []


def _queue() -> list[tuple[str, str, str]]:
    """(job id, state, reason) of every job in the queue."""
    out = _run("squeue", "-h", "-o", "%i|%T|%r")
    return [tuple(line.split("|")) for line in out.splitlines() if line.strip()]


_HELD_SINCE: dict[str, float] = {}
# slurmd refuses to launch a job it has just ended ("Job N already killed, do not launch
# batch job": the rerun fails with exit 1); a requeued job is held ~2 minutes for that.
# The test waits a few seconds, not minutes.
RELEASE_AFTER_S = 10


def _release_requeued() -> None:
    """A requeued job waits ~2 minutes (BeginTime ahead): start it sooner."""
    for job, state, reason in _queue():
        if state == "PENDING" and reason == "BeginTime":
            held = _HELD_SINCE.setdefault(job, time.time())
            if time.time() - held >= RELEASE_AFTER_S:
                subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=False)
                del _HELD_SINCE[job]


def _wait_for(condition, what: str, timeout: float = 600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        _release_requeued()
        value = condition()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}; queue: {_queue()}")


def _checkpointed_trial_of_task(work: Path, task: str):
    """A RUNNING trial of array task ``task``, not a retry, with an epoch checkpointed."""
    for t in _trials(work):
        if (
            t.state == TrialState.RUNNING
            and t.user_attrs.get("slurm_array_task_id") == task
            and tuple(t.system_attrs.get(PROGRESS_ATTR, (0, 0)))[0] >= 1
            and "retry_of" not in t.user_attrs
        ):
            return t
    return None


def _continuations(trials: list, lost) -> list:
    """The retries that continued ``lost``, in order (a retry may be lost in turn)."""
    chain = []
    while True:
        nxt = [t for t in trials if t.user_attrs.get("retry_of") == lost.number]
        if not nxt:
            return chain
        (lost,) = nxt
        chain.append(lost)


def test_a_job_array_survives_a_time_limit_signal_and_a_kill(tmp_path, cluster):
    work = tmp_path
    write_study(
        work,
        "sl",
        study={"dataset": "digits", "n_trials": N_TRIALS, "seed": 3},
        space={"model.dropout": {"type": "float", "low": 0.0, "high": 0.5}},
        fixed={"optim.epochs": 6, "model.width": 0.125, "data.synthetic_size": None},
        retrain={"epochs": 2, "seeds": [0]},
    )
    # no MLFLOW_TRACKING_URI: the jobs log through the MLflow server job, the set-up the
    # docs give for a cluster without a database
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["OMP_NUM_THREADS"] = "1"
    out = _run(
        sys.executable, str(CLI), "slurm", "--study", str(work / "sl.toml"),
        "--workers", "3", "--gpus-per-worker", "0", "--cpus-per-worker", "1",
        "--time", "30:00", "--signal-seconds", "60", "--heartbeat", "2", "--submit",
        cwd=work, env=env,
    )  # fmt: skip
    print(out)
    server = re.search(r"MLflow server job: (\d+)", out).group(1)
    array = re.search(r"workers: job array (\d+)", out).group(1)
    final = re.search(r"final retrain: job (\d+)", out).group(1)
    folder = work / "slurm" / "sl"

    # SIGUSR1 to one task's batch shell, as SLURM sends it ahead of a time limit
    warned = _wait_for(
        lambda: _checkpointed_trial_of_task(work, "0") or _checkpointed_trial_of_task(work, "1"),
        "a checkpointed trial in task 0 or 1",
    )
    warned_task = warned.user_attrs["slurm_array_task_id"]
    _run("scancel", "--signal=USR1", "--batch", f"{array}_{warned_task}")
    print(f"SIGUSR1 to task {array}_{warned_task} running trial {warned.number}")

    # SIGKILL to another task's worker: no warning, no checkpoint on the way out
    others = [task for task in ("0", "1", "2") if task != warned_task]
    killed = _wait_for(
        lambda: next(
            (t for task in others if (t := _checkpointed_trial_of_task(work, task))),
            None,
        ),
        "a checkpointed trial in another task",
    )
    os.kill(int(killed.system_attrs["worker"]["pid"]), signal.SIGKILL)
    print(f"SIGKILL to the worker of task {killed.user_attrs['slurm_array_task_id']}, "
          f"trial {killed.number}")  # fmt: skip

    _wait_for(lambda: not _queue(), "every job to end", timeout=900)
    logs = {p.name: p.read_text() for p in folder.glob("*.log")}
    for name, text in sorted(logs.items()):
        print(f"--- {name}\n{text[-3000:]}")

    # every job left its log in slurm/<study>/
    assert {f"worker-{array}_{task}.log" for task in "012"} <= set(logs)
    assert f"final-{final}.log" in logs and f"mlflow-server-{server}.log" in logs
    # the warned task requeued itself and ran again (its second start appends to its log)
    assert "start 1" in logs[f"worker-{array}_{warned_task}.log"]

    study = _study(work)
    trials = study.trials
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == N_TRIALS
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    # no configuration ran twice, except a marked retry continuing its lost trial
    fresh = [t for t in trials if "retry_of" not in t.user_attrs]
    assert len({tuple(sorted(t.params.items())) for t in fresh}) == len(fresh)
    for retry in (t for t in trials if "retry_of" in t.user_attrs):
        assert retry.params == trials[retry.user_attrs["retry_of"]].params
    # both interrupted trials were continued from their checkpoints
    for lost in (warned, killed):
        chain = _continuations(trials, lost)
        assert chain[0].user_attrs["resumed_from_epoch"] >= 1, chain[0].user_attrs
        assert chain[-1].state in (TrialState.COMPLETE, TrialState.PRUNED)
    # where each trial ran is on it
    for t in trials:
        by_a_task = t.user_attrs.get("slurm_array_job_id") == array
        assert by_a_task or t.user_attrs.get("slurm_job_id") == final, t.user_attrs
        assert t.user_attrs["node"] == socket.gethostname()

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{work / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("sl")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    running = [(r.info.run_name, r.data.tags.get("cifar_search.kind")) for r in runs]
    running = [name for name, r in zip(running, runs, strict=True) if r.info.status == "RUNNING"]
    assert not running
    # one parent run for the study, however many workers started at once
    assert len([r for r in runs if r.data.tags.get("cifar_search.kind") == "study"]) == 1
    trial_runs = [r for r in runs if r.data.tags.get("cifar_search.kind") == "trial"]
    assert all(r.data.tags["cifar_search.node"] == socket.gethostname() for r in trial_runs)
    assert {r.data.tags.get("cifar_search.slurm_array_task_id") for r in trial_runs} <= {
        "0", "1", "2", None,
    }  # fmt: skip
    # the final job retrained the best trial once (one seed), after the array
    finals = [r for r in runs if r.data.tags.get("cifar_search.kind") == "final"]
    assert len(finals) == 1 and finals[0].info.status == "FINISHED"

    # Submitting again (how a stopped study is continued) does nothing twice: every task
    # finds the study done and exits 0, and the final job finds the retrain done.
    out = _run("bash", str(folder / "submit.sh"), cwd=work, env=env)
    _wait_for(lambda: not _queue(), "the second submission to end", timeout=600)
    assert len(_study(work).trials) == len(trials)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    assert len([r for r in runs if r.data.tags.get("cifar_search.kind") == "final"]) == 1
    second_final = re.search(r"final retrain: job (\d+)", out).group(1)
    text = (folder / f"final-{second_final}.log").read_text()
    assert "worker ended with exit code 0" in text
