"""Where a search's first seconds go: the imports it cannot do without, each timed in a
fresh interpreter, against the smoke study's own "time:" line (one 1-epoch trial, no
final retrain, in a new temporary home, so the MLflow store and the Optuna journal are
made as on a first run). Medians over --repeat runs.

    python benchmarks/startup.py
    python benchmarks/startup.py --repeat 5

"floor" is one interpreter importing torch, Optuna and MLflow's SQLite store together:
no search can start its first trial sooner on this machine. The difference between the
search's "before the first trial" and the floor is the tool's own start-up (its modules,
the study file, the data, the stores). torch._dynamo is not in the floor: torch imports
it when the first trial builds its optimizer (it counts in "trials"). Each import is
timed up to an ``os._exit``; "tear-down" is what a normal interpreter exit adds after the
floor's imports (``cli.py`` skips it: ``cli_setup.exit_now``).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

IMPORTS = {
    "python -c pass": "pass",
    "import torch": "import torch",
    "import torch._dynamo (after torch)": "import torch, torch._dynamo",
    "import optuna": "import optuna",
    "import mlflow + SQLite store": "import mlflow.store.tracking.sqlalchemy_store",
    "import sklearn.model_selection": "import sklearn.model_selection",
    "floor: torch + optuna + mlflow store": (
        "import torch, optuna, mlflow.store.tracking.sqlalchemy_store"
    ),
}
TIME_LINE = re.compile(
    r"time: ([\d.]+)s \(before the first trial ([\d.]+)s, trials ([\d.]+)s, "
    r"end of study ([\d.]+)s\)"
)


def wall(command: list[str], **kwargs) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True, **kwargs)
    return time.perf_counter() - start, done.stdout


def search_times() -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="startup-") as home:
        env = {**os.environ, "CIFAR_SEARCH_HOME": home}
        command = [sys.executable, str(ROOT / "cli.py"), "search", "--study", "smoke"]
        options = ["--n-trials", "1", "--set", "optim.epochs=1", "--no-retrain"]
        seconds, out = wall(command + options, env=env, cwd=ROOT)
    found = TIME_LINE.search(out)
    if found is None:
        raise SystemExit(f"no time line in the search's output:\n{out}")
    total, before, trials, end = map(float, found.groups())
    return {"command": seconds, "before": before, "trials": trials, "end": end}


def imported(code: str) -> float:
    return wall([sys.executable, "-c", f"{code}\nimport os\nos._exit(0)"])[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each (median shown)")
    args = parser.parse_args()
    medians = {}
    for label, code in IMPORTS.items():
        medians[label] = statistics.median(imported(code) for _ in range(args.repeat))
        print(f"{label:<40} {medians[label]:6.2f} s", flush=True)
    dynamo = medians["import torch._dynamo (after torch)"] - medians["import torch"]
    print(f"{'  torch._dynamo alone':<40} {dynamo:6.2f} s")
    floor_code = IMPORTS["floor: torch + optuna + mlflow store"]
    ended = statistics.median(
        wall([sys.executable, "-c", floor_code])[0] for _ in range(args.repeat)
    )
    floor = medians["floor: torch + optuna + mlflow store"]
    print(f"{'tear-down after the floor':<40} {ended - floor:6.2f} s")
    wall([sys.executable, str(ROOT / "cli.py"), "--help"])  # compiled bytecode in place
    searches = [search_times() for _ in range(args.repeat)]
    search = {key: statistics.median(s[key] for s in searches) for key in searches[0]}
    print(
        f"\nsmoke search, 1 trial of 1 epoch, no retrain ({args.repeat} runs, medians):\n"
        f"  before the first trial {search['before']:5.2f} s  "
        f"(floor {floor:.2f} s + the tool's own {search['before'] - floor:.2f} s)\n"
        f"  the trial              {search['trials']:5.2f} s  "
        f"(torch._dynamo's import, about {dynamo:.1f} s, is in it)\n"
        f"  end of study           {search['end']:5.2f} s\n"
        f"  the whole command      {search['command']:5.2f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
