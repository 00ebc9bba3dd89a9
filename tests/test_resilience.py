"""No lost work: real worker processes, real signals, a real journal storage and MLflow.

A study of short CPU trials is killed (SIGKILL), interrupted (SIGINT, SIGTERM) and run by
three independent processes at once; each time the storage and MLflow must stay consistent.
A process that is to be signalled mid-trial runs a study whose trials cannot finish
(``VICTIM_EPOCHS``), so that the signal never lands after the work is already done; the
study file is then rewritten with short trials for the resumed run.

Every ``cli.py`` process comes from the fork server (tests/forkserver.py): a new process
of its own, with its imports already done. The workers that ``search --workers`` starts,
and the processes killed while they create the MLflow store, are started as plain
``python`` processes.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import forkserver
import optuna
import pytest
from in_process import run_cli
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState
from resilience_helpers import ROOT, env_for, finished, mlflow_trial_runs, spawn_cli, study_file

VICTIM_EPOCHS = 100_000  # a trial that is still running whenever the signal is sent


def _study_file(work: Path, epochs: int, n_trials: int = 3) -> Path:
    return study_file(work, epochs, n_trials)


def _start(work: Path, *args: str) -> forkserver.Forked:
    """``cli.py search`` on the study, a new process (used as ``subprocess.Popen``)."""
    return spawn_cli(work, "search", "--study", work / "res.toml", "--no-retrain", *args)


def _study(work: Path) -> optuna.Study:
    storage = JournalStorage(JournalFileBackend(str(work / "mlruns" / "res.journal")))
    return optuna.load_study(study_name="res", storage=storage)


def _wait_for_running_trial(work: Path, proc: forkserver.Forked, timeout: float = 120) -> int:
    """The number of a RUNNING trial that has reported at least one epoch."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        if (work / "mlruns" / "res.journal").exists():
            try:
                running = [
                    t
                    for t in _study(work).trials
                    if t.state == TrialState.RUNNING and t.intermediate_values
                ]
            except KeyError:  # study not created yet
                running = []
            if running:
                return running[0].number
        time.sleep(0.2)
    raise AssertionError("no trial started running")


def _hold_lock(work: Path, code: str) -> forkserver.Forked:
    """A process that takes a lock the search needs (``code`` acquires it) and keeps it
    until it is killed; returns once the lock is held."""
    script = f"import time\n{code}\nprint('held', flush=True)\ntime.sleep(600)\n"
    holder = forkserver.spawn_code(script, work, env_for(work))
    holder.wait_for_output("held\n")
    return holder


HOLD_JOURNAL_LOCK = """from search.store import open_storage
open_storage("res", None)._backend._lock.acquire()"""
HOLD_CLAIM_LOCK = """from search.store import file_lock
from search.store import claim_lock_path
claim = file_lock(claim_lock_path("res", None))  # kept referenced: held until the exit
claim.__enter__()"""


def _waiting_on_a_lock(pid: int) -> bool:
    """True while ``pid`` is blocked on a file lock (the kernel lists it in /proc/locks)."""
    return any(
        " -> " in f" {line} " and f" {pid} " in line
        for line in Path("/proc/locks").read_text().splitlines()
    )


def _sigterm_once_blocked(proc: forkserver.Forked) -> str:
    """Wait until ``proc`` is blocked on a file lock, send SIGTERM, and check that it ended
    with code 143 (128 + SIGTERM) within the 10 s a worker is allowed; returns its stderr."""
    deadline = time.time() + 120
    while not _waiting_on_a_lock(proc.pid):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - sent <= 10, "SIGTERM took more than 10 s to end the worker"
    assert proc.returncode == 143, err
    return err


def _distinct_configs(study: optuna.Study) -> bool:
    """No two finished trials share their parameters, apart from marked retries."""
    firsts = [
        tuple(sorted(t.params.items())) for t in finished(study) if "retry_of" not in t.user_attrs
    ]
    return len(firsts) == len(set(firsts))


@pytest.mark.slow
def test_kill_9_then_resume_retries_the_lost_trial_once(tmp_path):
    _study_file(tmp_path, epochs=VICTIM_EPOCHS)
    proc = _start(tmp_path)
    killed = _wait_for_running_trial(tmp_path, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    _study_file(tmp_path, epochs=2)
    rerun = _start(tmp_path)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert f"trial {killed} FAILED (worker lost" in out
    assert f"(retry of {killed}) complete" in out

    study = _study(tmp_path)
    lost = study.trials[killed]
    assert lost.state == TrialState.FAIL and "worker lost" in lost.user_attrs["fail_reason"]
    retries = [t for t in study.trials if t.user_attrs.get("retry_of") == killed]
    assert len(retries) == 1 and retries[0].params == lost.params
    assert len(finished(study)) == 3
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    # the resumed process draws new points instead of repeating the first run's
    assert _distinct_configs(study)
    runs = mlflow_trial_runs(tmp_path)
    assert [r.info.status for r in runs[killed]] == ["FAILED"]
    assert all(len(v) == 1 for v in runs.values())
    assert runs[retries[0].number][0].data.tags["cifar_search.retry_of"] == str(killed)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_fails_the_trial_exits_with_its_code_and_resumes(tmp_path, signum):
    _study_file(tmp_path, epochs=VICTIM_EPOCHS)
    proc = _start(tmp_path)
    interrupted = _wait_for_running_trial(tmp_path, proc)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err  # 130 after Ctrl-C, 143 after SIGTERM
    assert "Traceback" not in err and "interrupted" in err

    study = _study(tmp_path)
    trial = study.trials[interrupted]
    assert trial.state == TrialState.FAIL, err
    reason = f"interrupted ({signal.Signals(signum).name})"
    assert trial.user_attrs["fail_reason"] == reason
    runs = mlflow_trial_runs(tmp_path)
    assert runs[interrupted][0].info.status == "FAILED"
    assert runs[interrupted][0].data.tags["cifar_search.reason"] == reason

    _study_file(tmp_path, epochs=2)
    rerun = _start(tmp_path)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    study = _study(tmp_path)
    assert len(finished(study)) == 3
    assert all(
        run.info.status != "RUNNING" for v in mlflow_trial_runs(tmp_path).values() for run in v
    )


@pytest.mark.slow
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
    assert _distinct_configs(study)  # each process seeds its sampler per trial
    runs = mlflow_trial_runs(tmp_path)
    assert sorted(runs) == list(range(7)) and all(len(v) == 1 for v in runs.values())
    assert all(v[0].info.status == "FINISHED" for v in runs.values())


@pytest.mark.slow
def test_workers_flag_runs_worker_processes(tmp_path):
    _study_file(tmp_path, epochs=2, n_trials=4)
    proc = spawn_cli(
        tmp_path, "search", "--study", tmp_path / "res.toml", "--workers", "2", "--no-retrain"
    )
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert "starting 2 workers" in out and "[worker 1]" in out
    assert len(finished(_study(tmp_path))) == 4


@pytest.mark.slow
def test_a_worker_killed_holding_the_journal_lock_does_not_stop_the_study(tmp_path):
    """A process dies (kill -9) while it holds the journal's write lock, exactly as a
    worker killed mid-write does; the next search must still run to its end, at once."""
    _study_file(tmp_path, epochs=1, n_trials=2)
    holder = _hold_lock(tmp_path, HOLD_JOURNAL_LOCK)
    holder.kill()
    holder.wait()
    proc = _start(tmp_path)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError("search still waiting on the dead process's journal lock") from None
    assert proc.returncode == 0, err
    assert len(finished(_study(tmp_path))) == 2


@pytest.mark.slow
def test_a_line_torn_by_a_killed_writer_is_cut_off(tmp_path):
    _study_file(tmp_path, epochs=1, n_trials=1)
    first = _start(tmp_path)
    assert first.wait(timeout=300) == 0
    journal = tmp_path / "mlruns" / "res.journal"
    lines_before = journal.read_bytes().count(b"\n")
    with journal.open("ab") as fh:  # what a writer killed in the middle of write() leaves
        fh.write(b'{"op_code":6,"worker_id":"dead","trial_id":0,"user_at')
    _study_file(tmp_path, epochs=1, n_trials=2)
    rerun = _start(tmp_path)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    study = _study(tmp_path)  # Optuna reads the whole file again: no torn line inside
    assert len(finished(study)) == 2
    assert journal.read_bytes().count(b"\n") > lines_before and b"dead" not in journal.read_bytes()


@pytest.mark.slow
def test_sigterm_while_waiting_for_the_claim_lock_exits_promptly(tmp_path):
    _study_file(tmp_path, epochs=1, n_trials=2)
    holder = _hold_lock(tmp_path, HOLD_CLAIM_LOCK)
    try:
        err = _sigterm_once_blocked(_start(tmp_path))
        assert "Traceback" not in err, err
    finally:
        holder.kill()
        holder.wait()
    assert not _study(tmp_path).trials  # it was waiting to create one: nothing half-made


@pytest.mark.slow
def test_sigterm_ends_a_worker_stuck_on_a_held_journal_lock_within_10s(tmp_path):
    """The journal lock is held by a live, hung process while a trial runs: the worker can
    neither report its epoch nor record its failure. SIGTERM must still end it within
    10 s, and the next run must recover the trial it left RUNNING."""
    _study_file(tmp_path, epochs=VICTIM_EPOCHS, n_trials=2)
    proc = _start(tmp_path)
    stuck = _wait_for_running_trial(tmp_path, proc)
    holder = _hold_lock(tmp_path, HOLD_JOURNAL_LOCK)
    try:
        _sigterm_once_blocked(proc)  # its next epoch report blocks on the lock
    finally:
        holder.kill()
        holder.wait()
    _study_file(tmp_path, epochs=1, n_trials=2)
    rerun = _start(tmp_path)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    study = _study(tmp_path)
    assert study.trials[stuck].state == TrialState.FAIL and len(finished(study)) == 2
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    assert all(r.info.status != "RUNNING" for v in mlflow_trial_runs(tmp_path).values() for r in v)


@pytest.mark.slow
def test_a_worker_killed_while_creating_the_mlflow_store_leaves_no_broken_store(tmp_path):
    """MLflow builds its SQLite store in many migration steps (about a second); a worker
    killed in the middle must not leave a half-made store that no later run can open."""
    db = tmp_path / "mlruns" / "mlflow.db"
    script = "from search.store import Tracker\nTracker('res')\n"
    env = {**env_for(tmp_path), "PYTHONPATH": str(ROOT)}
    for delay in (0.1, 0.3, 0.5):
        creator = subprocess.Popen(
            [sys.executable, "-c", script],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # kill it once the store's file has appeared: migrations are then under way
        deadline = time.time() + 60
        while (
            not (db.exists() or db.with_name("mlflow.db.creating").exists())
            and creator.poll() is None
        ):
            assert time.time() < deadline
            time.sleep(0.01)
        time.sleep(delay)
        creator.kill()
        creator.wait()
        if db.exists():
            break
    _study_file(tmp_path, epochs=1, n_trials=1)
    proc = _start(tmp_path)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert len(mlflow_trial_runs(tmp_path)[0]) == 1


@pytest.mark.slow
def test_sigterm_to_a_workers_parent_ends_every_worker(tmp_path):
    _study_file(tmp_path, epochs=VICTIM_EPOCHS, n_trials=4)
    parent = spawn_cli(
        tmp_path, "search", "--study", tmp_path / "res.toml", "--workers", "2", "--no-retrain"
    )
    deadline = time.time() + 120
    running: list = []
    while len(running) < 2:
        assert parent.poll() is None and time.time() < deadline, parent.communicate()
        time.sleep(0.3)
        if (tmp_path / "mlruns" / "res.journal").exists():
            try:
                running = [
                    t
                    for t in _study(tmp_path).trials
                    if t.state == TrialState.RUNNING and t.intermediate_values
                ]
            except KeyError:
                running = []
    workers = {t.system_attrs["worker"]["pid"] for t in running}
    parent.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    _, err = parent.communicate(timeout=30)
    assert time.monotonic() - sent <= 10, "SIGTERM took more than 10 s to end the workers"
    assert parent.returncode == 143 and "Traceback" not in err, err
    for pid in workers:  # no worker outlives its parent
        assert (
            not Path(f"/proc/{pid}").exists()
            or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
        )
    study = _study(tmp_path)
    assert {
        t.user_attrs.get("fail_reason")
        for t in study.trials
        if t.number in {r.number for r in running}
    } == {"interrupted (SIGTERM)"}
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]


def _kill_and_restart_scenario(
    work: Path, rng: random.Random, *, workers: int = 3, kills: int = 5, n_trials: int = 8
) -> int:
    """3 workers on one journal; ``kills`` times a random one is killed (kill -9) at a
    random moment and a new one started in its place; then one more run on its own.

    Returns how many kills hit a live worker of an unfinished study. The kills come every
    0.2-1.5 s and a trial trains 20 epochs (about a second), so that they land while the
    study runs. (When each worker spent seconds on its imports, kills every 0.5-6 s and
    trials of 3 epochs did that; with workers that start at once, those kills came after the
    study had finished.)"""
    _study_file(work, epochs=20, n_trials=n_trials)
    procs = [_start(work, "--heartbeat", "2") for _ in range(workers)]
    hits = 0
    for _ in range(kills):
        time.sleep(rng.uniform(0.2, 1.5))
        victim = rng.randrange(workers)
        hits += procs[victim].poll() is None and len(finished(_study(work))) < n_trials
        procs[victim].kill()
        procs[victim].communicate()
        procs[victim] = _start(work, "--heartbeat", "2")
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    last = _start(work, "--heartbeat", "2")
    _, err = last.communicate(timeout=600)
    assert last.returncode == 0, err
    return hits


@pytest.mark.slow
def test_three_workers_killed_at_random_moments_finish_exactly_n_trials(tmp_path):
    seed = random.randrange(10**6)
    print(f"random kill schedule seed: {seed}")  # shown when the test fails
    hits = _kill_and_restart_scenario(tmp_path, random.Random(seed))
    # the scenario itself: most kills must hit a worker while the study still ran
    assert hits >= 3, f"only {hits} of 5 kills hit a running study"
    study = _study(tmp_path)
    assert len(finished(study)) == 8
    assert not [t for t in study.trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert _distinct_configs(study)
    runs = mlflow_trial_runs(tmp_path)
    assert all(r.info.status != "RUNNING" for v in runs.values() for r in v)
    for t in finished(study):
        assert [r.info.status for r in runs[t.number]] == [
            "FINISHED" if t.state == TrialState.COMPLETE else "KILLED"
        ]


@pytest.mark.parametrize(
    "args,env_extra,fragment",
    [
        (["--storage", "postgresql://alice:s3cret@127.0.0.1:9/optuna"], {}, "--storage"),
        (
            [],
            {
                "MLFLOW_TRACKING_URI": "http://127.0.0.1:9",
                "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
                "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
            },
            "MLFLOW_TRACKING_URI",
        ),
    ],
)
def test_unreachable_storage_or_mlflow_is_one_line_exit_2(tmp_path, args, env_extra, fragment):
    _study_file(tmp_path, epochs=1)
    env = {"MLFLOW_TRACKING_URI": env_for(tmp_path)["MLFLOW_TRACKING_URI"], **env_extra}
    result = run_cli("search", "--study", tmp_path / "res.toml", *args, cwd=tmp_path, env=env)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and "s3cret" not in result.output


def test_gpu_workers_are_pinned_per_gpu():
    from search.engine import WORKER_ENV, worker_envs

    envs = worker_envs(1, ["0", "3"], trials_per_gpu=2)
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0", "0", "3", "3"]
    assert [e[WORKER_ENV] for e in envs] == ["0", "1", "2", "3"]
    cpu = worker_envs(3, None, trials_per_gpu=2)
    assert len(cpu) == 3  # CPU workers keep the parent's CUDA_VISIBLE_DEVICES, whatever it is
    assert all(e.get("CUDA_VISIBLE_DEVICES") == os.environ.get("CUDA_VISIBLE_DEVICES") for e in cpu)


def test_gpu_workers_default_to_the_measured_trials_per_gpu(tmp_path):
    from search.config import TRIALS_PER_GPU
    from search.engine import worker_envs

    envs = worker_envs(1, ["0", "1"])
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0"] * TRIALS_PER_GPU + ["1"] * (
        TRIALS_PER_GPU
    )
    help_text = run_cli("search", "--help", cwd=tmp_path).output
    assert f"default: {TRIALS_PER_GPU}," in " ".join(help_text.split())


def test_gpus_without_cuda_is_one_line_before_any_trial(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a CPU machine
    _study_file(tmp_path, epochs=1)
    result = run_cli(
        "search",
        "--study",
        tmp_path / "res.toml",
        "--gpus",
        "0",
        cwd=tmp_path,
        env=env_for(tmp_path),
    )
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert "--gpus = '0'" in line and "no CUDA GPU" in line
    assert not (tmp_path / "mlruns" / "res.journal").exists()  # no study, no failed trials


def test_workers_share_the_cpu_cores(monkeypatch):
    from search.engine import worker_envs

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))  # 16 cores given
    assert {e["OMP_NUM_THREADS"] for e in worker_envs(4, None, 1)} == {"4"}
    assert {e["OMP_NUM_THREADS"] for e in worker_envs(1, ["0", "1"], 4)} == {"2"}
    assert {e["OMP_NUM_THREADS"] for e in worker_envs(32, None, 1)} == {"1"}
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's own setting wins
    assert {e["OMP_NUM_THREADS"] for e in worker_envs(4, None, 1)} == {"3"}
