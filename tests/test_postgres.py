"""Many machines' recipe on one: a real PostgreSQL server on loopback as the Optuna
storage, three worker processes, one killed mid-trial (SIGKILL). The ``cli.py`` processes
come from the fork server (tests/forkserver.py): new processes with their imports done."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import mlflow
import optuna
import pytest
from optuna.trial import TrialState
from resilience_helpers import env_for, finished, mlflow_trial_runs, spawn_cli, study_file

# a real server and several worker processes; one server (the module's fixture) for both
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("postgres")]


def _pg_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


def _as_postgres(cmd: list[str]) -> list[str]:
    # initdb refuses to run as root: run the server as Debian's postgres user then
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip(
            "PostgreSQL server binaries not found (.ci/run installs Debian's "
            "postgresql package; install it with apt-get install postgresql)"
        )
    data = Path(tempfile.mkdtemp(prefix="pgtest-"))
    os.chmod(data, 0o755)
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    port = _free_port()
    subprocess.run(
        _as_postgres(
            [str(bindir / "initdb"), "-D", str(data / "db"), "-A", "trust", "-U", "postgres"]
        ),
        check=True,
        capture_output=True,
    )
    subprocess.run(
        _as_postgres(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(data / "db"),
                "-l",
                str(data / "log"),
                "-w",
                "-o",
                f"-p {port} -k {data} -c listen_addresses=127.0.0.1",
                "start",
            ]
        ),
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://postgres:pw@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_postgres(
                [str(bindir / "pg_ctl"), "-D", str(data / "db"), "-m", "immediate", "stop"]
            ),
            capture_output=True,
        )
        shutil.rmtree(data, ignore_errors=True)


def test_three_workers_on_postgres_one_killed(tmp_path, postgres_url):
    study_file(tmp_path, epochs=5, n_trials=6)
    args = [
        "search",
        "--study",
        tmp_path / "res.toml",
        "--storage",
        postgres_url,
        "--no-retrain",
        "--heartbeat",
        "1",
    ]
    # One storage for the polling below (one connection pool), opened before the workers
    # start. (Workers creating the tables together is the next test's scenario.)
    polling = optuna.storages.RDBStorage(postgres_url)
    # the victim's trials cannot finish before it is killed; the others' are short
    victim_args = [*args, "--set", "optim.epochs=100000"]
    procs = [spawn_cli(tmp_path, *a) for a in (victim_args, args, args)]
    victim = procs[0]
    deadline, killed = time.time() + 180, None
    while killed is None and time.time() < deadline:
        assert victim.poll() is None, victim.communicate()
        try:
            study = optuna.load_study(study_name="res", storage=polling)
            mine = [
                t
                for t in study.trials
                if t.state == TrialState.RUNNING
                and t.intermediate_values
                and t.system_attrs.get("worker", {}).get("pid") == victim.pid
            ]
            if mine:
                killed = mine[0].number
        except KeyError:
            pass
        time.sleep(0.3)
    assert killed is not None, "the victim never ran a trial"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    for p in procs[1:]:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    study = optuna.load_study(study_name="res", storage=postgres_url)
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    assert len(finished(study)) == 6
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    assert study.trials[killed].state == TrialState.FAIL
    # marked as on a journal storage, and the one repeat of a configuration
    retries = [t for t in study.trials if t.user_attrs.get("retry_of") == killed]
    assert len(retries) == 1 and retries[0].params == study.trials[killed].params
    assert retries[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    firsts = [tuple(t.params.items()) for t in finished(study) if "retry_of" not in t.user_attrs]
    assert len(firsts) == len(set(firsts))
    runs = mlflow_trial_runs(tmp_path)
    assert [r.info.status for r in runs[killed]] == ["FAILED"]
    assert sorted(runs) == numbers
    # the password never reaches MLflow or the Optuna study's attributes
    client = mlflow.MlflowClient(tracking_uri=env_for(tmp_path)["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("res")
    parent = client.search_runs([experiment.experiment_id], "tags.`cifar_search.kind` = 'study'")[0]
    assert parent.data.tags["storage"].startswith("postgresql://postgres:***@127.0.0.1")
    assert ":pw@" not in str(parent.data.tags) and ":pw@" not in str(study.user_attrs)


def test_a_trial_whose_worker_died_before_its_heartbeat_is_retried(tmp_path, postgres_url):
    """A worker that dies inside ``study.ask`` leaves a RUNNING trial that Optuna's heartbeat
    check never sees (no heartbeat was ever recorded). The study must not wait for it."""
    study_file(tmp_path, epochs=1, n_trials=2, name="orphan")
    study = optuna.create_study(study_name="orphan", storage=postgres_url, direction="maximize")
    orphan = study.ask()
    orphan.suggest_float("optim.lr", 0.01, 0.2, log=True)
    proc = spawn_cli(
        tmp_path,
        "search",
        "--study",
        tmp_path / "orphan.toml",
        "--storage",
        postgres_url,
        "--no-retrain",
        "--heartbeat",
        "1",
    )
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    study = optuna.load_study(study_name="orphan", storage=postgres_url)
    assert study.trials[orphan.number].state == TrialState.FAIL
    retries = [t for t in study.trials if t.user_attrs.get("retry_of") == orphan.number]
    assert len(retries) == 1 and retries[0].params == study.trials[orphan.number].params
    assert len(finished(study)) == 2


def test_workers_opening_a_new_database_at_once_all_get_the_storage(tmp_path, postgres_url):
    # Optuna creates its tables without a lock: workers of a new study on a new database
    # (`--gpus 0,1,2,3` on a fresh server) collide there unless open_storage copes.
    import sqlalchemy
    from forkserver import spawn_code

    for round_ in range(3):
        name = f"fresh_{round_}"
        admin = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
        admin.dispose()
        url = postgres_url.rsplit("/", 1)[0] + f"/{name}"
        start = time.time() + 1.5  # every child is forked and waiting by then
        code = (
            "import time\n"
            "from search.store import open_storage\n"
            f"time.sleep(max(0.0, {start} - time.time()))\n"
            f"open_storage('res', {url!r})\n"
        )
        procs = [spawn_code(code, tmp_path, env_for(tmp_path)) for _ in range(4)]
        results = [p.communicate(timeout=60) for p in procs]
        assert [p.returncode for p in procs] == [0] * 4, results
