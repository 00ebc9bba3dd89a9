"""``cli.py slurm`` without a cluster: the scripts it writes (checked by bash and read for
what SLURM needs), its checks before anything is written, and ``--submit`` without sbatch.
The scripts' behaviour on a real cluster is tests/test_slurm.py's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from in_process import run_cli

from search.cluster import time_limit_seconds
from search.config import TRIALS_PER_GPU
from search.errors import ConfigError
from search.store.filesystems import MOUNTINFO_ENV


def _slurm(tmp_path: Path, study_file, *args: str, env: dict | None = None):
    study = study_file(study={"n_trials": 4})
    return run_cli("slurm", "--study", study, *args, cwd=tmp_path, env=env)


def test_the_scripts_ask_slurm_for_the_warning_signal_and_requeue(tmp_path, study_file):
    result = _slurm(
        tmp_path, study_file, "--workers", "5", "--time", "4:00:00", "--partition", "gpu",
        "--account", "lab", "--gpus-per-worker", "2", "--trials-per-gpu", "2", "--mem", "32G",
        "--signal-seconds", "240", "--sbatch=--qos=long", "--sbatch", "#SBATCH --constraint=a100",
        "--set", "optim.epochs=3", "--heartbeat", "30",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    folder = tmp_path / "slurm" / "tiny"
    names = {"mlflow-server.sbatch", "workers.sbatch", "final.sbatch", "submit.sh"}
    assert {p.name for p in folder.iterdir()} == names
    assert f"bash {folder / 'submit.sh'}" in result.output
    for name in names:  # bash can parse every one
        check = subprocess.run(["bash", "-n", str(folder / name)], capture_output=True, text=True)
        assert check.returncode == 0, (name, check.stderr)

    workers = (folder / "workers.sbatch").read_text()
    for line in (
        "#SBATCH --array=0-4",
        "#SBATCH --requeue",
        "#SBATCH --open-mode=append",
        "#SBATCH --signal=B:USR1@240",
        "#SBATCH --time=4:00:00",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=lab",
        "#SBATCH --gres=gpu:2",
        "#SBATCH --mem=32G",
        "#SBATCH --qos=long",
        "#SBATCH --constraint=a100",
        f"#SBATCH --output={folder}/worker-%A_%a.log",
    ):
        assert line in workers, line
    assert f"cd {tmp_path.resolve()}" in workers  # where mlruns/ is, wherever SLURM starts
    assert "trap 'echo \"[$(date -Is)] SIGTERM: saving\"; kill -TERM $worker' TERM" in workers
    assert "export CIFAR_SEARCH_GRACE_S=210" in workers  # most of the 240 s warning
    assert f"{sys.executable} {Path('cli.py').resolve()} search" in workers
    for option in ("--no-retrain", "--set optim.epochs=3", "--heartbeat 30.0"):
        assert option in workers
    assert '--gpus "$CUDA_VISIBLE_DEVICES"' in workers and "--trials-per-gpu 2" in workers
    assert 'scontrol requeue "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"' in workers
    final = (folder / "final.sbatch").read_text()
    assert "--no-retrain" not in final and "--set optim.epochs=3" in final
    submit = (folder / "submit.sh").read_text()
    assert "--dependency=afterany:" in submit and "--dependency=after:" in submit
    assert "already running: reused" in submit  # never two servers on one store
    server = (folder / "mlflow-server.sbatch").read_text()
    assert "requeue" not in server and "--time" not in server  # outlives the study


@pytest.mark.parametrize(
    "args, worker_flags, threads",
    [
        # TRIALS_PER_GPU on a task's GPU: its worker processes share the task's cores
        (
            [],
            f' --gpus "$CUDA_VISIBLE_DEVICES" --trials-per-gpu {TRIALS_PER_GPU}',
            f"/ {TRIALS_PER_GPU}",
        ),
        (["--trials-per-gpu", "1"], "", "${SLURM_CPUS_PER_TASK:-1}  #"),  # one plain worker
        (["--gpus-per-worker", "0"], "", "${SLURM_CPUS_PER_TASK:-1}  #"),  # CPU-only tasks
        (["--gpus-per-worker", "2", "--trials-per-gpu", "3"], " --trials-per-gpu 3", "/ 6"),
    ],
)
def test_trials_per_gpu_default_applies_to_tasks_with_gpus(
    tmp_path, study_file, args, worker_flags, threads
):
    result = _slurm(tmp_path, study_file, *args)
    assert result.exit_code == 0, result.output
    folder = tmp_path / "slurm" / "tiny"
    workers = (folder / "workers.sbatch").read_text()
    command = " ".join(workers[workers.index("cli.py") :].replace("\\\n", " ").split())
    assert ("--gpus" in command) == bool(worker_flags)
    assert " ".join(worker_flags.split()) in command
    (omp,) = [line for line in workers.splitlines() if "OMP_NUM_THREADS=" in line]
    assert threads in omp, omp
    # the final job finishes leftovers and retrains: one process unless asked for more
    final = (folder / "final.sbatch").read_text()
    assert ("--trials-per-gpu" in final) == ("--trials-per-gpu" in args and worker_flags != "")


def test_relative_paths_reach_the_jobs_absolute(tmp_path, study_file):
    caller = tmp_path / "caller"
    caller.mkdir()
    study = study_file(study={"n_trials": 4})
    result = run_cli(
        "slurm", "--study", study, "--data-dir", "data", "--checkpoint-dir", "ckpt",
        "--storage", "sqlite:///o.db?timeout=60", cwd=caller, env={"CIFAR_SEARCH_HOME": str(tmp_path)},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    workers = (tmp_path / "slurm" / "tiny" / "workers.sbatch").read_text()
    assert f"--data-dir {caller / 'data'}" in workers
    assert f"--checkpoint-dir {caller / 'ckpt'}" in workers
    assert f"--storage 'sqlite:///{caller / 'o.db'}?timeout=60'" in workers


def test_with_a_tracking_uri_of_its_own_no_server_job_is_written(tmp_path, study_file):
    env = {"MLFLOW_TRACKING_URI": "http://tracking.example:5000"}
    result = _slurm(tmp_path, study_file, "--gpus-per-worker", "0", env=env)
    assert result.exit_code == 0, result.output
    folder = tmp_path / "slurm" / "tiny"
    assert not (folder / "mlflow-server.sbatch").exists()
    assert "gres" not in (folder / "workers.sbatch").read_text()
    for name in ("workers.sbatch", "final.sbatch"):  # a requeued job keeps the store
        text = (folder / name).read_text()
        assert "export MLFLOW_TRACKING_URI=http://tracking.example:5000" in text
    done = subprocess.run(  # the line, run by bash, sets it even where it was not set
        ["bash", "-c", _prologue_line(folder) + 'echo "$MLFLOW_TRACKING_URI"'],
        capture_output=True, text=True, env={"PATH": os.environ["PATH"]},
    )  # fmt: skip
    assert done.stdout == "http://tracking.example:5000\n"


def _prologue_line(folder: Path) -> str:
    text = (folder / "workers.sbatch").read_text()
    return next(line for line in text.splitlines() if "MLFLOW_TRACKING_URI" in line) + "\n"


@pytest.mark.parametrize(
    "uri",
    [
        "postgresql://ana:s3cret@db.example/mlflow",
        "postgresql://ana@db.example/mlflow?password=s3cret",
        "https://s3cret@mlflow.example/",
    ],
)
def test_an_address_with_credentials_is_not_written_and_its_absence_stops_the_jobs(
    tmp_path, study_file, uri
):
    env = {"MLFLOW_TRACKING_URI": uri}
    result = _slurm(tmp_path, study_file, "--gpus-per-worker", "0", env=env)
    assert result.exit_code == 0, result.output
    folder = tmp_path / "slurm" / "tiny"
    for name in ("workers.sbatch", "final.sbatch", "submit.sh"):
        text = (folder / name).read_text()
        assert "s3cret" not in text and "MLFLOW_TRACKING_URI:?" in text, name
    check = _prologue_line(folder) + "echo started"
    bare = {"PATH": os.environ["PATH"]}
    unset = subprocess.run(["bash", "-c", check], capture_output=True, text=True, env=bare)
    assert unset.returncode != 0 and "started" not in unset.stdout
    assert "set MLFLOW_TRACKING_URI to the study store at " in unset.stderr
    assert "db.example/mlflow" in unset.stderr or "mlflow.example/" in unset.stderr
    given = subprocess.run(
        ["bash", "-c", check], capture_output=True, text=True, env={**bare, **env}
    )
    assert given.returncode == 0 and given.stdout == "started\n"
    # submit.sh stops before it submits anything (no sbatch is on this PATH: it would fail
    # differently, "sbatch: command not found")
    submit = subprocess.run(
        ["bash", str(folder / "submit.sh")], capture_output=True, text=True, env=bare
    )
    assert submit.returncode != 0 and "sbatch" not in submit.stderr
    assert "set MLFLOW_TRACKING_URI" in submit.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--time", "4h"], "--time = '4h': expected a SLURM time"),
        (["--time", "5:00", "--signal-seconds", "300"], "--signal-seconds = 300: the warning"),
        (["--set", "optim.lr=0.1"], "optim.lr"),  # a searched key cannot be fixed
        (["--workers", "0"], "--workers"),
        (["--gpus-per-worker", "0", "--trials-per-gpu", "2"], "--trials-per-gpu = 2"),
    ],
)
def test_bad_options_are_one_line_and_nothing_is_written(tmp_path, study_file, args, message):
    result = _slurm(tmp_path, study_file, *args)
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "slurm").exists()


def test_sqlite_on_a_network_filesystem_is_refused(tmp_path, study_file):
    table = tmp_path / "mountinfo"
    table.write_text(f"22 1 0:50 / {tmp_path.resolve()} rw - nfs4 srv:/home rw,vers=4.2\n")
    env = {MOUNTINFO_ENV: str(table)}
    # the workers would share mlruns/mlflow.db: refused without a server job
    result = _slurm(tmp_path, study_file, "--no-mlflow-server", env=env)
    assert result.exit_code == 2, result.output
    assert "MLFLOW_TRACKING_URI" in result.stderr and "SQLite on a network filesystem (nfs4" in (
        result.stderr
    )
    result = _slurm(tmp_path, study_file, "--storage", f"sqlite:///{tmp_path}/o.db", env=env)
    assert result.exit_code == 2 and "--storage" in result.stderr
    assert not (tmp_path / "slurm").exists() and not (tmp_path / "o.db").exists()
    # with the server job and the journal, both are safe on NFS
    assert _slurm(tmp_path, study_file, env=env).exit_code == 0


def test_submit_without_sbatch_says_where_to_run_it(tmp_path, study_file):
    no_slurm = {"PATH": str(Path(sys.executable).parent)}  # sbatch out of reach
    result = _slurm(tmp_path, study_file, "--submit", env=no_slurm)
    assert result.exit_code == 2
    assert "sbatch not found" in result.stderr and "submit.sh" in result.stderr


@pytest.mark.parametrize(
    "text, seconds",
    [("30", 1800), ("5:30", 330), ("4:00:00", 14400), ("1-12", 129600), ("2-00:30:00", 174600)],
)
def test_slurm_time_formats(text, seconds):
    assert time_limit_seconds(text) == seconds


def test_workers_of_search_refuse_a_shared_sqlite_tracking_store_on_nfs(tmp_path, study_file):
    table = tmp_path / "mountinfo"
    table.write_text(f"22 1 0:50 / {tmp_path.resolve()} rw - nfs4 srv:/home rw\n")
    study = study_file()
    result = run_cli(
        "search", "--study", study, "--workers", "2", cwd=tmp_path, env={MOUNTINFO_ENV: str(table)}
    )
    assert result.exit_code == 2
    assert "MLFLOW_TRACKING_URI" in result.stderr and "nfs4" in result.stderr
    with pytest.raises(ConfigError):
        time_limit_seconds("soon")
