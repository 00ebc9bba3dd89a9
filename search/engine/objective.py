"""One trial: suggest -> train (holdout or k-fold) -> report to the pruner -> log to MLflow.

Fold -> step mapping for pruning (k-fold): a trial reports the validation metric of fold 0
after each of its epochs (step = epoch, 1-based), so the pruner compares every trial on
the same single-split learning curve; once fold 0 has finished, the other folds run
without pruning and the objective is the mean over all folds (std kept as a user attr).
With a holdout (the default) there is only fold 0.

Each trial's run records the data it read (``data_inputs``) and, with system metrics on,
its CPU/GPU use while the trial runs. Each fold is checkpointed (``resume``): a retry of a
lost or interrupted trial continues from its checkpoint, and a signal stops the trial at
the next batch with its state saved and a retry queued.
"""

from __future__ import annotations

import contextlib
import gc
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import torch
from optuna.trial import TrialState

from search import interrupts
from search.config import TrialConfig, format_value
from search.engine.coordination import (
    RETRY_ATTR,
    ClaimLock,
    Heartbeat,
    retry_lost_trial,
    worker_placement,
)
from search.engine.data_inputs import log_data_inputs
from search.engine.resume import RESUMED_ATTR, RESUMED_TAG, TrialCheckpoints, mark_continuation
from search.errors import ConfigError
from search.store import RETRY_TAG, STATE_TAG, TRIAL_TAG, Tracker
from search.store.checkpoints import COST
from search.study import StudySpec, suggest
from search.study.objectives import best_value
from search.training import Dataset, EpochStats, NonFiniteLossError, validate
from search.training.costs import (
    inference_ms_per_image,
    train_flops_per_image,
    training_seconds_per_epoch,
)
from search.training.protocols import ValidationResult

# Seconds between two samples of a trial's system metrics (--system-metrics): short enough
# that a trial of a few epochs gets a curve, not one point, long enough that sampling (a
# psutil/NVML read and an MLflow write each time) costs nothing measurable. MLflow's own
# default, 10 s, would leave a one-minute trial with five points.
SYSTEM_METRICS_INTERVAL_S = 2.0

# how a trial's MLflow run ends, by the trial's final Optuna state
RUN_STATUS = {
    TrialState.COMPLETE: "FINISHED",
    TrialState.PRUNED: "KILLED",
    TrialState.FAIL: "FAILED",
}


@dataclass(frozen=True)
class EpochEvent:
    trial: int
    fold: int
    folds: int
    stats: EpochStats
    epochs: int
    metric: str
    best: float | None


def trial_measures(
    measures: list[str], cfg: TrialConfig, result: ValidationResult, num_classes: int
) -> dict[str, float]:
    """The value of each of ``measures`` (study.objectives) for a finished trial: validation
    metrics as the mean over folds, costs measured on the trial's model and run."""
    folds = result.folds
    out: dict[str, float] = {}
    for measure in measures:
        if measure in ("val_acc", "val_loss", "val_top5"):
            out[measure] = float(np.mean([_metric_of(r.final, measure) for r in folds]))
        elif measure == "params":
            out[measure] = float(folds[0].n_params)
        elif measure == "train_flops":
            out[measure] = train_flops_per_image(cfg, num_classes)
        elif measure == "inference_ms":
            device = torch.device(folds[0].device)
            out[measure] = inference_ms_per_image(cfg, num_classes, device)
        elif measure == "epoch_seconds":
            out[measure] = training_seconds_per_epoch(folds)
        else:
            raise ValueError(f"unknown measure {measure!r}")
    return out


class Objective:
    """The callable Optuna optimizes: one trial of ``spec`` on ``dataset``, logged as a child
    run of ``parent_id``. ``end_run`` closes the trial's MLflow run once Optuna has stored
    the trial's final state (pass it to ``study.optimize``'s callbacks)."""

    def __init__(
        self,
        spec: StudySpec,
        dataset: Dataset,
        study: optuna.Study,
        tracker: Tracker,
        parent_id: str,
        claim: ClaimLock,
        heartbeat_s: float,
        on_epoch: Callable[[EpochEvent], None],
        checkpoint_root: Path,
        *,
        system_metrics: bool = False,
    ) -> None:
        self.spec, self.dataset, self.study = spec, dataset, study
        self.tracker, self.parent_id, self.claim = tracker, parent_id, claim
        self.heartbeat_s, self.on_epoch = heartbeat_s, on_epoch
        self.checkpoint_root = checkpoint_root
        self.system_metrics = system_metrics
        # A journal storage has no Optuna heartbeat: the worker beats itself (coordination).
        self.beat = not _is_rdb(study)
        # trial -> (run id, reason, its checkpoints): ended once Optuna stored the state
        self._ending: dict[int, tuple[str, str | None, TrialCheckpoints | None]] = {}

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        # The worker is recorded while the claim lock is still held, so a RUNNING trial
        # without a worker, seen under the lock, always means its creator died in between.
        with Heartbeat(self.study, trial._trial_id, self.heartbeat_s, beat=self.beat):
            self.claim.release()  # the trial exists now: other workers may claim theirs
            return self._run(trial)

    def _run(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        tags = {TRIAL_TAG: trial.number, STATE_TAG: "RUNNING"}
        if RETRY_ATTR in trial.user_attrs:
            tags[RETRY_TAG] = trial.user_attrs[RETRY_ATTR]
        placement = worker_placement()
        tags.update({f"cifar_search.{name}": value for name, value in placement.items()})
        tracker = self.tracker
        run_id = tracker.start_child(self.parent_id, "trial", f"trial-{trial.number}", tags)
        trial.set_user_attr("mlflow_run_id", run_id)
        for name, value in placement.items():
            trial.set_user_attr(name, value)
        cfg, checkpoints = None, None
        # system metrics are sampled while the trial trains, and stopped (their thread
        # joined, their last samples written) before its run ends, whichever way it ends
        sampling = (
            tracker.system_metrics(run_id, SYSTEM_METRICS_INTERVAL_S)
            if self.system_metrics
            else contextlib.nullcontext()
        )
        written = (COST.writes, COST.bytes, COST.seconds)
        try:
            with sampling:
                cfg = suggest(self.spec, trial)
                flat = {k: format_value(v) for k, v in cfg.to_flat().items()}
                trial.set_user_attr("config", flat)
                tracker.log_params(run_id, cfg)
                log_data_inputs(tracker, run_id, self.dataset, cfg)
                checkpoints = TrialCheckpoints(self.checkpoint_root, self.study, trial, cfg)
                if RETRY_ATTR in trial.user_attrs:
                    trial.set_user_attr(RESUMED_ATTR, checkpoints.restored_epochs)
                    tracker.set_tags(run_id, {RESUMED_TAG: checkpoints.restored_epochs})
                    mark_continuation(self.study, tracker, trial)
                with interrupts.stop_at_batch_boundary():
                    result = validate(
                        cfg, self.dataset, self._reporter(trial, cfg, run_id), checkpoints.fold
                    )
                # costs are measured on the trial's device too: an error here fails the trial
                measures = self.spec.measures
                measured = trial_measures(measures, cfg, result, len(self.dataset.classes))
        except optuna.TrialPruned as exc:
            # the run ends once Optuna has stored the state (end_run), so that a worker
            # killed in between leaves a RUNNING run that close_orphan_runs settles
            self._ending[trial.number] = (run_id, str(exc), checkpoints)
            raise
        except BaseException as exc:
            reason = _failure_reason(exc, cfg)
            trial.set_user_attr("fail_reason", reason)
            expected = (NonFiniteLossError, ConfigError, KeyboardInterrupt, torch.OutOfMemoryError)
            if not isinstance(exc, expected):
                tracker.log_text(run_id, traceback.format_exc(), "traceback.txt")
            if isinstance(exc, KeyboardInterrupt):
                # interrupted, not broken: a retry continues it from its checkpoint
                stopped = self.study._storage.get_trial(trial._trial_id)
                retry_lost_trial(self.study, stopped, interrupted=True)
            elif checkpoints is not None:
                checkpoints.finished(stored=False)
            tracker.end(run_id, "FAILED", reason, {STATE_TAG: "FAIL"})
            if isinstance(exc, torch.OutOfMemoryError):
                _release_memory()
            raise
        values = [_metric_of(r.final, self.spec.metric) for r in result.folds]
        std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        n_params = result.folds[0].n_params
        trial.set_user_attr("fold_values", values)
        trial.set_user_attr("value_std", std)
        trial.set_user_attr("n_params", n_params)
        trial.set_user_attr("objective_values", measured)
        metrics = {
            "objective_std": std,
            "n_params": n_params,
            "train_seconds": sum(r.train_seconds for r in result.folds),
            "checkpoint_writes": COST.writes - written[0],
            "checkpoint_mb": (COST.bytes - written[1]) / 2**20,
            "checkpoint_seconds": COST.seconds - written[2],
            **{f"objective.{m}": v for m, v in measured.items()},
        }
        if not self.spec.multi_objective:
            metrics["objective"] = measured[self.spec.metric]
        tracker.log_metrics(run_id, metrics)
        self._ending[trial.number] = (run_id, None, checkpoints)
        objective = tuple(measured[m] for m in self.spec.measures)
        return objective if self.spec.multi_objective else objective[0]

    def _reporter(
        self, trial: optuna.Trial, cfg: TrialConfig, run_id: str
    ) -> Callable[[int, EpochStats], None]:
        n_folds = max(1, cfg.data.kfold)
        metric, epochs = self.spec.metric, cfg.optim.epochs

        def report(fold: int, stats: EpochStats) -> None:
            step = fold * epochs + stats.epoch
            metrics = {
                f"fold{fold}.{k}" if n_folds > 1 else k: v for k, v in stats.metrics().items()
            }
            self.tracker.log_metrics(run_id, metrics, step=step)
            self.on_epoch(
                EpochEvent(
                    trial.number, fold, n_folds, stats, epochs, metric, best_value(self.study)
                )
            )
            # Pruning sees fold 0's learning curve only (module docstring); Optuna cannot
            # prune a multi-objective study (Trial.report raises there).
            if fold == 0 and not self.spec.multi_objective:
                value = getattr(stats, metric)
                trial.report(value, stats.epoch)
                # After the last epoch of a holdout trial there is nothing left to save:
                # pruning it would only throw its finished result away (a Hyperband rung can
                # fall on the last epoch). With k folds, the other folds are still to run.
                nothing_left = stats.epoch >= epochs and n_folds == 1
                if not nothing_left and trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at epoch {stats.epoch}: {metric} {value:.4f}")

        return report

    def end_run(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Optuna callback: end the trial's MLflow run as the trial ended."""
        if trial.number not in self._ending:
            return
        run_id, reason, checkpoints = self._ending.pop(trial.number)
        if checkpoints is not None:
            checkpoints.finished(stored=True)
        try:
            end_trial_run(self.tracker, run_id, trial.state, reason)
        except Exception:  # noqa: BLE001 - MLflow hiccup: close_orphan_runs settles it
            pass


def end_trial_run(tracker: Tracker, run_id: str, state: TrialState, reason: str | None) -> None:
    tracker.end(run_id, RUN_STATUS[state], reason, {STATE_TAG: state.name})


def close_orphan_runs(study: optuna.Study, tracker: Tracker) -> None:
    """MLflow runs still RUNNING for trials that are finished end as their trial did: a
    worker killed after Optuna stored the trial's state but before the run was closed, or a
    lost worker's trial failed by the heartbeat check (FAILED, with the trial's reason)."""
    states = {t.number: t for t in study.get_trials(deepcopy=False)}
    for run in tracker.find_runs("trial", "attributes.status = 'RUNNING'"):
        trial = states.get(int(run.data.tags.get(TRIAL_TAG, -1)))
        if trial is None or trial.state not in RUN_STATUS:
            continue
        reason = None
        if trial.state == TrialState.FAIL:
            reason = trial.user_attrs.get("fail_reason") or "worker lost (stale heartbeat)"
        end_trial_run(tracker, run.info.run_id, trial.state, reason)


def _is_rdb(study: optuna.Study) -> bool:
    from search.engine.coordination import rdb_storage

    return rdb_storage(study) is not None


def _release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _metric_of(report, metric: str) -> float:
    return {"val_acc": report.accuracy, "val_loss": report.loss, "val_top5": report.top5}[metric]


def _failure_reason(exc: BaseException, cfg: TrialConfig | None) -> str:
    if isinstance(exc, torch.OutOfMemoryError):
        what = f" (batch {cfg.optim.batch_size}, model {cfg.model.name})" if cfg else ""
        return f"out of memory{what}"
    if isinstance(exc, KeyboardInterrupt):
        return interrupts.ending_reason(exc)
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"
