"""How a search runs: claim the next trial -> count -> run one trial -> check the stop
rules, until the study has its target of finished (COMPLETE + PRUNED) trials."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import platform
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from search.config import TrialConfig
from search.engine.coordination import (
    GRACE_BEATS,
    HEARTBEAT_S,
    RETRY_ATTR,
    ClaimLock,
    fail_lost_trials,
    fail_stale_rdb_trials,
    rdb_storage,
    retry_lost_trial,
)
from search.engine.objective import EpochEvent, Objective, close_orphan_runs
from search.engine.resume import sweep_trial_folders
from search.engine.warm_start import FROM_ATTR, enqueue_warm_start, warm_start_trials
from search.errors import ConfigError
from search.store import (
    Liveness,
    Tracker,
    checkpoint_root,
    claim_lock_path,
    open_storage,
    state_counts,
    storage_label,
)
from search.store.filesystems import refuse_unsafe_sharing
from search.store.tracker import gpu_metrics_available, require_system_metrics
from search.study import StudySpec, make_pruner, study_sampler
from search.study.objectives import best_value, directions_of
from search.training import load_dataset

WORKER_ENV = "CIFAR_SEARCH_WORKER"  # a --workers worker's index, used to prefix its output


@dataclass(frozen=True)
class SearchOptions:
    n_trials: int | None = None  # overrides the study file's target
    timeout: float | None = None  # seconds; overrides the study file's
    data_dir: str | None = None
    device: str | None = None
    storage: str | None = None  # RDB URL; None = journal file under mlruns/
    overrides: Mapping[str, Any] = field(default_factory=dict)  # --set, fixed keys only
    max_consecutive_failures: int = 5
    heartbeat: float = HEARTBEAT_S  # seconds between a running trial's heartbeats
    system_metrics: bool = False  # sample CPU/GPU use and memory into each trial's run
    checkpoint_dir: str | None = None  # None = mlruns/checkpoints/ (store.checkpoint_root)


@dataclass(frozen=True)
class TrialEvent:
    trial: int
    state: str  # COMPLETE | PRUNED | FAIL
    value: float | None  # the (first) objective's value
    reason: str | None
    best: float | None  # None for a multi-objective study
    counts: dict[str, int]
    params: dict[str, Any]
    retry_of: int | None = None  # the lost trial this one reruns (the one intended repeat)
    values: dict[str, float] | None = None  # every objective's value, by measure
    front: int | None = None  # trials on the Pareto front (multi-objective studies)
    warm_start_from: str | None = None  # "<source study>#<trial>" for a warm-start trial


@dataclass
class SearchOutcome:
    study: optuna.Study
    parent_run_id: str
    target: int
    ran: int  # trials started by this call
    # time.monotonic() when this call's first trial started (None: it ran none), when its
    # last one ended, and when the end of the study (its figures) was done
    first_trial_at: float | None = None
    trials_ended_at: float = 0.0
    ended_at: float = 0.0


def apply_overrides(spec: StudySpec, overrides: Mapping[str, Any]) -> StudySpec:
    """The study with ``--set`` values fixed; searched keys cannot be fixed this way."""
    searched = {p.key for p in spec.space}
    for key in overrides:
        if key in searched:
            raise ConfigError(
                "this key is searched in [space]; --set can only fix keys that are not searched",
                file=str(spec.path),
                key=key,
                value=overrides[key],
            )
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


def open_study(
    spec: StudySpec, storage_url: str | None, *, create: bool = True, heartbeat: float = HEARTBEAT_S
) -> optuna.Study:
    """The study in its storage (created when ``create``), checked against the file's
    objectives: Optuna keeps a study's directions for good."""
    liveness = Liveness(heartbeat, heartbeat * GRACE_BEATS, retry_lost_trial)
    storage = open_storage(spec.name, storage_url, create=create, liveness=liveness)
    common = {
        "study_name": spec.name,
        "storage": storage,
        "sampler": study_sampler(spec),
        "pruner": make_pruner(spec),
    }
    if create:
        study = optuna.create_study(**common, directions=spec.directions, load_if_exists=True)
    else:
        try:
            study = optuna.load_study(**common)
        except KeyError:
            raise ConfigError(
                "no trials yet: run `cli.py search` first", key="study", value=spec.name
            ) from None
    stored = directions_of(study)
    names = study.metric_names  # None for a study made before objectives were named
    if stored != spec.directions or (names is not None and names != spec.measures):
        what = ", ".join(
            f"{n}:{d}" for n, d in zip(names or ["?"] * len(stored), stored, strict=True)
        )
        raise ConfigError(
            f"the stored study optimizes {what} but the file now names "
            f"{', '.join(map(str, spec.objectives))}: a study's objectives cannot change; "
            f"give the changed file a new name",
            file=str(spec.path),
            key="study.objectives",
        )
    if create and names is None:
        with warnings.catch_warnings():  # experimental in Optuna 5, and stable in use
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(spec.measures)  # optuna-dashboard's axis and column names
    return study


def several_writers() -> bool:
    """Whether other processes of this study write its stores now: a ``--workers`` worker,
    or a task of a SLURM job array (``cli.py slurm``)."""
    return bool(os.environ.get(WORKER_ENV) or in_slurm_array())


def in_slurm_array() -> bool:
    """A task of a SLURM job array: other tasks of the study may run on other nodes."""
    return bool(os.environ.get("SLURM_ARRAY_JOB_ID"))


def study_tags(spec: StudySpec, storage_url: str | None) -> dict[str, str]:
    tags = {f"study.{k}": v for k, v in spec.settings().items()}
    tags["storage"] = storage_label(spec.name, storage_url)
    tags.update({f"version.{k}": v for k, v in package_versions().items()})
    return tags


def run_search(
    spec: StudySpec,
    options: SearchOptions,
    on_epoch: Callable[[EpochEvent], None] = lambda e: None,
    on_trial: Callable[[TrialEvent], None] = lambda e: None,
    on_wait: Callable[[int], None] = lambda running: None,
    *,
    on_warning: Callable[[str], None] = lambda line: None,
    after_search: Callable[[optuna.Study, Tracker, str], Any] | None = None,
) -> SearchOutcome:
    """Run the study until ``n_trials`` trials are COMPLETE or PRUNED (counting those of
    earlier runs and of other workers), or until the timeout. While the trials that other
    workers are running would reach the target, wait for them (``on_wait(running)`` when
    the wait begins): one that is lost is retried here. ``on_warning(line)`` gets the warm
    start's dropped values (and, with ``system_metrics`` on a GPU without nvidia-ml-py, that
    GPU figures are missing). ``after_search(study, tracker, parent_run_id)`` runs at the
    end unless the search was interrupted."""
    overrides = dict(options.overrides)
    if options.device:
        overrides["runtime.device"] = options.device
    spec = apply_overrides(spec, overrides)
    target = options.n_trials if options.n_trials is not None else spec.n_trials
    if spec.sampler == "grid":  # the grid sampler repeats points once the grid is exhausted
        target = min(target, spec.space_size() or target)
    timeout = options.timeout if options.timeout is not None else spec.timeout
    if options.system_metrics:
        _check_system_metrics(on_warning)
    if several_writers():
        refuse_unsafe_sharing(spec.name, options.storage, across_nodes=in_slurm_array())
    dataset = load_dataset(spec.base_config(), options.data_dir)
    warm_start = warm_start_trials(spec, options.storage)
    study = open_study(spec, options.storage, heartbeat=options.heartbeat)
    claim = ClaimLock(study, claim_lock_path(spec.name, options.storage))
    # Workers starting together would each create the experiment and the study's parent
    # run; the tracker's own file lock covers a local SQLite store only, not a server.
    with claim:
        tracker = Tracker(spec.name)
        parent_id = _start_study_run(study, tracker, study_tags(spec, options.storage))
    objective = Objective(
        spec,
        dataset,
        study,
        tracker,
        parent_id,
        claim,
        options.heartbeat,
        on_epoch,
        checkpoint_root(spec.name, options.checkpoint_dir),
        system_metrics=options.system_metrics,
    )
    failures = FailureStreak(options.max_consecutive_failures, spec.name)

    def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        objective.end_run(study, trial)
        on_trial(_trial_event(study, trial, spec))
        failures.record(trial)

    grace = options.heartbeat * GRACE_BEATS
    deadline = None if timeout is None else time.monotonic() + timeout
    ran, parent_status, waiting = 0, "FAILED", False
    first_trial_at, trials_ended_at = None, time.monotonic()
    try:
        with claim:  # once per study, whichever worker gets here first
            enqueue_warm_start(study, spec, warm_start, on_warning, target)
        while deadline is None or time.monotonic() < deadline:
            with claim:  # count + create the next trial atomically across workers
                lost = (
                    fail_stale_rdb_trials(study, grace)
                    if rdb_storage(study)
                    else fail_lost_trials(study, grace)
                )
                for number, reason in lost:
                    on_trial(_lost_event(study, spec, number, reason))
                close_orphan_runs(study, tracker)
                counts = state_counts(study)
                done = counts["complete"] + counts["pruned"]
                if done >= target:
                    keep = spec.base_config().runtime.keep_checkpoints
                    sweep_trial_folders(study, objective.checkpoint_root, keep)
                    break
                # The target is covered only if the running trials finish. Their workers may
                # be dead and not yet found out (a stale heartbeat takes GRACE_BEATS beats):
                # wait and look again rather than leave the study short by the lost trials.
                wait = done + counts["running"] >= target
                if not wait:
                    first_trial_at = first_trial_at or time.monotonic()
                    study.optimize(
                        objective,
                        n_trials=1,
                        callbacks=[after_trial],
                        catch=(Exception,),
                        gc_after_trial=False,
                    )
            if wait:
                if not waiting:
                    on_wait(counts["running"])
                waiting = True
                time.sleep(min(5.0, max(0.5, options.heartbeat / 2)))
                continue
            waiting = False
            ran += 1
            failures.check()
        parent_status = "FINISHED"
        trials_ended_at = time.monotonic()
    except KeyboardInterrupt:
        parent_status = "KILLED"
        raise
    finally:
        if parent_status != "KILLED" and after_search is not None:
            # an interrupted worker has seconds, not a plot's time; a plot that fails
            # costs the plot, not the search
            try:
                after_search(study, tracker, parent_id)
            except Exception as exc:  # noqa: BLE001
                on_warning(f"study plots not written: {type(exc).__name__}: {exc}")
        tracker.client.set_terminated(parent_id, status=parent_status)
    return SearchOutcome(
        study, parent_id, target, ran, first_trial_at, trials_ended_at, time.monotonic()
    )


def _check_system_metrics(on_warning: Callable[[str], None]) -> None:
    """psutil is needed (an error, before any trial); nvidia-ml-py only for GPU figures."""
    import torch

    require_system_metrics()
    if torch.cuda.is_available() and not gpu_metrics_available():
        on_warning("system metrics without GPU figures: pip install nvidia-ml-py to add them")


class FailureStreak:
    """Stop rule: this many trials failed in a row means the study is broken (a bad fixed
    value, no memory for any configuration), not unlucky: stop instead of burning budget."""

    def __init__(self, limit: int, study_name: str) -> None:
        self.limit, self.study_name, self.count = limit, study_name, 0
        self.last_reason: str | None = None

    def record(self, trial: optuna.trial.FrozenTrial) -> None:
        """``trial``: one this worker ran. (The study's newest trial may be another
        worker's, running: its reason would be None.)"""
        if trial.state == TrialState.FAIL:
            self.count += 1
            self.last_reason = trial.user_attrs.get("fail_reason", "no reason recorded")
        else:
            self.count = 0

    def check(self) -> None:
        if self.count < self.limit:
            return
        last = self.last_reason
        raise ConfigError(
            f"{self.count} trials failed in a row (last: {last}); stopping "
            f"instead of burning the budget; see the failed runs in MLflow",
            key="study",
            value=self.study_name,
        )


def _start_study_run(study: optuna.Study, tracker: Tracker, tags: dict[str, str]) -> str:
    """Record the study's settings on the study and on its MLflow parent run (reused by
    every worker and resumed run), marked RUNNING while this worker searches."""
    for key, value in tags.items():
        if study.user_attrs.get(key) != value:
            study.set_user_attr(key, value)
    parent_id = tracker.study_run(tags)
    tracker.client.update_run(parent_id, status="RUNNING")
    return parent_id


def _front_size(study: optuna.Study, spec: StudySpec) -> int | None:
    return len(study.best_trials) if spec.multi_objective else None


def _lost_event(study: optuna.Study, spec: StudySpec, number: int, reason: str) -> TrialEvent:
    counts, best = state_counts(study), best_value(study)
    return TrialEvent(
        number, "FAIL", None, reason, best, counts, {}, front=_front_size(study, spec)
    )


def _trial_event(
    study: optuna.Study, trial: optuna.trial.FrozenTrial, spec: StudySpec
) -> TrialEvent:
    values = None if trial.values is None else dict(zip(spec.measures, trial.values, strict=True))
    return TrialEvent(
        trial.number,
        trial.state.name,
        None if trial.values is None else trial.values[0],
        trial.user_attrs.get("fail_reason"),
        best_value(study),
        state_counts(study),
        dict(trial.params),
        trial.user_attrs.get(RETRY_ATTR),
        values,
        _front_size(study, spec),
        trial.user_attrs.get(FROM_ATTR),
    )
