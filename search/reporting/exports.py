"""Getting results back: the best configuration from MLflow, the studies overview, and
a training run's files (``cli.py train --out``).

``study_rows`` serves ``cli.py studies``, a light command: it reads the Optuna storage
directly (no ``search.engine``, which imports torch), and torch is imported only where a
model is saved."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search.errors import ConfigError
from search.store import TRIAL_TAG, Tracker, config_of
from search.study import StudySpec, list_studies, load_study

if TYPE_CHECKING:
    import optuna

    from search.config import TrialConfig
    from search.training import TrainResult


def best_config_document(spec: StudySpec, fmt: str = "toml") -> str:
    """The best COMPLETE trial's config with its scores, read from MLflow (not from the
    Optuna storage), as TOML (scores in comments, so the file is a plain config) or JSON."""
    tracker = Tracker(spec.name, create=False)
    run = tracker.best_trial_run(spec.direction)
    if run is None:
        raise ConfigError("no COMPLETE trial in MLflow yet", key="study", value=spec.name)
    config = config_of(run)
    trial = int(run.data.tags[TRIAL_TAG])
    scores: dict[str, Any] = {
        spec.metric: run.data.metrics["objective"],
        f"{spec.metric}_std": run.data.metrics.get("objective_std", 0.0),
    }
    finals = tracker.find_runs(
        "final",
        f"tags.`{TRIAL_TAG}` = '{trial}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if finals and "test_accuracy_mean" in finals[0].data.metrics:
        m = finals[0].data.metrics
        scores.update(
            final_test_accuracy_mean=m["test_accuracy_mean"],
            final_test_accuracy_std=m["test_accuracy_std"],
            final_seeds=finals[0].data.tags.get("seeds", ""),
            final_epochs=finals[0].data.params.get("optim.epochs", ""),
        )
    if fmt == "json":
        return (
            json.dumps(
                {
                    "study": spec.name,
                    "trial": trial,
                    "mlflow_run_id": run.info.run_id,
                    "scores": scores,
                    "config": config.to_flat(),
                },
                indent=2,
            )
            + "\n"
        )
    header = [
        f"# best configuration of study {spec.name!r}, read from MLflow",
        f"# trial {trial} (MLflow run {run.info.run_id})",
    ]
    header += [
        f"#   {k} = {v:.6g}" if isinstance(v, float) else f"#   {k} = {v}"
        for k, v in scores.items()
    ]
    header.append("# rerun: python cli.py train --config THIS_FILE --test")
    return "\n".join(header) + "\n\n" + config.to_toml()


def best_value(study: optuna.Study) -> float | None:
    """The study's best objective value, or None before its first COMPLETE trial."""
    try:
        return study.best_value
    except ValueError:
        return None


def study_rows(storage_url: str | None = None, studies_dir: Path | None = None) -> list[tuple]:
    """One row per study file: name, dataset, sampler, space size, done/target, best."""
    import optuna

    from search.store import finished_count, journal_path, open_storage

    rows = []
    for path in list_studies(studies_dir):
        try:
            spec = load_study(str(path))
        except ConfigError as exc:
            rows.append((path.stem, "-", "-", "-", "-", "-", f"invalid: {exc.message}"))
            continue
        size = spec.space_size()
        done, best = 0, "-"
        if storage_url or journal_path(spec.name).exists():
            try:
                storage = open_storage(spec.name, storage_url, create=False)
                study = optuna.load_study(study_name=spec.name, storage=storage)
                done = finished_count(study)
                value = best_value(study)
                best = "-" if value is None else f"{value:.4f}"
            except (ConfigError, KeyError):  # no such storage, or no such study in it
                pass
        rows.append(
            (
                spec.name,
                spec.dataset,
                spec.sampler,
                "continuous" if size is None else f"{size:,}",
                f"{done}/{spec.n_trials}",
                best,
                str(path),
            )
        )
    return rows


def write_train_outputs(out: Path, cfg: TrialConfig, results: Sequence[TrainResult]) -> list[Path]:
    """``config.toml``, ``metrics.json`` (one report, or a list of them for k folds) and
    ``model.pt`` (the last run's ``state_dict``) in ``out``."""
    import torch

    def report(r: TrainResult) -> dict:
        f = r.final
        return {
            "split": f.split,
            **f.metrics(),
            "per_class_accuracy": list(f.per_class_accuracy),
            "confusion": f.confusion.tolist(),
            "n_params": r.n_params,
            "train_seconds": r.train_seconds,
            "peak_memory_mb": r.peak_memory_mb,
            "history": [s.__dict__ for s in r.history],
            "stop_reason": r.stop_reason,
        }

    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "config.toml", out / "metrics.json", out / "model.pt"]
    paths[0].write_text(cfg.to_toml())
    paths[1].write_text(
        json.dumps(
            [report(r) for r in results] if len(results) > 1 else report(results[0]), indent=2
        )
    )
    torch.save(results[-1].state_dict, paths[2])
    return paths
