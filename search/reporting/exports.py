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
from search.reporting.pareto import front_summary
from search.reporting.text import metric_text
from search.store import TRIAL_TAG, Tracker, config_of
from search.study import StudySpec, list_studies, load_study
from search.study.objectives import best_value, choose, pareto_front

if TYPE_CHECKING:
    from search.config import TrialConfig
    from search.training import Dataset, TrainResult


def best_config_document(
    spec: StudySpec, fmt: str = "toml", trial_number: int | None = None
) -> str:
    """The best COMPLETE trial's config (or trial ``trial_number``'s) with its scores, read
    from MLflow (not from the Optuna storage), as TOML (scores in comments, so the file is a
    plain config) or JSON. A multi-objective study's Pareto front comes with it (TOML
    comments, or a ``pareto_front`` list), and "best" is the front's best on the first
    objective (``search.study.objectives.preferred``)."""
    trial, run, config, scores, candidates = _best(spec, trial_number)
    if fmt == "json":
        return (
            json.dumps(
                {
                    "study": spec.name,
                    "trial": trial,
                    "mlflow_run_id": run.info.run_id,
                    "scores": scores,
                    "config": config.to_flat(),
                    **_front_json(spec, candidates),
                },
                indent=2,
            )
            + "\n"
        )
    which = "best configuration" if trial_number is None else "configuration"
    header = [
        f"# {which} of study {spec.name!r}, read from MLflow",
        f"# trial {trial} (MLflow run {run.info.run_id})",
    ]
    if spec.multi_objective:
        header += [
            f"# {line}"
            for text in front_summary(spec, candidates, trial)
            for line in text.splitlines()
        ]
    header += [
        f"#   {k} = {v:.6g}" if isinstance(v, float) else f"#   {k} = {v}"
        for k, v in scores.items()
    ]
    header += _rerun_comment(spec, scores)
    return "\n".join(header) + "\n\n" + config.to_toml()


def _best(spec: StudySpec, trial_number: int | None) -> tuple:
    """(trial number, its MLflow run, the config a final retrain trains, its scores, every
    COMPLETE trial's (number, values)). The config is the final retrain's: the trial's with
    the final epochs and the final run's first seed (the study file's when it has none yet),
    so that ``train --config FILE --test`` reruns the final result, not the search's."""
    tracker = Tracker(spec.name, create=False)
    runs = tracker.complete_trial_runs(spec.objective_metrics)
    candidates = [(n, values) for n, values, _ in runs]
    trial = choose(candidates, spec.directions, trial_number)
    if trial is None:
        raise ConfigError("no COMPLETE trial in MLflow yet", key="study", value=spec.name)
    values, run = next((v, r) for n, v, r in runs if n == trial)
    scores: dict[str, Any] = dict(zip(spec.measures, values, strict=True))
    scores[f"{spec.metric}_std"] = run.data.metrics.get("objective_std", 0.0)
    scores["search_epochs"] = config_of(run).optim.epochs
    final = {"optim.epochs": spec.retrain.epochs, "runtime.seed": spec.retrain.seeds[0]}
    finals = tracker.find_runs(
        "final",
        f"tags.`{TRIAL_TAG}` = '{trial}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if finals and "test_accuracy_mean" in finals[0].data.metrics:
        m, params = finals[0].data.metrics, finals[0].data.params
        final = {
            "optim.epochs": int(params["optim.epochs"]),
            "runtime.seed": int(params["runtime.seed"]),
        }
        seed = final["runtime.seed"]
        scores.update(
            final_test_accuracy_mean=m["test_accuracy_mean"],
            final_test_accuracy_std=m["test_accuracy_std"],
            final_seeds=finals[0].data.tags.get("seeds", ""),
            final_epochs=final["optim.epochs"],
            **{f"final_test_accuracy_seed{seed}": m[f"seed{seed}.test_accuracy"]},
        )
    return trial, run, config_of(run).with_overrides(final), scores, candidates


def _rerun_comment(spec: StudySpec, scores: dict[str, Any]) -> list[str]:
    prefix = "final_test_accuracy_seed"
    seed_key = next((k for k in scores if k.startswith(prefix)), None)
    what = (
        f"the final retrain's seed {seed_key[len(prefix) :]}: test accuracy "
        f"{100 * scores[seed_key]:.2f}% (bit for bit on a CPU)"
        if seed_key
        else "the final retrain this study's file asks for (not run yet)"
    )
    return [
        "# rerun: python cli.py train --config THIS_FILE --test",
        f"#   reproduces {what}; the search trained it for {scores['search_epochs']} epochs "
        f"on the training part",
    ]


def best_line(spec: StudySpec, trial_number: int | None = None) -> str:
    """``cli.py best --output``: the trial's validation score beside its final test result."""
    trial, _, _, scores, _ = _best(spec, trial_number)
    metric = spec.measures[0]
    line = f"trial {trial}: {metric} {metric_text(metric, scores[metric])} (search)"
    if "final_test_accuracy_mean" in scores:
        line += (
            f", final test accuracy {100 * scores['final_test_accuracy_mean']:.2f}% "
            f"(seeds {scores['final_seeds']}, {scores['final_epochs']} epochs)"
        )
    return line


def register_model(spec: StudySpec, name: str, trial_number: int | None = None) -> str:
    """Put the retrained model of the best trial (or of ``trial_number``) into the MLflow
    Model Registry as a new version of ``name``: the first seed's model of that trial's
    latest final retrain. Returns the line to print."""
    from search.store.logged_model import logged_models, register

    tracker = Tracker(spec.name, create=False)
    runs = tracker.complete_trial_runs(spec.objective_metrics)
    trial = choose([(n, v) for n, v, _ in runs], spec.directions, trial_number)
    if trial is None:
        raise ConfigError("no COMPLETE trial in MLflow yet", key="study", value=spec.name)
    finals = [
        r
        for r in tracker.find_runs(
            "final", f"tags.`{TRIAL_TAG}` = '{trial}'", order_by=["attributes.start_time DESC"]
        )
        if r.info.status == "FINISHED"
    ]
    models = [m for m in logged_models(tracker.client, finals[0].info.run_id)] if finals else []
    if not models:
        which = "" if trial_number is None else f" --trial {trial}"
        raise ConfigError(
            f"trial {trial} has no retrained MLflow model to register: run "
            f"`cli.py retrain --study {spec.name}{which}` first",
            key="--register",
            value=name,
        )
    version = register(tracker.client, models[0].model_id, name)
    return (
        f"registered {name} version {version}: {models[0].name} (trial {trial}, MLflow "
        f"model {models[0].model_id}); load it with "
        f"mlflow.pytorch.load_model('models:/{name}/{version}')"
    )


def study_front(spec: StudySpec, trial_number: int | None = None) -> str:
    """A multi-objective study's Pareto front from MLflow, as ``best`` prints it."""
    runs = Tracker(spec.name, create=False).complete_trial_runs(spec.objective_metrics)
    candidates = [(n, values) for n, values, _ in runs]
    return "\n".join(front_summary(spec, candidates, trial_number))


def _front_json(spec: StudySpec, candidates: list[tuple[int, tuple]]) -> dict[str, Any]:
    if not spec.multi_objective:
        return {}
    front = pareto_front(candidates, spec.directions)
    return {
        "objectives": [{"measure": o.measure, "direction": o.direction} for o in spec.objectives],
        "pareto_front": [{"trial": n, **dict(zip(spec.measures, v))} for n, v in front],
    }


def study_rows(
    storage_url: str | None = None,
    studies_dir: Path | None = None,
    checkpoint_dir: str | None = None,
) -> list[tuple]:
    """One row per study file: name, dataset, sampler, space size, done/target, best (the
    best value, or the size of a multi-objective study's Pareto front), the trials waiting
    to continue from a checkpoint, the disk its checkpoints use, and the file."""
    import optuna

    from search.store import checkpoint_root, finished_count, journal_path, open_storage
    from search.store.checkpoints import disk_usage

    rows = []
    for path in list_studies(studies_dir):
        try:
            spec = load_study(str(path))
        except ConfigError as exc:
            rows.append((path.stem, *["-"] * 7, f"invalid: {exc.message}"))
            continue
        size = spec.space_size()
        done, best, waiting = 0, "-", "-"
        checkpoints = checkpoint_root(spec.name, checkpoint_dir)
        if storage_url or journal_path(spec.name).exists():
            try:
                storage = open_storage(spec.name, storage_url, create=False)
                study = optuna.load_study(study_name=spec.name, storage=storage)
                done = finished_count(study)
                waiting = _waiting_text(waiting_to_continue(study, checkpoints))
                value = best_value(study)
                if spec.multi_objective:  # several objectives: a front, no best value
                    front = len(study.best_trials)
                    best = f"front of {front}" if front else "-"
                else:
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
                waiting,
                _megabytes(disk_usage(checkpoints)),
                str(path),
            )
        )
    return rows


def waiting_to_continue(study: Any, root: Path) -> list[int]:
    """The trials whose checkpoint folders wait for a worker to continue them: FAIL trials
    (lost, or stopped by a signal such as SLURM's time-limit warning) whose folder no retry
    has taken over yet; the study's next worker continues each from its last checkpoint."""
    from optuna.trial import TrialState

    from search.store.locations import trial_checkpoints

    lost = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    return [t.number for t in lost if trial_checkpoints(root, t.number).is_dir()]


def _waiting_text(numbers: list[int]) -> str:
    if not numbers:
        return "-"
    shown = ", ".join(map(str, numbers[:5])) + (", ..." if len(numbers) > 5 else "")
    return f"{len(numbers)} (trial {shown})"


def _megabytes(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:,.1f} MB" if n_bytes else "-"


def write_train_outputs(
    out: Path, cfg: TrialConfig, results: Sequence[TrainResult], dataset: Dataset | None = None
) -> list[Path]:
    """``config.toml``, ``metrics.json`` (one report, or a list of them for k folds) and
    ``model.pt`` (the last run's ``state_dict``) in ``out``; after a test-split run, also
    its error analysis (``error_report``: JSON and PNGs)."""
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
    if dataset is not None:
        from search.reporting.error_report import write_error_analysis

        paths += write_error_analysis(cfg, results[-1], dataset, out)
    return paths
