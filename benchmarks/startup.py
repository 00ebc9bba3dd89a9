"""Where a search's first seconds go: the imports it cannot do without, against the smoke
study's own "time:" line (one 1-epoch trial, no final retrain, in a new temporary home,
so the MLflow store and the Optuna journal are made as on a first run). Medians over
--repeat rounds; each round times the imports and then the search, one after the other,
so that both see the same load on a shared machine.

    python benchmarks/startup.py
    python benchmarks/startup.py --repeat 5

"floor" is one interpreter importing what a search imports before its first trial, in the
search's order (optuna, torch, then MLflow with its SQLite store), timed from the
interpreter's start: no search can start its first trial sooner on this machine. The
difference between the search's "before the first trial" and the floor is the tool's own
start-up (its modules, the study file, the data, the stores). torch._dynamo is not in the
floor: torch imports it when the first trial builds its optimizer ("the trial" holds
it). "tear-down" is what a normal interpreter exit adds after the floor's imports;
``cli.py`` skips it (``cli_setup.exit_now``). scikit-learn is shown for what a search no
longer imports (``search/training/memo.py``).

"overlap" asks what taking MLflow off the path before the first trial would buy: a
``resnet20`` trains on random CIFAR-shaped batches for a few seconds, alone, then while
MLflow (with its SQLite store's module, as in the floor) is imported by a thread of the
same process, then by a second process. Training's steps per second in those seconds,
against alone, is what the first trial would lose to the overlap; the import's own time
is what it would hide.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# What a search imports for MLflow before its first trial: MLflow and its SQLite store.
MLFLOW_MODULE = "mlflow.store.tracking.sqlalchemy_store"
# Each step's seconds since the interpreter started, printed as JSON; ends with os._exit.
FLOOR = """
import json, os, sys, time
start = time.time() - (time.monotonic() - {clock_at_start})
steps = {{}}
for label, module in [("optuna", "optuna"), ("torch", "torch"),
                      ("mlflow + SQLite store", "{mlflow_module}"),
                      ("torch._dynamo", "torch._dynamo"),
                      ("sklearn.model_selection", "sklearn.model_selection")]:
    before = time.monotonic()
    __import__(module)
    steps[label] = time.monotonic() - before
    if label == "mlflow + SQLite store":
        steps["floor"] = time.time() - start
print(json.dumps(steps), flush=True)
{end}
"""
TIME_LINE = re.compile(
    r"time: ([\d.]+)s \(before the first trial ([\d.]+)s, trials ([\d.]+)s, "
    r"end of study ([\d.]+)s\)"
)


def floor_times() -> dict[str, float]:
    """The floor's imports, from a process whose start time it is given."""
    code = FLOOR.format(clock_at_start="START", end="os._exit(0)", mlflow_module=MLFLOW_MODULE)
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", code.replace("START", repr(started))],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)


def tear_down() -> float:
    """Seconds a normal exit adds after the floor's imports."""
    timings = []
    for end in ("os._exit(0)", "sys.exit(0)"):
        code = FLOOR.format(clock_at_start="time.monotonic()", end=end, mlflow_module=MLFLOW_MODULE)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
        timings.append(time.perf_counter() - start)
    return timings[1] - timings[0]


# Steps per second of a training loop while MLflow is imported beside it (or not), and the
# import's seconds, printed as JSON: `python -c OVERLAP MODE SECONDS MODULE`.
OVERLAP = """
import importlib, json, subprocess, sys, threading, time
mode, seconds, module = sys.argv[1], float(sys.argv[2]), sys.argv[3]
IMPORT = f"import time; t = time.monotonic(); import {module}; print(time.monotonic() - t)"

def import_mlflow():
    start = time.monotonic()
    importlib.import_module(module)
    return time.monotonic() - start

import torch
from cifar_models.registry import create
torch.manual_seed(0)
model = create("resnet20", 10)
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
images, labels = torch.randn(128, 3, 32, 32), torch.randint(0, 10, (128,))

def step():
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(model(images), labels).backward()
    optimizer.step()

step()  # the first step imports torch._dynamo: not part of what is compared
took = {}
if mode == "thread":
    worker = threading.Thread(target=lambda: took.update(s=import_mlflow()))
    worker.start()
elif mode == "process":
    child = subprocess.Popen([sys.executable, "-c", IMPORT], stdout=subprocess.PIPE, text=True)
start, steps = time.monotonic(), 0
while time.monotonic() - start < seconds:
    step()
    steps += 1
rate = steps / (time.monotonic() - start)
if mode == "thread":
    worker.join()
elif mode == "process":
    took["s"] = float(child.communicate()[0])
print(json.dumps({"rate": rate, "import": took.get("s")}), flush=True)
"""


def overlap_times(seconds: float) -> dict[str, float]:
    """Training steps/s alone and beside MLflow's import (a thread, a process)."""
    result = {}
    for mode in ("alone", "thread", "process"):
        done = subprocess.run(
            [sys.executable, "-c", OVERLAP, mode, str(seconds), MLFLOW_MODULE],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise SystemExit(f"overlap case {mode!r} failed:\n{done.stderr}")
        measured = json.loads(done.stdout.strip().splitlines()[-1])
        result[f"rate {mode}"] = measured["rate"]
        if mode != "alone":
            result[f"import {mode}"] = measured["import"]
    return result


def search_times() -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="startup-") as home:
        env = {**os.environ, "CIFAR_SEARCH_HOME": home}
        command = [sys.executable, str(ROOT / "cli.py"), "search", "--study", "smoke"]
        options = ["--n-trials", "1", "--set", "optim.epochs=1", "--no-retrain"]
        start = time.perf_counter()
        out = subprocess.run(
            command + options, env=env, cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
        seconds = time.perf_counter() - start
    found = TIME_LINE.search(out)
    if found is None:
        raise SystemExit(f"no time line in the search's output:\n{out}")
    total, before, trials, end = map(float, found.groups())
    return {"command": seconds, "before": before, "trials": trials, "end": end}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="rounds (medians shown)")
    parser.add_argument(
        "--overlap-seconds",
        type=float,
        default=4.0,
        help="seconds of training per overlap case (0 skips the overlap section)",
    )
    args = parser.parse_args()
    subprocess.run([sys.executable, str(ROOT / "cli.py"), "--help"], capture_output=True)
    rounds = []
    for _ in range(args.repeat):
        overlap = overlap_times(args.overlap_seconds) if args.overlap_seconds > 0 else {}
        rounds.append({**floor_times(), "tear-down": tear_down(), **search_times(), **overlap})
    m = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    print(f"imports, in one interpreter ({args.repeat} rounds, medians):")
    for label in ("optuna", "torch", "mlflow + SQLite store"):
        print(f"  {label:<36} {m[label]:5.2f} s")
    print(f"  {'floor: the three, from the start':<36} {m['floor']:5.2f} s")
    print(f"  {'torch._dynamo (the first optimizer)':<36} {m['torch._dynamo']:5.2f} s")
    print(f"  {'sklearn.model_selection (not needed)':<36} {m['sklearn.model_selection']:5.2f} s")
    print(f"  {'tear-down at exit (skipped)':<36} {m['tear-down']:5.2f} s")
    print(
        f"smoke search, 1 trial of 1 epoch, no retrain:\n"
        f"  before the first trial {m['before']:5.2f} s  "
        f"(floor {m['floor']:.2f} s + the tool's own {m['before'] - m['floor']:.2f} s)\n"
        f"  the trial              {m['trials']:5.2f} s\n"
        f"  end of study           {m['end']:5.2f} s\n"
        f"  the whole command      {m['command']:5.2f} s"
    )
    if "rate alone" in m:
        print(f"overlap: resnet20 training steps (batch 128) in {args.overlap_seconds:g} s")
        print(f"  alone                                {m['rate alone']:5.2f} steps/s")
        for mode in ("thread", "process"):
            share = m[f"rate {mode}"] / m["rate alone"]
            print(
                f"  MLflow importing in a {mode:<8}      {m[f'rate {mode}']:5.2f} steps/s "
                f"({share:.0%} of alone; the import took {m[f'import {mode}']:.2f} s)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
