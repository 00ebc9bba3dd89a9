"""The parallel-workers scenario of the README's "No lost work" section, run for real.

Several ``cli.py search --no-retrain`` processes share one study's journal; a random one
is killed (``kill -9``) at a random moment and a new one started in its place, several
times; then one more ``search`` runs alone. Each run happens in a fresh temporary folder
and prints what a user would check: the finished trials against the target, trials left
RUNNING or WAITING, MLflow runs left RUNNING, configurations repeated outside marked
retries, and the wall time. Then the work: the trial-epochs the finished trials needed,
the trial-epochs trained (restored epochs not counted), the whole epochs lost per kill
(target: at most 1; the partial epoch a kill cuts short is always lost too), and the
share of training time spent writing checkpoints with its MB and ms per checkpoint.
Exit 1 if any run broke a guarantee.

    python benchmarks/kill_workers.py --runs 3                  # the smoke study, 3 workers
    python benchmarks/kill_workers.py --kills 5 --heartbeat 5 --workers 3 --seed 1
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def start(work: Path, study: Path, heartbeat: float) -> subprocess.Popen:
    """A worker; its stderr goes to a file of its own (a pipe nobody reads could fill)."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlruns' / 'mlflow.db'}"}
    log = (work / f"worker-{time.monotonic_ns()}.err").open("w")
    with log:
        return subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "cli.py"),
                "search",
                "--study",
                str(study),
                "--no-retrain",
                "--heartbeat",
                str(heartbeat),
            ],
            cwd=work,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


def last_error_lines(work: Path) -> list[str]:
    """The last line of each worker's stderr that holds an error."""
    lines = []
    for path in sorted(work.glob("worker-*.err")):
        errors = [line for line in path.read_text().splitlines() if "rror" in line]
        lines += errors[-1:]
    return lines


def one_run(study: Path, args: argparse.Namespace, rng: random.Random) -> dict:
    with tempfile.TemporaryDirectory(prefix="kill-workers-") as tmp:
        work = Path(tmp)
        began = time.monotonic()
        procs = [start(work, study, args.heartbeat) for _ in range(args.workers)]
        for _ in range(args.kills):
            time.sleep(rng.uniform(args.min_wait, args.max_wait))
            victim = rng.randrange(args.workers)
            procs[victim].kill()
            procs[victim].wait()
            procs[victim] = start(work, study, args.heartbeat)
        codes = [p.wait() for p in procs]
        codes.append(start(work, study, args.heartbeat).wait())
        seconds = time.monotonic() - began
        return {
            **inspect(work, study),
            "codes": codes,
            "seconds": seconds,
            "errors": last_error_lines(work),
        }


def inspect(work: Path, study: Path) -> dict:
    import mlflow
    import optuna
    from optuna.trial import TrialState

    os.chdir(work)  # the tool's storage paths are relative to the working folder
    try:
        from search.errors import ConfigError
        from search.store import open_storage

        storage = open_storage(study.stem, None, create=False)
        trials = optuna.load_study(study_name=study.stem, storage=storage).trials
    except (ConfigError, KeyError):  # no study at all: every worker failed at start
        trials = []
    finally:
        os.chdir(ROOT)
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    firsts = [tuple(sorted(t.params.items())) for t in done if "retry_of" not in t.user_attrs]
    client = mlflow.MlflowClient(f"sqlite:///{work / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(study.stem)
    running_runs = (
        []
        if experiment is None
        else client.search_runs(
            [experiment.experiment_id],
            "attributes.status = 'RUNNING' and tags.`cifar_search.kind` = 'trial'",
        )
    )
    return {
        **work_done(client, experiment),
        "finished": len(done),
        "trials": len(trials),
        "failed": sum(t.state == TrialState.FAIL for t in trials),
        "retries": sum("retry_of" in t.user_attrs for t in trials),
        "left": sum(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials),
        "repeats": len(firsts) - len(set(firsts)),
        "running_runs": len(running_runs),
    }


def work_done(client, experiment) -> dict:
    """Trial-epochs needed (the finished trials' curves) and trained (every trial run's
    epochs less those it restored from a checkpoint), and the checkpoints' cost, from the
    trial runs in MLflow."""
    needed = trained = 0
    writes = megabytes = write_s = train_s = 0.0
    runs = (
        []
        if experiment is None
        else client.search_runs([experiment.experiment_id], "tags.`cifar_search.kind` = 'trial'")
    )
    for run in runs:
        epochs = len({m.step for m in client.get_metric_history(run.info.run_id, "train_loss")})
        trained += epochs - int(run.data.tags.get("cifar_search.resumed_from_epoch", 0))
        needed += epochs if run.info.status in ("FINISHED", "KILLED") else 0
        m = run.data.metrics
        writes += m.get("checkpoint_writes", 0)
        megabytes += m.get("checkpoint_mb", 0)
        write_s += m.get("checkpoint_seconds", 0)
        train_s += m.get("train_seconds", 0)
    return {
        "needed": needed,
        "trained": trained,
        "checkpoint_share": write_s / train_s if train_s else 0.0,
        "checkpoint_mb": megabytes / writes if writes else 0.0,
        "checkpoint_ms": 1000 * write_s / writes if writes else 0.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default=str(ROOT / "studies" / "smoke.toml"))
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--heartbeat", type=float, default=5.0)
    parser.add_argument("--min-wait", type=float, default=1.0, help="seconds between kills")
    parser.add_argument("--max-wait", type=float, default=15.0)
    parser.add_argument("--seed", type=int, default=None, help="kill schedule seed")
    args = parser.parse_args()
    study = Path(args.study).resolve()
    sys.path.insert(0, str(ROOT))
    from search.study import load_study

    target = load_study(str(study)).n_trials
    print(
        f"{study.stem}: target {target} trials, {args.workers} workers, {args.kills} "
        f"kill -9 + restart, heartbeat {args.heartbeat:g}s"
    )
    print(
        "run  seed    finished  trials  failed  retries  left  repeats  running-runs  exit"
        "           seconds  epochs needed/trained  lost/kill  checkpoints"
    )
    broken = 0
    for run in range(args.runs):
        seed = args.seed if args.seed is not None and run == 0 else random.randrange(10**6)
        r = one_run(study, args, random.Random(seed))
        ok = (
            r["finished"] == target
            and not r["left"]
            and not r["repeats"]
            and not r["running_runs"]
            and not any(r["codes"])
        )
        lost_per_kill = (r["trained"] - r["needed"]) / args.kills if args.kills else 0.0
        ok = ok and lost_per_kill <= 1
        broken += not ok
        print(
            f"{run:>3}  {seed:<6}  {r['finished']:>4}/{target:<3}  {r['trials']:>6}  "
            f"{r['failed']:>6}  {r['retries']:>7}  {r['left']:>4}  {r['repeats']:>7}  "
            f"{r['running_runs']:>12}  {','.join(map(str, r['codes'])):<13}  "
            f"{r['seconds']:>7.1f}  {r['needed']:>6}/{r['trained']:<7}        "
            f"{lost_per_kill:>5.2f}  {100 * r['checkpoint_share']:.2f}% of training "
            f"({r['checkpoint_mb']:.2f} MB, {r['checkpoint_ms']:.1f} ms each)  "
            f"{'ok' if ok else 'BROKEN ' + ' | '.join(r['errors'])}",
            flush=True,
        )
    print(f"{args.runs - broken}/{args.runs} runs kept every guarantee")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
