"""The final retrain: the best (or a chosen) trial's config, trained on the whole training
split (train + validation) for the study's final epochs, once per seed, and evaluated
once on the test split. Logged as a ``final`` child run of the study's parent run."""

from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna.trial import TrialState

from search import interrupts
from search.config import TrialConfig
from search.engine.data_inputs import log_data_inputs
from search.engine.resume import RESUMED_TAG, resumable
from search.errors import ConfigError
from search.store import TRIAL_TAG, Tracker, checkpoint_root
from search.store.locations import final_checkpoint
from search.store.logged_model import log_classifier
from search.study import StudySpec
from search.study.objectives import choose, directions_of
from search.training import Dataset, EpochStats, TrainResult, final_run, load_dataset
from search.training.packaged import packaged_model, predict_proba


@dataclass
class FinalOutcome:
    run_id: str
    trial_number: int
    config: TrialConfig  # the retrained config (first seed)
    results: dict[int, TrainResult]  # per seed
    classes: tuple[str, ...]
    dataset: Dataset | None = field(default=None, repr=False)  # test images for the analysis
    model_uris: dict[int, str] = field(default_factory=dict)  # per seed: the MLflow model
    resumed: dict[int, int] = field(default_factory=dict)  # per seed: epochs restored

    def values(self, key: str) -> list[float]:
        return [getattr(r.final, key) for r in self.results.values()]

    def mean_std(self, key: str) -> tuple[float, float]:
        v = self.values(key)
        return float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0

    @property
    def confusion(self) -> np.ndarray:
        """The test confusion matrix summed over seeds."""
        return sum(r.final.confusion for r in self.results.values())


def pick_trial(study: optuna.Study, trial_number: int | None) -> optuna.trial.FrozenTrial:
    """The best COMPLETE trial, or trial ``trial_number`` (which must be COMPLETE). With
    several objectives "best" is ``objectives.preferred``: the Pareto front's best on the
    first objective."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    directions = directions_of(study)
    number = choose([(t.number, t.values) for t in complete], directions, trial_number)
    if number is None:
        raise ConfigError(
            "the study has no COMPLETE trial to retrain yet", key="study", value=study.study_name
        )
    return next(t for t in complete if t.number == number)


def trial_config(trial: optuna.trial.FrozenTrial) -> TrialConfig:
    return TrialConfig.from_flat(trial.user_attrs["config"])


def classification_text(confusion: np.ndarray, classes: Sequence[str]) -> str:
    """scikit-learn's classification report, rebuilt from a confusion matrix."""
    from sklearn.metrics import classification_report  # here: a search must not import it

    n = len(classes)
    y_true = np.repeat(np.arange(n), confusion.sum(axis=1))
    y_pred = np.concatenate([np.repeat(np.arange(n), row) for row in confusion])
    return classification_report(
        y_true, y_pred, labels=np.arange(n), target_names=list(classes), digits=4, zero_division=0
    )


def final_retrain(
    spec: StudySpec,
    study: optuna.Study,
    tracker: Tracker,
    parent_id: str,
    *,
    trial_number: int | None = None,
    seeds: Sequence[int] | None = None,
    data_dir: str | None = None,
    device: str | None = None,
    on_epoch: Callable[[int, EpochStats], None] | None = None,
    artifacts: Callable[[FinalOutcome, Path], object] | None = None,
    checkpoint_dir: str | None = None,
) -> FinalOutcome:
    """Retrain the best trial (or ``trial_number``) once per seed and test it once per seed,
    as a ``final`` child run of ``parent_id``. ``artifacts(outcome, folder)`` draws extra
    files into the folder logged to that run (``cli.py`` passes the reporting layer's
    ``final_figures``: the confusion matrix and the training curves as PNG).

    Each seed is checkpointed (``search.engine.resume``): a retrain run again after a kill
    or a signal evaluates the seeds that had finished training without training them
    again, continues the interrupted one, and tags its run with the epochs it restored.
    The checkpoints are deleted once the run is FINISHED (unless
    ``runtime.keep_checkpoints``)."""
    trial = pick_trial(study, trial_number)
    seeds = tuple(seeds if seeds is not None else spec.retrain.seeds)
    overrides = {"optim.epochs": spec.retrain.epochs}
    if device:
        overrides["runtime.device"] = device
    base = trial_config(trial).with_overrides(overrides)
    dataset = load_dataset(base, data_dir)
    run_id = tracker.start_child(
        parent_id,
        "final",
        f"final-trial-{trial.number}",
        {TRIAL_TAG: trial.number, "seeds": ",".join(map(str, seeds))},
        base.with_overrides({"runtime.seed": seeds[0]}),
    )
    results: dict[int, TrainResult] = {}
    model_uris: dict[int, str] = {}
    resumed: dict[int, int] = {}
    root = checkpoint_root(spec.name, checkpoint_dir)
    runs = []
    try:
        log_data_inputs(tracker, run_id, dataset, base, final=True)
        for seed in seeds:
            cfg = base.with_overrides({"runtime.seed": seed})
            callback = None if on_epoch is None else (lambda s, seed=seed: on_epoch(seed, s))
            run = resumable(final_checkpoint(root, trial.number, seed), cfg, split="test")
            runs.append(run)
            resumed[seed] = run.restored_epochs
            if any(resumed.values()):
                tracker.set_tags(run_id, {RESUMED_TAG: _per_seed(resumed)})
            with interrupts.stop_at_batch_boundary():
                results[seed] = final_run(cfg, dataset, callback, run.checkpointing)
            metrics = {f"seed{seed}.{k}": v for k, v in results[seed].final.metrics().items()}
            tracker.log_metrics(run_id, {**metrics, **_reusable(seed, results[seed])})
            try:  # the trained weights matter more than their package: keep going
                model_uris[seed] = _log_model(
                    tracker,
                    run_id,
                    trial.number,
                    seed,
                    cfg,
                    dataset,
                    results[seed],
                    metrics,
                    check_on_cpu=seed == seeds[0],
                )
            except Exception as exc:  # noqa: BLE001 - e.g. a model torch.export cannot take
                warnings.warn(
                    f"seed {seed}: the model was not logged as an MLflow model "
                    f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                    f"its weights are in model_seed{seed}.pt",
                    stacklevel=2,
                )
        outcome = FinalOutcome(
            run_id,
            trial.number,
            base.with_overrides({"runtime.seed": seeds[0]}),
            results,
            dataset.classes,
            dataset,
            model_uris,
            resumed,
        )
        _log_outcome(tracker, outcome, artifacts)
    except BaseException as exc:
        tracker.end(run_id, "FAILED", interrupts.ending_reason(exc))
        raise
    tracker.end(run_id, "FINISHED")
    for run in runs:
        run.finished(base.runtime.keep_checkpoints)
    return outcome


def _reusable(seed: int, result: TrainResult) -> dict[str, float]:
    """What else an ablation needs to reuse this seed as a baseline run (``search.ablation``):
    the parameter count, the training time (s) and the per-class test accuracies."""
    extra = {"n_params": result.n_params, "train_seconds": result.train_seconds}
    extra.update({f"class_acc.{i}": a for i, a in enumerate(result.final.per_class_accuracy)})
    return {f"seed{seed}.{k}": v for k, v in extra.items()}


def _per_seed(epochs: dict[int, int]) -> str:
    """``seed0=20,seed1=7``: the epochs each seed restored from its checkpoint."""
    return ",".join(f"seed{seed}={n}" for seed, n in epochs.items())


def finished_final_run(
    spec: StudySpec, study: optuna.Study, seeds: Sequence[int] | None = None
) -> Any | None:
    """The FINISHED final run of the study's best trial with these seeds (default: the
    study file's) and the study file's final epochs, or None: what a rerun of ``search``
    would otherwise retrain again."""
    trial = pick_trial(study, None)
    seeds = tuple(seeds if seeds is not None else spec.retrain.seeds)
    runs = Tracker(spec.name).find_runs(
        "final",
        f"tags.`{TRIAL_TAG}` = '{trial.number}' and tags.seeds = '{','.join(map(str, seeds))}'"
        f" and params.`optim.epochs` = '{spec.retrain.epochs}'"
        " and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def _log_model(
    tracker: Tracker,
    run_id: str,
    trial_number: int,
    seed: int,
    cfg: TrialConfig,
    dataset: Dataset,
    result: TrainResult,
    metrics: dict[str, float],
    check_on_cpu: bool,
) -> str:
    """One seed's model as an MLflow model (``search.store.logged_model``): raw uint8
    images in, class probabilities out, normalisation inside, linked to the run and to the
    seed's test metrics. Returns its ``models:/`` URI.

    The package runs on the CPU in fp32. A final run evaluated on the CPU is reproduced
    exactly; one evaluated on a GPU (bf16, other kernels) can differ by a few images, so
    the package's own test accuracy is then measured on the CPU and logged beside it
    (``seed<N>.packaged_test_accuracy``), for the first seed only (``check_on_cpu``): a
    large model takes minutes per 10,000 images there."""
    mean, std = dataset.mean_std
    model = packaged_model(cfg, dataset.num_classes, result.state_dict, mean, std)
    linked = dict(metrics)
    if check_on_cpu and result.device != "cpu":
        probabilities = predict_proba(model, dataset.test_x, cfg.runtime.eval_batch_size)
        accuracy = float((probabilities.argmax(1).numpy() == dataset.test_y).mean())
        linked[f"seed{seed}.packaged_test_accuracy"] = accuracy
    logged = log_classifier(
        tracker.client,
        run_id,
        model,
        f"final-trial-{trial_number}-seed{seed}",
        dataset.test_x[:4],
        params={"runtime.seed": str(seed)},
        metrics=linked,
        tags={"cifar_search.seed": str(seed), TRIAL_TAG: str(trial_number)},
    )
    return logged.model_uri


def retrain_study(spec: StudySpec, study: optuna.Study, **options: Any) -> FinalOutcome:
    """``final_retrain`` (same keyword ``options``) as a ``final`` child of the study's parent
    MLflow run, made if the study has none yet: the final retrain of ``cli.py search`` and
    ``cli.py retrain``."""
    tracker = Tracker(spec.name)
    return final_retrain(spec, study, tracker, tracker.study_run({}), **options)


def _log_outcome(
    tracker: Tracker,
    outcome: FinalOutcome,
    artifacts: Callable[[FinalOutcome, Path], object] | None,
) -> None:
    summary = {}
    for key in ("accuracy", "top5", "loss", "f1_macro"):
        mean, std = outcome.mean_std(key)
        summary[f"test_{key}_mean"], summary[f"test_{key}_std"] = mean, std
    tracker.log_metrics(outcome.run_id, summary)
    confusion = outcome.confusion
    per_class = np.mean([r.final.per_class_accuracy for r in outcome.results.values()], axis=0)
    seeds = list(outcome.results)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        (out / "config.toml").write_text(outcome.config.to_toml())
        (out / "per_class_accuracy.json").write_text(
            json.dumps(dict(zip(outcome.classes, per_class.tolist())), indent=2)
        )
        (out / "classification_report.txt").write_text(
            f"test split, summed over seeds {seeds}\n\n"
            + classification_text(confusion, outcome.classes)
        )
        if artifacts is not None:
            artifacts(outcome, out)
        for seed, result in outcome.results.items():
            torch.save(result.state_dict, out / f"model_seed{seed}.pt")
        tracker.log_dir(outcome.run_id, out)
