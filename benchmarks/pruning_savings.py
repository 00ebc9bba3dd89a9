"""How much does pruning save? One study, run without pruning and with each pruner.

The same study definition (space, sampler, budget) is run once with ``pruner = "none"``
and once with each pruner, for several sampler seeds; only the pruner changes. For each
run it counts the trial-epochs actually trained (from the trials' intermediate values,
checked against the epochs the objective reported), the search's wall time and its best
validation accuracy, then retrains the best trial with the library's final retrain
(train + validation, the trial budget's epochs, tested once) and prints, per pruner, mean
± sd over seeds, the share of trial-epochs saved and the test-accuracy regret against
``none``, which pruner is best (most saved at <= 0.5 pp regret), whether the target
(>= 70% saved at <= 0.5 pp regret) is met, and a markdown table for the README.

Data: scikit-learn's digits (offline, on every machine), or CIFAR-10 from ``--data-dir``.
Every run happens in a fresh temporary folder (journal and MLflow store there), so
nothing leaks between runs and the repository's ``mlruns/`` is never touched.

The study (``study_toml``), as a user would write it for this data: ``improved_cnn`` (3
conv layers with BatchNorm) at width 0.5, SGD with Nesterov momentum, batch 64, cosine
schedule, 8 epochs per trial, 20 trials, TPE with 5 random start-up trials, searching a
wide log learning rate (1e-3 .. 1.0: the low end cannot learn in 8 epochs, the high end
learns slowly), weight decay (1e-6 .. 1e-2, log), dropout (0 .. 0.5) and crop padding.
The best trial is retrained for the same 8 epochs with 3 training seeds (its test accuracy
is their mean: a retrain costs seconds here, and one seed's test accuracy on 360 images
moves by a few images from seed to seed). Pruner arguments, sensible
defaults for a budget of under ten epochs in which epoch 1 is near chance for every trial:
- median: the tool's defaults: 5 start-up trials, 2 warm-up epochs (epoch 1 never decides);
- hyperband: the tool's defaults: min_resource 1, max_resource = epochs, reduction_factor
  3 (for 8 epochs: 2 brackets, with rungs at epochs {1, 3} and {3}; the hedge against an
  early rung that decides on noise is Hyperband's own);
- asha (Optuna's SuccessiveHalvingPruner): min_resource 2, reduction_factor 3 (rungs at
  epochs 2 and 6): ASHA has no bracket to hedge with, so, like median's warm-up, its first
  rung is not epoch 1 (Optuna's default, min_resource "auto" = 1 here and reduction_factor
  4, would keep the top quarter of near-chance first epochs).
Epoch budgets that put a rung on the last epoch (3 or 9 for hyperband, 6 or 18 for asha)
prune trials that have already trained in full; the script says so when that happens.

Wilcoxon is left out of the default set: Optuna's WilcoxonPruner runs a signed-rank test
on the paired per-step values of a trial and the best trial, which assumes that steps are
independent evaluation instances (folds, problem instances) whose mean is the objective.
Here a step is an epoch: the values are one autocorrelated learning curve and the
objective is its last point, so the test's premise does not hold. ``--pruners`` still
accepts it for a look by hand, and says so in the output.

    python benchmarks/pruning_savings.py                 # digits, 3 seeds: ~7 min on 2 idle cores
    python benchmarks/pruning_savings.py --quick         # ~1 minute: does the script work?
    python benchmarks/pruning_savings.py --seeds 5 --pruners median,asha --trials 30
    python benchmarks/pruning_savings.py --seeds 0,4,7 --epochs 12
    python benchmarks/pruning_savings.py --data-dir ../shared/data/cifar-sample   # CIFAR-10
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODEL, WIDTH = "improved_cnn", 0.5  # 3 conv layers + BatchNorm at half width: 24k parameters
REFERENCE = "none"
DEFAULT_PRUNERS = ("median", "hyperband", "asha")
MAX_REGRET_PP = 0.5  # test-accuracy regret allowed to the best pruner
TARGET_SAVED = 70.0  # % of trial-epochs the best pruner should save
WILCOXON_WHY = (
    "its signed-rank test assumes steps are independent instances (folds), here they are "
    "epochs of one learning curve"
)

# pruner -> [study.pruner_args] (see the module docstring; hyperband's max_resource is the
# tool's default, the epoch budget)
PRUNER_ARGS = {
    "median": {"n_startup_trials": 5, "n_warmup_steps": 2},
    "hyperband": {"min_resource": 1, "reduction_factor": 3},
    "asha": {"min_resource": 2, "reduction_factor": 3},
}


def study_toml(args: argparse.Namespace, pruner: str, seed: int) -> str:
    """The study file: the same for every pruner but for ``pruner`` and its arguments."""
    dataset, trials, epochs = args.dataset, args.trials, args.epochs
    retrain_seeds = list(range(args.retrain_seeds))
    # digits are not mirror-symmetric (no flip) and 8x8 upsampled (a small crop at most);
    # CIFAR is mirror-symmetric (flip), with the usual 4-pixel crop as the other choice
    flip, crop = ("false", "[0, 2]") if dataset == "digits" else ("true", "[0, 4]")
    args = "".join(f"{k} = {v}\n" for k, v in PRUNER_ARGS.get(pruner, {}).items())
    return f"""\
[study]
dataset = "{dataset}"
description = "pruning benchmark: {pruner}, sampler seed {seed}"
direction = "maximize"
metric = "val_acc"
n_trials = {trials}
sampler = "tpe"
seed = {seed}
pruner = "{pruner}"

[study.sampler_args]
n_startup_trials = 5

[study.pruner_args]
{args}
[fixed]
"model.name" = "{MODEL}"
"model.width" = {WIDTH}
"optim.name" = "sgd"
"optim.momentum" = 0.9
"optim.nesterov" = true
"optim.epochs" = {epochs}
"optim.batch_size" = 64
"schedule.name" = "cosine"
"aug.preset" = "none"
"aug.flip" = {flip}

[space]
"optim.lr" = {{ type = "float", low = 0.001, high = 1.0, log = true }}
"optim.weight_decay" = {{ type = "float", low = 1e-6, high = 1e-2, log = true }}
"model.dropout" = {{ type = "float", low = 0.0, high = 0.5, step = 0.1 }}
"aug.crop_padding" = {{ type = "categorical", choices = {crop} }}

[retrain]
epochs = {epochs}
seeds = {retrain_seeds}
"""


def rungs(pruner: str, epochs: int) -> list[int]:
    """The epochs at which ``pruner`` (successive halving: asha, hyperband) may prune."""
    if pruner not in ("asha", "hyperband"):
        return []
    kwargs = PRUNER_ARGS[pruner]
    first, factor = kwargs["min_resource"], kwargs["reduction_factor"]
    return [first * factor**k for k in range(epochs) if first * factor**k <= epochs]


def trained_epochs(trial) -> int:
    """Epochs ``trial`` trained: one reported value per epoch, plus the epoch in which a
    diverged trial's loss became NaN (trained in full, checked at its end, not reported)."""
    from optuna.trial import TrialState

    diverged = trial.state == TrialState.FAIL and "NonFiniteLossError" in str(
        trial.user_attrs.get("fail_reason", "")
    )
    return len(trial.intermediate_values) + diverged


def one_run(pruner: str, seed: int, args: argparse.Namespace, tmp: Path) -> dict:
    """Search one (pruner, seed) study in its own folder, then retrain its best trial."""
    from optuna.trial import TrialState

    from search.engine import SearchOptions, run_search
    from search.retrain import retrain_study
    from search.study import load_study

    work = tmp / f"{pruner}-s{seed}"
    (work / "mlruns").mkdir(parents=True)
    study_file = work / f"pruning-{pruner}-s{seed}.toml"
    study_file.write_text(study_toml(args, pruner, seed))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlruns' / 'mlflow.db'}"
    reported: Counter[int] = Counter()  # epochs each trial reported through on_epoch
    home = Path.cwd()
    os.chdir(work)  # the journal lives under ./mlruns
    try:
        spec = load_study(str(study_file))
        options = SearchOptions(data_dir=args.data_dir, device="cpu")
        began = time.perf_counter()
        outcome = run_search(spec, options, on_epoch=lambda e: reported.update([e.trial]))
        search_s = time.perf_counter() - began
        began = time.perf_counter()
        final = retrain_study(spec, outcome.study, device="cpu", data_dir=args.data_dir)
        retrain_s = time.perf_counter() - began
    finally:
        os.chdir(home)
    trials = outcome.study.trials
    mismatched = [
        t.number for t in trials if len(t.intermediate_values) != reported.get(t.number, 0)
    ]
    states = Counter(t.state for t in trials)
    return {
        "epochs": sum(trained_epochs(t) for t in trials),
        "mismatched": mismatched,
        "complete": states[TrialState.COMPLETE],
        "pruned": states[TrialState.PRUNED],
        "failed": states[TrialState.FAIL],
        "search_s": search_s,
        "retrain_s": retrain_s,
        "best_val": 100 * outcome.study.best_value,
        "best_trial": final.trial_number,
        "test_acc": 100 * final.mean_std("accuracy")[0],
    }


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def pm(values: list[float], digits: int = 1, unit: str = "", sign: bool = False) -> str:
    mean, sd = mean_sd(values)
    return f"{mean:{'+' if sign else ''}.{digits}f} ± {sd:.{digits}f}{unit}"


def summarise(runs: dict[str, dict[int, dict]], seeds: list[int]) -> dict[str, dict]:
    """Per pruner: the columns of the table (text) and the numbers that decide the best."""
    ref = runs[REFERENCE]
    ref_test = statistics.fmean(ref[s]["test_acc"] for s in seeds)
    rows = {}
    for pruner, by_seed in runs.items():
        r = [by_seed[s] for s in seeds]
        # saved: paired per seed (same sampler stream), then mean ± sd over seeds
        saved = [100 * (1 - x["epochs"] / ref[s]["epochs"]) for s, x in zip(seeds, r)]
        test = [x["test_acc"] for x in r]
        regret = ref_test - statistics.fmean(test)
        # its spread: the per-seed paired differences (their mean is ``regret``)
        paired = [ref[s]["test_acc"] - x["test_acc"] for s, x in zip(seeds, r)]
        is_ref = pruner == REFERENCE
        rows[pruner] = {
            "saved": statistics.fmean(saved),
            "regret": regret,
            "cells": [
                pruner,
                pm([x["epochs"] for x in r]),
                "—" if is_ref else pm(saved, unit="%"),
                pm([x["search_s"] for x in r]),
                pm([x["best_val"] for x in r], 2),
                pm(test, 2),
                "—" if is_ref else pm(paired, 2, sign=True),
                "/".join(
                    f"{statistics.fmean(x[k] for x in r):.1f}"
                    for k in ("complete", "pruned", "failed")
                ),
            ],
        }
    return rows


HEADER = [
    "pruner",
    "trial-epochs",
    "saved vs none",
    "search time (s)",
    "best val acc (%)",
    "test acc (%)",
    "regret (pp)",
    "complete/pruned/failed",
]


def text_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [HEADER, *rows]]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def markdown_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def parse_seeds(text: str) -> list[int]:
    """``3`` means 3 seeds (0, 1, 2); a list with commas (``0,4,7`` or ``5,``) means those."""
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        else:
            seeds = list(range(int(text)))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a count or a list such as 0,1,2: {text}"
        ) from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct non-negative seeds: {text}")
    return seeds


def parse_pruners(text: str) -> list[str]:
    from search.study.optuna_factory import PRUNERS

    names = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in names if p not in PRUNERS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown pruner {', '.join(unknown)}; expected some of {', '.join(PRUNERS)}"
        )
    # none is the reference every other pruner is measured against: always run, first
    return [REFERENCE] + [p for p in dict.fromkeys(names) if p != REFERENCE]


def cpu_pressure_us() -> int | None:
    """Microseconds in which some task waited for a CPU (Linux PSI), None where unknown:
    how much the wall times are inflated by other work on the machine."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
        return int(line.rsplit("total=", 1)[1])
    except (OSError, IndexError, ValueError):
        return None


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--seeds",
        type=parse_seeds,
        default=None,
        help="sampler seeds: a count (3 = seeds 0,1,2) or a list (0,4,7); default 3",
    )
    parser.add_argument(
        "--pruners",
        type=parse_pruners,
        default=None,
        help=f"comma-separated pruners besides none (always run); default "
        f"{','.join(DEFAULT_PRUNERS)}",
    )
    parser.add_argument("--trials", type=int, default=None, help="trials per study; default 20")
    parser.add_argument(
        "--epochs", type=int, default=None, help="epochs per trial and retrain; default 8"
    )
    parser.add_argument(
        "--retrain-seeds",
        type=int,
        default=None,
        help="training seeds of the best trial's retrain (test accuracy = their mean); default 3",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="folder holding cifar-10-batches-py/: search CIFAR-10 instead of digits",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a ~1-minute check that the script works: 2 seeds, 6 trials of 4 epochs, "
        "1 retrain seed",
    )
    args = parser.parse_args()
    quick = {"seeds": [0, 1], "trials": 6, "epochs": 4, "retrain_seeds": 1} if args.quick else {}
    defaults = {"seeds": [0, 1, 2], "trials": 20, "epochs": 8, "retrain_seeds": 3}
    for key, value in {**defaults, **quick}.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.pruners is None:
        args.pruners = [REFERENCE, *DEFAULT_PRUNERS]
    if min(args.trials, args.epochs, args.retrain_seeds) < 1:
        parser.error("--trials, --epochs and --retrain-seeds must be at least 1")
    args.dataset = "digits" if args.data_dir is None else "cifar10"
    if args.data_dir is not None:
        args.data_dir = str(Path(args.data_dir).resolve())  # runs chdir into temp folders

    import optuna
    import torch

    from search.cli_setup import configure_libraries

    configure_libraries()
    # MLflow announces the creation of each run's fresh store at INFO: noise between rows.
    # Its import sets its loggers' level, so import it first.
    import mlflow  # noqa: F401

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    # WilcoxonPruner's "experimental" warning: the output says what to make of it instead
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    command = shlex.join(["python", *sys.argv])
    cores = os.cpu_count()
    print(
        f"{args.dataset}: {MODEL} width {WIDTH}, TPE, {args.trials} trials x "
        f"{args.epochs} epochs, sampler seeds {','.join(map(str, args.seeds))}; "
        f"pruners {', '.join(args.pruners)}; best trial retrained {args.epochs} epochs, "
        f"{args.retrain_seeds} seed(s), tested once"
    )
    print(
        f"wilcoxon: {'included on request' if 'wilcoxon' in args.pruners else 'left out'}: "
        f"{WILCOXON_WHY}"
    )
    for pruner in args.pruners:
        if args.epochs in rungs(pruner, args.epochs):
            print(
                f"note: {pruner} has a rung at the last epoch ({args.epochs}): trials it prunes "
                f"there have trained in full"
            )
    print(f"{cores} cores ({cpu_name()}), torch {torch.__version__}, optuna {optuna.__version__}")
    print(
        "seed  pruner      trial-epochs  complete/pruned/failed  search s  best trial  "
        "best val %  test %  retrain s"
    )
    pressure_start = cpu_pressure_us()
    began = time.perf_counter()
    runs: dict[str, dict[int, dict]] = {p: {} for p in args.pruners}
    problems = []
    with tempfile.TemporaryDirectory(prefix="pruning-savings-") as tmp:
        for seed in args.seeds:  # seeds outer: a cut-short run still compares pruners
            for pruner in args.pruners:
                r = one_run(pruner, seed, args, Path(tmp))
                runs[pruner][seed] = r
                if r["mismatched"]:
                    problems.append(
                        f"{pruner} seed {seed}: trials {r['mismatched']} have intermediate "
                        f"values that differ from the epochs they reported"
                    )
                print(
                    f"{seed:>4}  {pruner:<10}  {r['epochs']:>12}  "
                    f"{r['complete']:>8}/{r['pruned']}/{r['failed']:<11}  "
                    f"{r['search_s']:>8.1f}  {r['best_trial']:>10}  {r['best_val']:>10.2f}  "
                    f"{r['test_acc']:>6.2f}  "
                    f"{r['retrain_s']:>9.1f}",
                    flush=True,
                )
    total_s = time.perf_counter() - began
    rows = summarise(runs, args.seeds)
    table = [rows[p]["cells"] for p in args.pruners]

    print()
    print(
        f"mean ± sd over {len(args.seeds)} sampler seed(s); saved and regret against none, "
        f"paired by seed (regret = none's test acc - the pruner's, in percentage points)"
    )
    print(text_table(table))
    # a pruner that saved nothing is not the best at pruning, whatever its regret
    candidates = [
        p
        for p in args.pruners
        if p != REFERENCE and rows[p]["saved"] > 0 and rows[p]["regret"] <= MAX_REGRET_PP
    ]
    best = max(candidates, key=lambda p: rows[p]["saved"], default=None)
    if best is None:
        print(
            f"best pruner: no pruner saves trial-epochs within {MAX_REGRET_PP} pp "
            f"test-accuracy regret"
        )
    else:
        print(
            f"best pruner: {best} ({rows[best]['saved']:.1f}% trial-epochs saved at "
            f"{rows[best]['regret']:+.2f} pp regret)"
        )
    met = best is not None and rows[best]["saved"] >= TARGET_SAVED
    print(
        f"target: ≥ {TARGET_SAVED:.0f}% trial-epochs saved at ≤ {MAX_REGRET_PP} pp "
        f"test-accuracy regret for the best pruner: {'met' if met else 'missed'}"
    )
    if "wilcoxon" in args.pruners:
        print(f"note: wilcoxon is shown for a look only: {WILCOXON_WHY}")
    for problem in problems:
        print(f"CHECK FAILED: {problem}")
    pressure = cpu_pressure_us()
    busy = (
        ""
        if pressure is None or pressure_start is None
        else f"; other work kept this run waiting for a CPU "
        f"{(pressure - pressure_start) / 1e4 / total_s:.0f}% of the time (/proc/pressure/cpu)"
    )
    print(f"total wall time {total_s / 60:.1f} min{busy}")

    print()
    print(
        f"`{command}` ({total_s / 60:.1f} min on {cores} CPU cores, {cpu_name()}, "
        f"torch {torch.__version__}, optuna {optuna.__version__}): {args.dataset}, "
        f"{MODEL} width {WIDTH}, TPE, {args.trials} trials x {args.epochs} epochs, "
        f"mean ± sd over sampler seeds {','.join(map(str, args.seeds))}; test accuracy "
        f"of the best trial retrained on train+val ({args.retrain_seeds} training seed(s))"
    )
    print()
    print(markdown_table(table))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
