"""After a search: do the Optuna storage and MLflow agree, and how fast did each trial
train? Prints one line per trial (state in Optuna, state tag and status of its MLflow runs,
model, mean training images/s over its epochs after the first) and exits 1 when a finished
trial has no MLflow run, when its run's state disagrees, or when a run is left RUNNING.

    python benchmarks/search_consistency.py --study gpu_search
    python benchmarks/search_consistency.py --study smoke --storage sqlite:///study.db

The images/s of trials that shared a GPU are each worker's own; compare their sum with
`cli.py bench --concurrency` for the same model and batch size.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", required=True, help="the study's name")
    parser.add_argument("--storage", default=None, help="Optuna storage URL (default: journal)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import optuna

    from search.store.optuna_store import open_storage
    from search.store.tracker import STATE_TAG, TRIAL_TAG, Tracker

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(args.study, args.storage, create=False)
    trials = optuna.load_study(study_name=args.study, storage=storage).trials
    tracker = Tracker(args.study, create=False)
    runs = defaultdict(list)
    for run in tracker.find_runs("trial", max_results=50000):
        runs[int(run.data.tags[TRIAL_TAG])].append(run)

    problems, rates = [], defaultdict(list)
    print("trial  optuna     mlflow (state tag / status)        model         images/s")
    for t in trials:
        ours = runs.pop(t.number, [])
        states = ", ".join(f"{r.data.tags.get(STATE_TAG, '-')}/{r.info.status}" for r in ours)
        model = t.params.get("model.name", "-")
        history = [
            m.value
            for r in ours
            for m in tracker.client.get_metric_history(r.info.run_id, "images_per_s")
            if m.step > 1  # epoch 1 pays for cuDNN autotuning
        ]
        rate = statistics.mean(history) if history else float("nan")
        if history and t.state.name == "COMPLETE":
            rates[model].append(rate)
        print(f"{t.number:>5}  {t.state.name:<9}  {states or '-':<33}  {model:<12}  {rate:>9,.0f}")
        if t.state.is_finished() and not ours:
            problems.append(f"trial {t.number} ({t.state.name}) has no MLflow run")
        if t.state.is_finished() and ours and ours[-1].data.tags.get(STATE_TAG) != t.state.name:
            problems.append(f"trial {t.number}: Optuna {t.state.name}, MLflow {states}")
        problems += [
            f"trial {t.number}: MLflow run {r.info.run_id} still RUNNING"
            for r in ours
            if r.info.status == "RUNNING" and t.state.is_finished()
        ]
    problems += [f"MLflow runs of trial {n}, which Optuna does not have" for n in runs]
    for model, values in sorted(rates.items()):
        print(f"{model}: {statistics.mean(values):,.0f} images/s per trial "
              f"(mean of {len(values)} complete trials)")  # fmt: skip
    print("\n".join(problems) if problems else "journal and MLflow agree")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
