"""The batch scripts of a study on SLURM, as text: a job array of workers, a final job that
retrains once after them, an optional MLflow server job that alone writes the MLflow
store, and ``submit.sh``, which submits them in order. Users read these before they
submit, so each says in comments what it does and why."""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from search.config import TRIALS_PER_GPU

# A requeued task exits with this after the worker saved its trial on SLURM's warning
# signal (128 + SIGUSR1): the worker's own code for "stopped by SIGUSR1".
STOPPED_BY_USR1 = 138
ADDRESS_FILE = "mlflow-server.address"  # where the server job publishes its URI


@dataclass(frozen=True)
class SlurmOptions:
    """What every cluster asks for; ``None`` leaves a setting to the cluster's default."""

    workers: int = 2  # array tasks, one worker of the study each
    partition: str | None = None
    account: str | None = None
    time: str | None = None  # per task: "4:00:00", "1-00:00:00"
    gpus_per_worker: int = 1
    cpus_per_worker: int = 4
    mem: str | None = None  # per task: "16G"
    signal_seconds: int = 300  # SIGUSR1 this long before the time limit
    # concurrent trials on each of a task's GPUs; None: TRIALS_PER_GPU, 1 without GPUs
    trials_per_gpu: int | None = None
    sbatch_lines: tuple[str, ...] = ()  # more "#SBATCH" options, e.g. "--qos=long"
    mlflow_server: bool = True  # an MLflow server job, else $MLFLOW_TRACKING_URI as set
    server_time: str | None = None  # the server job's time limit (default: --time)

    @classmethod
    def fields(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}


@dataclass(frozen=True)
class StudyCommand:
    """The command lines the jobs run, and where (absolute paths: jobs start elsewhere)."""

    project: Path  # the home (store.home): the jobs cd here and keep their state in mlruns/
    worker_argv: Sequence[str]  # `cli.py search ... --no-retrain`: one worker of the study
    final_argv: Sequence[str]  # `cli.py search ...`: finishes the study, retrains once
    python: str  # the interpreter (a virtual environment's, on the shared filesystem)
    runs_dir: Path  # the MLflow store the server job serves (mlruns/)
    # $MLFLOW_TRACKING_URI when the scripts were written (a store of the user's own)
    tracking_uri: str | None = None


def sbatch_header(name: str, log: str, options: SlurmOptions, *, time: str | None) -> list[str]:
    """The ``#SBATCH`` lines every job of the study shares, then the user's own."""
    lines = [f"#SBATCH --job-name={name}", f"#SBATCH --output={log}"]
    for flag, value in (
        ("--partition", options.partition),
        ("--account", options.account),
        ("--time", time),
    ):
        if value:
            lines.append(f"#SBATCH {flag}={value}")
    for extra in options.sbatch_lines:
        text = extra.strip()
        lines.append(text if text.startswith("#SBATCH") else f"#SBATCH {text}")
    return lines


def _resources(options: SlurmOptions) -> list[str]:
    lines = ["#SBATCH --ntasks=1", f"#SBATCH --cpus-per-task={options.cpus_per_worker}"]
    if options.gpus_per_worker:
        lines.append(f"#SBATCH --gres=gpu:{options.gpus_per_worker}")
    if options.mem:
        lines.append(f"#SBATCH --mem={options.mem}")
    return lines


def _requeue_lines(signal_seconds: int) -> list[str]:
    return [
        "#SBATCH --requeue  # a requeued job runs again under the same id",
        "#SBATCH --open-mode=append  # ... and appends to the same log",
        f"#SBATCH --signal=B:USR1@{signal_seconds}  # warn the batch shell before the limit",
    ]


def _quoted(argv: Sequence[str]) -> str:
    """A command line for a reader: the program and its command, then one option per line."""
    words = [shlex.quote(a) for a in argv]
    lines, i = [], 0
    while i < len(words):
        is_pair = words[i].startswith("--") and i + 1 < len(words)
        if is_pair and not words[i + 1].startswith("--"):
            lines.append(f"{words[i]} {words[i + 1]}")
            i += 2
        else:
            if lines and not words[i].startswith("--") and not lines[-1].startswith("--"):
                lines[-1] += f" {words[i]}"  # python cli.py search
            else:
                lines.append(words[i])
            i += 1
    return " \\\n    ".join(lines)


def _task_workers(options: SlurmOptions, final: bool) -> tuple[int, int]:
    """(trials at once on each of a task's GPUs, worker processes in the task): as asked,
    else ``TRIALS_PER_GPU`` for the array's tasks with GPUs; the final job keeps one process
    unless asked (it only finishes what the workers left, and retrains)."""
    per_gpu = options.trials_per_gpu or (
        TRIALS_PER_GPU if options.gpus_per_worker and not final else 1
    )
    several = options.gpus_per_worker > 1 or per_gpu > 1
    return per_gpu, options.gpus_per_worker * per_gpu if several else 1


def _worker_command(
    command: StudyCommand, options: SlurmOptions, argv: Sequence[str], *, final: bool = False
) -> str:
    text = _quoted(argv)
    per_gpu, processes = _task_workers(options, final)
    if processes > 1:
        # several trials per task: one worker process per (GPU, slot), pinned by --gpus to
        # the GPUs SLURM gave this task
        text += f' \\\n    --gpus "$CUDA_VISIBLE_DEVICES" \\\n    --trials-per-gpu {per_gpu}'
    return text


_EARLY_TRAPS = """\
# SLURM's warning (SIGUSR1) before the worker has started: requeue at once, nothing to save.
# Preemption or scancel (SIGTERM) before it: just end.
trap 'echo "[$(date -Is)] SIGUSR1 before the worker started: requeue"; requeued=1; \\
  scontrol requeue "{job}"; exit 0' USR1
"""

_RUN_AND_REQUEUE = """\
# The worker runs in the background so that this shell can pass SLURM's signals on (bash
# runs a trap only once the foreground command has ended). On SIGUSR1 (the time limit is
# near) the worker saves its trial at the next batch and exits with {stopped}; then this task
# requeues itself and, when it runs again, continues that trial from the saved batch. On
# SIGTERM (preemption, scancel, the limit itself) it saves the same way and exits 143.
{command} &
worker=$!
trap 'echo "[$(date -Is)] SIGUSR1: time limit ahead, saving"; kill -USR1 $worker' USR1
trap 'echo "[$(date -Is)] SIGTERM: saving"; kill -TERM $worker' TERM
status=
while [ -z "$status" ]; do
  wait $worker
  code=$?
  kill -0 $worker 2>/dev/null && continue  # a trap interrupted wait: the worker still runs
  wait $worker 2>/dev/null  # its own exit code, which bash keeps (127: already reported)
  again=$?
  status=$([ $again -ne 127 ] && echo $again || echo $code)
done
echo "[$(date -Is)] worker ended with exit code $status"
if [ $status -eq {stopped} ]; then
  requeued=1  # back to PENDING; when it runs again it continues where this one stopped
  scontrol requeue "{job}" || exit $status
  exit 0
fi
exit $status
"""

_WAIT_FOR_SERVER = """\
# MLflow: the server job writes its address once it answers; it alone writes the store.
address_file={address}
for wait in $(seq 60); do  # up to 10 minutes
  [ -s "$address_file" ] && break
  echo "[$(date -Is)] waiting for the MLflow server job to publish $address_file"
  sleep 10
done
if [ ! -s "$address_file" ]; then
  echo "no MLflow server: see the mlflow-server-*.log beside $address_file"
  exit 1  # nothing was started: rerun submit.sh once the server runs
fi
export MLFLOW_TRACKING_URI="$(cat "$address_file")"
echo "[$(date -Is)] MLflow at $MLFLOW_TRACKING_URI"
"""


def _prologue(
    command: StudyCommand, folder: Path, options: SlurmOptions, what: str, final: bool
) -> str:
    n, cores = _task_workers(options, final)[1], "${SLURM_CPUS_PER_TASK:-1}"
    threads = f"export OMP_NUM_THREADS={cores}  # the cores SLURM gave, not the node's"
    if n > 1:  # shared by the task's worker processes
        threads = f"export OMP_NUM_THREADS=$(( {cores} / {n} > 0 ? {cores} / {n} : 1 ))"
    lines = [
        "set -u",
        f"cd {shlex.quote(str(command.project))}",
        f"export CIFAR_SEARCH_HOME={shlex.quote(str(command.project))}  # where mlruns/ is",
        threads,
        # the worker may take most of the warning to save (a large checkpoint on a busy
        # shared filesystem), not only the default few seconds
        f"export CIFAR_SEARCH_GRACE_S={max(6, options.signal_seconds - 30)}",
        f'echo "[$(date -Is)] {what} on $(hostname), start ${{SLURM_RESTART_COUNT:-0}}"',
    ]
    text = "\n".join(lines) + "\n" + _tracking_lines(command.tracking_uri)
    if options.mlflow_server:
        text += "\n" + _WAIT_FOR_SERVER.format(address=shlex.quote(str(folder / ADDRESS_FILE)))
    return text


def _tracking_lines(uri: str | None) -> str:
    """The user's own tracking store, fixed in the scripts: a job requeued days later, or
    a submit.sh run from a shell without the variable, must not fall back to the SQLite
    store. An address that may hold a secret (a user or password, a query such as
    ``?password=``) is not written into a file on a shared filesystem: then the variable
    must be set when submit.sh runs (sbatch passes it on), and submit.sh and the jobs stop
    with one line saying so."""
    if uri is None:
        return ""
    parts = urlsplit(uri)
    if "@" not in parts.netloc and not parts.query and not parts.fragment:
        return f"export MLFLOW_TRACKING_URI={shlex.quote(uri)}  # the study's tracking store\n"
    host = parts.netloc.rpartition("@")[2]
    shown = "".join(c for c in f"{parts.scheme}://{host}{parts.path}" if c not in "\"$`\\}'")
    need = f"set MLFLOW_TRACKING_URI to the study store at {shown}, with its credentials"
    return f': "${{MLFLOW_TRACKING_URI:?{need}}}"\n'


def workers_script(study: str, folder: Path, options: SlurmOptions, command: StudyCommand) -> str:
    """One array task = one worker of the study (``cli.py search --no-retrain``)."""
    header = sbatch_header(
        f"{study}-workers", str(folder / "worker-%A_%a.log"), options, time=options.time
    )
    body = _RUN_AND_REQUEUE.format(
        command=_worker_command(command, options, command.worker_argv),
        stopped=STOPPED_BY_USR1,
        job="${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}",
    )
    return "\n".join(
        [
            "#!/bin/bash",
            f"# The workers of study {study}: a job array, one task = one worker process sharing",
            "# the study's storage. Each task runs trials until the study has its n_trials",
            "# (COMPLETE + PRUNED) and then exits 0; a task that starts when the study is done",
            "# exits at once. At the time limit (or on preemption) SLURM sends SIGUSR1 first:",
            "# the worker checkpoints and this task requeues itself. A task killed without",
            "# warning leaves a trial whose heartbeat stops: another task (or the final job)",
            "# continues it from its last checkpoint.",
            *header,
            f"#SBATCH --array=0-{options.workers - 1}",
            *_resources(options),
            *_requeue_lines(options.signal_seconds),
            "",
            _EARLY_TRAPS.format(job="${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"),
            _prologue(
                command,
                folder,
                options,
                "worker ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}",
                False,
            ),
            body,
        ]
    )


def final_script(study: str, folder: Path, options: SlurmOptions, command: StudyCommand) -> str:
    """After the array (``--dependency=afterany``, set by submit.sh): the final retrain."""
    header = sbatch_header(
        f"{study}-final", str(folder / "final-%j.log"), options, time=options.time
    )
    body = _RUN_AND_REQUEUE.format(
        command=_worker_command(command, options, command.final_argv, final=True),
        stopped=STOPPED_BY_USR1,
        job="${SLURM_JOB_ID}",
    )
    stop_server = ""
    if options.mlflow_server:
        stop_server = (
            "# The MLflow server job is not needed once this job has ended (unless requeued).\n"
            'trap \'[ -z "${requeued:-}" ] && [ -n "${CIFAR_SEARCH_MLFLOW_JOB:-}" ] && '
            'scancel "$CIFAR_SEARCH_MLFLOW_JOB"\' EXIT\n'
        )
    return "\n".join(
        [
            "#!/bin/bash",
            f"# The final job of study {study}: starts once every worker task has ended. It runs",
            "# `cli.py search` once more: trials the workers left unfinished (a task killed",
            "# without warning) are continued from their checkpoints first, then the best trial",
            "# is retrained on the full training set and tested once. A retrain already done is",
            "# never redone; at the time limit it is saved and this job requeues itself too.",
            *header,
            *_resources(options),
            *_requeue_lines(options.signal_seconds),
            "",
            stop_server,
            _EARLY_TRAPS.format(job="${SLURM_JOB_ID}"),
            _prologue(command, folder, options, "final job ${SLURM_JOB_ID}", True),
            body,
        ]
    )


def server_script(study: str, folder: Path, options: SlurmOptions, command: StudyCommand) -> str:
    """The MLflow server: one process writes the study's SQLite store on the shared
    filesystem; every worker logs to it over HTTP and writes artifacts to the shared folder."""
    time = options.server_time  # default: the partition's, for it must outlive the study
    header = sbatch_header(
        f"{study}-mlflow", str(folder / "mlflow-server-%j.log"), options, time=time
    )
    runs = command.runs_dir
    store = shlex.quote(f"sqlite:///{runs / 'mlflow.db'}")
    artifacts = shlex.quote((runs / "artifacts").as_uri())
    address = shlex.quote(str(folder / ADDRESS_FILE))
    python = shlex.quote(command.python)
    return f"""#!/bin/bash
# The MLflow server of study {study}. SQLite on a network filesystem corrupts when several
# nodes write it, so one process alone writes the study's MLflow store: this server. The
# workers find it by the address this job publishes (its node name and port) and write
# their artifacts straight to the shared folder. The final job cancels this one when it
# ends; afterwards every command (best, report, ...) reads the same store directly.
{chr(10).join(header)}
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=1
#SBATCH --mem=2G

set -u
cd {shlex.quote(str(command.project))}
store={store}
artifacts={artifacts}
address={address}
# a port free on this node now (another study's server may run here too)
port=$({python} -c "import socket; s = socket.socket(); s.bind(('', 0)); print(s.getsockname()[1])")
# --workers 1: a single process writes the SQLite file. --allowed-hosts: the workers call
# it by this node's name, which MLflow's DNS-rebinding guard refuses unless listed.
{python} -m mlflow server --backend-store-uri "$store" \\
    --default-artifact-root "$artifacts" --no-serve-artifacts \\
    --host 0.0.0.0 --port $port --workers 1 \\
    --allowed-hosts "$(hostname):$port,$(hostname -f):$port,localhost:$port,127.0.0.1:$port" &
server=$!
# Ended (the final job's scancel, or this job's time limit): unpublish the address.
trap 'kill $server 2>/dev/null; wait $server; rm -f "$address"; exit 0' TERM INT
health="import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/health')"
until {python} -c "$health" 2>/dev/null && kill -0 $server 2>/dev/null; do  # ours answers
  kill -0 $server 2>/dev/null || {{ echo "the MLflow server did not start"; exit 1; }}
  sleep 2
done
echo "http://$(hostname):$port" > "$address.tmp" && mv "$address.tmp" "$address"
echo "[$(date -Is)] MLflow server at $(cat "$address"), store $store"
wait $server
"""


def submit_script(
    study: str, folder: Path, options: SlurmOptions, tracking_uri: str | None = None
) -> str:
    """Submits the jobs in order, each after the one it needs, and says how to watch them;
    first of all, checks that a tracking store whose address is not written is set."""
    check = _tracking_lines(tracking_uri) if tracking_uri else ""
    check = check if check.startswith(":") else ""
    q = shlex.quote
    server = ""
    final_export = ""
    after = ""
    if options.mlflow_server:
        server = (
            "# one server per study: a second one would write the same SQLite file\n"
            f"server=$(squeue -h -n {q(study + '-mlflow')} -o %i | head -1)\n"
            'if [ -n "$server" ]; then\n'
            '  echo "MLflow server job: $server (already running: reused)"\n'
            "else\n"
            f"  rm -f {q(ADDRESS_FILE)}  # an address from an earlier submission is stale\n"
            "  server=$(sbatch --parsable mlflow-server.sbatch | cut -d';' -f1)\n"
            '  echo "MLflow server job: $server"\n'
            "fi\n"
        )
        after = '--dependency=after:"$server" '  # workers start once the server job runs
        final_export = '--export=ALL,CIFAR_SEARCH_MLFLOW_JOB="$server" '
    jobs = "the MLflow server, " if options.mlflow_server else ""
    return f"""#!/bin/bash
# Submits study {study}: {jobs}the workers (a job array of {options.workers}),
# and the final retrain once every worker has ended. Run again to continue a stopped study.
set -euo pipefail
{check}cd {q(str(folder))}
{server}workers=$(sbatch --parsable {after}workers.sbatch | cut -d';' -f1)
echo "workers: job array $workers (tasks 0-{options.workers - 1})"
final=$(sbatch --parsable --dependency=afterany:"$workers" {final_export}final.sbatch \\
  | cut -d';' -f1)
echo "final retrain: job $final (after the workers)"
echo
echo "watch:  squeue --me  (or squeue -j $workers,$final)"
echo "logs:   {folder}/worker-${{workers}}_<task>.log, final-$final.log"
echo "study:  python cli.py studies   (trials done, trials waiting to continue)"
echo "        python cli.py dashboard --study {study}"
"""


def script_names(options: SlurmOptions) -> list[str]:
    names = ["workers.sbatch", "final.sbatch", "submit.sh"]
    return (["mlflow-server.sbatch"] if options.mlflow_server else []) + names
