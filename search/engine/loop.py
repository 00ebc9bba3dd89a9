"""The search: an Optuna study whose trials are ``train_one`` runs, logged to MLflow.

Fold -> step mapping for pruning (k-fold): a trial reports validation metric of fold 0
after each of its epochs (step = epoch, 1-based), so the pruner compares every trial on
the same single-split learning curve; once fold 0 has finished, the other folds run
without pruning and the objective is the mean over all folds (std kept as a user attr).
With a holdout (the default) there is only fold 0.
"""
from __future__ import annotations

import dataclasses
import gc
import importlib.metadata
import platform
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna.trial import TrialState

from search.training import protocols as run_mod
from search.engine.coordination import (GRACE_BEATS, HEARTBEAT_S, RETRY_ATTR, ClaimLock, Heartbeat,
                           fail_lost_trials, fail_stale_rdb_trials, rdb_storage,
                           retry_lost_trial)
from search.config import TrialConfig, format_value
from search.errors import ConfigError
from search.study import suggest
from search.store import Liveness, claim_lock_path, open_storage, state_counts, storage_label
from search.study import StudySpec, make_pruner, study_sampler
from search.store import RETRY_TAG, STATE_TAG, TRIAL_TAG, Tracker
from search.training import EpochStats, NonFiniteLossError

# We print our own progress and keep failed trials' tracebacks in MLflow, so Optuna's
# per-trial warnings (a traceback per failed trial) would only repeat them.
optuna.logging.set_verbosity(optuna.logging.ERROR)


@dataclass(frozen=True)
class SearchOptions:
    n_trials: int | None = None      # overrides the study file's target
    timeout: float | None = None     # seconds; overrides the study file's
    data_dir: str | None = None
    device: str | None = None
    storage: str | None = None       # RDB URL; None = journal file under mlruns/
    overrides: Mapping[str, Any] = field(default_factory=dict)  # --set, fixed keys only
    max_consecutive_failures: int = 5
    heartbeat: float = HEARTBEAT_S   # seconds between a running trial's heartbeats


@dataclass(frozen=True)
class EpochEvent:
    trial: int
    fold: int
    folds: int
    stats: EpochStats
    epochs: int
    metric: str
    best: float | None


@dataclass(frozen=True)
class TrialEvent:
    trial: int
    state: str                       # COMPLETE | PRUNED | FAIL
    value: float | None
    reason: str | None
    best: float | None
    counts: dict[str, int]
    params: dict[str, Any]
    retry_of: int | None = None      # the lost trial this one reruns (the one intended repeat)


@dataclass
class SearchOutcome:
    study: optuna.Study
    parent_run_id: str
    target: int
    ran: int                         # trials started by this call


def apply_overrides(spec: StudySpec, overrides: Mapping[str, Any]) -> StudySpec:
    """The study with ``--set`` values fixed; searched keys cannot be fixed this way."""
    searched = {p.key for p in spec.space}
    for key in overrides:
        if key in searched:
            raise ConfigError("this key is searched in [space]; --set can only fix keys "
                              "that are not searched", file=str(spec.path), key=key,
                              value=overrides[key])
    if not overrides:
        return spec
    fixed = {**spec.fixed, **overrides}
    TrialConfig().with_overrides(fixed)  # validate together
    return dataclasses.replace(spec, fixed=fixed)


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for pkg in ("torch", "torchvision", "optuna", "mlflow", "scikit-learn", "numpy"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    return versions


def open_study(spec: StudySpec, storage_url: str | None, *, create: bool = True,
               heartbeat: float = HEARTBEAT_S) -> optuna.Study:
    liveness = Liveness(heartbeat, heartbeat * GRACE_BEATS, retry_lost_trial)
    storage = open_storage(spec.name, storage_url, create=create, liveness=liveness)
    if not create:
        try:
            return optuna.load_study(study_name=spec.name, storage=storage,
                                     sampler=study_sampler(spec), pruner=make_pruner(spec))
        except KeyError:
            raise ConfigError("no trials yet: run `cli.py search` first", key="study",
                              value=spec.name) from None
    return optuna.create_study(study_name=spec.name, storage=storage, sampler=study_sampler(spec),
                               pruner=make_pruner(spec), direction=spec.direction,
                               load_if_exists=True)


def study_tags(spec: StudySpec, storage_url: str | None) -> dict[str, str]:
    tags = {f"study.{k}": v for k, v in spec.settings().items()}
    tags["storage"] = storage_label(spec.name, storage_url)
    tags.update({f"version.{k}": v for k, v in package_versions().items()})
    return tags


def best_value(study: optuna.Study) -> float | None:
    try:
        return study.best_value
    except ValueError:  # no COMPLETE trial yet
        return None


def run_search(spec: StudySpec, options: SearchOptions,
               on_epoch: Callable[[EpochEvent], None] = lambda e: None,
               on_trial: Callable[[TrialEvent], None] = lambda e: None,
               on_wait: Callable[[int], None] = lambda running: None) -> SearchOutcome:
    """Run the study until ``n_trials`` trials are COMPLETE or PRUNED (counting those of
    earlier runs and of other workers), or until the timeout. While the trials that other
    workers are running would reach the target, wait for them (``on_wait(running)`` when
    the wait begins): one that is lost is retried here."""
    overrides = dict(options.overrides)
    if options.device:
        overrides["runtime.device"] = options.device
    spec = apply_overrides(spec, overrides)
    target = options.n_trials if options.n_trials is not None else spec.n_trials
    timeout = options.timeout if options.timeout is not None else spec.timeout
    dataset = run_mod.load_dataset(spec.base_config(), options.data_dir)

    study = open_study(spec, options.storage, heartbeat=options.heartbeat)
    tracker = Tracker(spec.name)
    tags = study_tags(spec, options.storage)
    for key, value in tags.items():
        if study.user_attrs.get(key) != value:
            study.set_user_attr(key, value)
    parent_id = tracker.study_run(tags)
    tracker.client.update_run(parent_id, status="RUNNING")
    metric = spec.metric

    journal = rdb_storage(study) is None  # no Optuna heartbeat: ours (search.engine.coordination)
    claim = ClaimLock(study, claim_lock_path(spec.name, options.storage))
    ending: dict[int, tuple[str, str | None]] = {}  # trial number -> (its run id, reason)

    def objective(trial: optuna.Trial) -> float:
        # The worker is recorded while the claim lock is still held, so a RUNNING trial
        # without a worker, seen under the lock, always means its creator died in between.
        with Heartbeat(study, trial._trial_id, options.heartbeat, beat=journal):
            claim.release()  # the trial exists now: other workers may claim theirs
            return run_trial(trial)

    def run_trial(trial: optuna.Trial) -> float:
        tags = {TRIAL_TAG: trial.number, STATE_TAG: "RUNNING"}
        if RETRY_ATTR in trial.user_attrs:
            tags[RETRY_TAG] = trial.user_attrs[RETRY_ATTR]
        run_id = tracker.start_child(parent_id, "trial", f"trial-{trial.number}", tags)
        trial.set_user_attr("mlflow_run_id", run_id)
        cfg = None
        try:
            cfg = suggest(spec, trial)
            trial.set_user_attr("config", {k: format_value(v) for k, v in cfg.to_flat().items()})
            tracker.log_params(run_id, cfg)
            result = run_mod.validate(cfg, dataset, reporter(trial, cfg, run_id))
        except optuna.TrialPruned as exc:
            # the run ends once Optuna has stored the state (after_trial), so that a worker
            # killed in between leaves a RUNNING run that close_orphan_runs settles
            ending[trial.number] = (run_id, str(exc))
            raise
        except BaseException as exc:
            reason = _failure_reason(exc, cfg)
            trial.set_user_attr("fail_reason", reason)
            if not isinstance(exc, (NonFiniteLossError, ConfigError, KeyboardInterrupt,
                                    torch.OutOfMemoryError)):
                tracker.log_text(run_id, traceback.format_exc(), "traceback.txt")
            tracker.end(run_id, "FAILED", reason, {STATE_TAG: "FAIL"})
            if isinstance(exc, torch.OutOfMemoryError):
                _release_memory()
            raise
        values = [_metric_of(r.final, metric) for r in result.folds]
        value = float(np.mean(values))
        std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        trial.set_user_attr("fold_values", values)
        trial.set_user_attr("value_std", std)
        trial.set_user_attr("n_params", result.folds[0].n_params)
        tracker.log_metrics(run_id, {"objective": value, "objective_std": std,
                                     "n_params": result.folds[0].n_params,
                                     "train_seconds": sum(r.train_seconds for r in result.folds)})
        ending[trial.number] = (run_id, None)
        return value

    def reporter(trial: optuna.Trial, cfg: TrialConfig, run_id: str):
        n_folds = max(1, cfg.data.kfold)

        def report(fold: int, stats: EpochStats) -> None:
            step = fold * cfg.optim.epochs + stats.epoch
            tracker.log_metrics(run_id, {f"fold{fold}.{k}" if n_folds > 1 else k: v
                                         for k, v in stats.metrics().items()}, step=step)
            on_epoch(EpochEvent(trial.number, fold, n_folds, stats, cfg.optim.epochs, metric,
                                best_value(study)))
            if fold == 0:  # pruning sees fold 0's learning curve only (module docstring)
                trial.report(getattr(stats, metric), stats.epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at epoch {stats.epoch}: {metric} "
                                             f"{getattr(stats, metric):.4f}")
        return report

    consecutive_failures = 0

    def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        nonlocal consecutive_failures
        if trial.number in ending:
            run_id, reason = ending.pop(trial.number)
            try:
                end_trial_run(tracker, run_id, trial.state, reason)
            except Exception:  # noqa: BLE001 - MLflow hiccup: close_orphan_runs settles it
                pass
        on_trial(TrialEvent(trial.number, trial.state.name, trial.value,
                            trial.user_attrs.get("fail_reason"), best_value(study),
                            state_counts(study), dict(trial.params),
                            trial.user_attrs.get(RETRY_ATTR)))
        consecutive_failures = consecutive_failures + 1 if trial.state == TrialState.FAIL else 0

    if spec.sampler == "grid":  # the grid sampler repeats points once the grid is exhausted
        target = min(target, spec.space_size() or target)
    deadline = None if timeout is None else time.monotonic() + timeout
    ran, parent_status, waiting = 0, "FAILED", False
    try:
        while deadline is None or time.monotonic() < deadline:
            with claim:  # count + create the next trial atomically across workers
                lost = (fail_lost_trials(study, options.heartbeat * GRACE_BEATS) if journal
                        else fail_stale_rdb_trials(study, options.heartbeat * GRACE_BEATS))
                for number, reason in lost:
                    on_trial(TrialEvent(number, "FAIL", None, reason, best_value(study),
                                        state_counts(study), {}))
                close_orphan_runs(study, tracker)
                counts = state_counts(study)
                done = counts["complete"] + counts["pruned"]
                if done >= target:
                    break
                # The target is covered only if the running trials finish. Their workers may
                # be dead and not yet found out (a stale heartbeat takes GRACE_BEATS beats):
                # wait and look again rather than leave the study short by the lost trials.
                wait = done + counts["running"] >= target
                if not wait:
                    study.optimize(objective, n_trials=1, callbacks=[after_trial],
                                   catch=(Exception,), gc_after_trial=False)
            if wait:
                if not waiting:
                    on_wait(counts["running"])
                waiting = True
                time.sleep(min(5.0, max(0.5, options.heartbeat / 2)))
                continue
            waiting = False
            ran += 1
            if consecutive_failures >= options.max_consecutive_failures:
                last = study.trials[-1].user_attrs.get("fail_reason")
                raise ConfigError(f"{consecutive_failures} trials failed in a row (last: "
                                  f"{last}); stopping instead of burning the budget; see the "
                                  f"failed runs in MLflow", key="study", value=spec.name)
        parent_status = "FINISHED"
    except KeyboardInterrupt:
        parent_status = "KILLED"
        raise
    finally:
        if parent_status != "KILLED":  # an interrupted worker has seconds, not a plot's time
            write_study_plots(study, tracker, parent_id)
        tracker.client.set_terminated(parent_id, status=parent_status)
    return SearchOutcome(study, parent_id, target, ran)


# how a trial's MLflow run ends, by the trial's final Optuna state
RUN_STATUS = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "KILLED",
              TrialState.FAIL: "FAILED"}


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


def _release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _metric_of(report, metric: str) -> float:
    return {"val_acc": report.accuracy, "val_loss": report.loss, "val_top5": report.top5}[metric]


def _failure_reason(exc: BaseException, cfg: TrialConfig | None) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, torch.OutOfMemoryError):
        what = f" (batch {cfg.optim.batch_size}, model {cfg.model.name})" if cfg else ""
        return f"out of memory{what}"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"


def write_study_plots(study: optuna.Study, tracker: Tracker, parent_id: str) -> list[str]:
    """Optuna's plots as self-contained HTML artifacts on the parent run; plots that need
    more trials than exist (importance needs 2 COMPLETE ones) are skipped."""
    import tempfile
    from pathlib import Path

    from search.reporting import study_figures

    written = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, fig in study_figures(study).items():
            path = Path(tmp) / f"{name}.html"
            fig.write_html(str(path), include_plotlyjs=True)
            written.append(path.name)
        if written:
            tracker.log_dir(parent_id, Path(tmp), "optuna")
    return written
