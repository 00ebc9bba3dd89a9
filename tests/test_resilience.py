"""No lost work: real worker processes, real signals, a real journal storage and MLflow.

A study of short CPU trials is killed (SIGKILL), interrupted (SIGINT) and run by three
independent processes at once; each time the storage and MLflow must stay consistent."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState
from resilience_helpers import ROOT, STUDY, env_for, finished, mlflow_trial_runs

def _study_file(work: Path, epochs: int, n_trials: int = 3) -> Path:
    path = work / "res.toml"
    path.write_text(STUDY.replace("EPOCHS", str(epochs)).replace("n_trials = 3",
                                                                   f"n_trials = {n_trials}"))
    return path


def _start(work: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "search", "--study",
                             str(work / "res.toml"), "--no-retrain", *args], cwd=work,
                            env=env_for(work), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _study(work: Path) -> optuna.Study:
    storage = JournalStorage(JournalFileBackend(str(work / "mlruns" / "res.journal")))
    return optuna.load_study(study_name="res", storage=storage)


def _wait_for_running_trial(work: Path, proc: subprocess.Popen, timeout: float = 120) -> int:
    """The number of a RUNNING trial that has reported at least one epoch."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        if (work / "mlruns" / "res.journal").exists():
            try:
                running = [t for t in _study(work).trials
                           if t.state == TrialState.RUNNING and t.intermediate_values]
            except KeyError:  # study not created yet
                running = []
            if running:
                return running[0].number
        time.sleep(0.2)
    raise AssertionError("no trial started running")


def test_kill_9_then_resume_retries_the_lost_trial_once(tmp_path):
    _study_file(tmp_path, epochs=25)
    proc = _start(tmp_path)
    killed = _wait_for_running_trial(tmp_path, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    rerun = _start(tmp_path)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert f"trial {killed} FAILED (worker lost" in out

    study = _study(tmp_path)
    lost = study.trials[killed]
    assert lost.state == TrialState.FAIL and "worker lost" in lost.user_attrs["fail_reason"]
    retries = [t for t in study.trials if t.user_attrs.get("retry_of") == killed]
    assert len(retries) == 1 and retries[0].params == lost.params
    assert len(finished(study)) == 3
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    runs = mlflow_trial_runs(tmp_path)
    assert [r.info.status for r in runs[killed]] == ["FAILED"]
    assert all(len(v) == 1 for v in runs.values())


def test_ctrl_c_fails_the_trial_exits_130_and_resumes(tmp_path):
    _study_file(tmp_path, epochs=25)
    proc = _start(tmp_path)
    interrupted = _wait_for_running_trial(tmp_path, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err

    study = _study(tmp_path)
    trial = study.trials[interrupted]
    assert trial.state == TrialState.FAIL and trial.user_attrs["fail_reason"] == "interrupted"
    runs = mlflow_trial_runs(tmp_path)
    assert runs[interrupted][0].info.status == "FAILED"
    assert runs[interrupted][0].data.tags["cifar_search.reason"] == "interrupted"

    rerun = _start(tmp_path)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    study = _study(tmp_path)
    assert len(finished(study)) == 3
    assert all(run.info.status != "RUNNING" for v in mlflow_trial_runs(tmp_path).values()
               for run in v)


def test_three_independent_processes_finish_exactly_n_trials(tmp_path, monkeypatch):
    _study_file(tmp_path, epochs=3, n_trials=7)
    # a user's baseline, enqueued before the workers start, must run exactly once
    from search.engine import open_study
    from search.study import load_study

    monkeypatch.chdir(tmp_path)
    open_study(load_study(str(tmp_path / "res.toml")), None).enqueue_trial({"optim.lr": 0.1234})
    procs = [_start(tmp_path) for _ in range(3)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    study = _study(tmp_path)
    assert len(finished(study)) == 7 and len(study.trials) == 7
    assert sum(t.params["optim.lr"] == 0.1234 for t in study.trials) == 1
    runs = mlflow_trial_runs(tmp_path)
    assert sorted(runs) == list(range(7)) and all(len(v) == 1 for v in runs.values())
    assert all(v[0].info.status == "FINISHED" for v in runs.values())


def test_workers_flag_runs_worker_processes(tmp_path):
    _study_file(tmp_path, epochs=2, n_trials=4)
    proc = subprocess.run([sys.executable, str(ROOT / "cli.py"), "search", "--study",
                           str(tmp_path / "res.toml"), "--workers", "2", "--no-retrain"],
                          cwd=tmp_path, env=env_for(tmp_path), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "starting 2 workers" in proc.stdout and "[worker 1]" in proc.stdout
    assert len(finished(_study(tmp_path))) == 4


@pytest.mark.parametrize("args,env_extra,fragment", [
    (["--storage", "postgresql://alice:s3cret@127.0.0.1:9/optuna"], {}, "--storage"),
    ([], {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
          "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}, "MLFLOW_TRACKING_URI"),
])
def test_unreachable_storage_or_mlflow_is_one_line_exit_2(tmp_path, args, env_extra, fragment):
    _study_file(tmp_path, epochs=1)
    env = {**env_for(tmp_path), **env_extra}
    proc = subprocess.run([sys.executable, str(ROOT / "cli.py"), "search", "--study",
                           str(tmp_path / "res.toml"), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and "s3cret" not in proc.stderr


def test_gpu_workers_are_pinned_per_gpu():
    from search.workers import WORKER_ENV, worker_envs

    envs = worker_envs(1, ["0", "3"], trials_per_gpu=2)
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0", "0", "3", "3"]
    assert [e[WORKER_ENV] for e in envs] == ["0", "1", "2", "3"]
    cpu = worker_envs(3, None, trials_per_gpu=2)
    assert len(cpu) == 3  # CPU workers keep the parent's CUDA_VISIBLE_DEVICES, whatever it is
    assert all(e.get("CUDA_VISIBLE_DEVICES") == os.environ.get("CUDA_VISIBLE_DEVICES") for e in cpu)


def test_workers_share_the_cpu_cores(monkeypatch):
    from search.workers import worker_envs

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert {e["OMP_NUM_THREADS"] for e in worker_envs(4, None, 1)} == {"4"}
    assert {e["OMP_NUM_THREADS"] for e in worker_envs(1, ["0", "1"], 4)} == {"2"}
    assert {e["OMP_NUM_THREADS"] for e in worker_envs(32, None, 1)} == {"1"}
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's own setting wins
    assert {e["OMP_NUM_THREADS"] for e in worker_envs(4, None, 1)} == {"3"}
