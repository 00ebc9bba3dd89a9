"""The Python API for notebooks and scripts (docs/python-api.md): what ``cli.py`` does, as
functions that return results instead of printing them. Each takes a study by name, path
or ``StudySpec``, leaves the state the command leaves (Optuna storage, MLflow runs,
checkpoints), and raises ``ConfigError`` where the command prints its one error line.

Quiet by default (``_library_output``); ``progress=True`` prints the command's lines and
the ``on_*`` callbacks get the events. No signal handler is installed: an interrupt ends
the running trial FAIL "interrupted", and calling again continues it from its checkpoint."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
import torch

from search import engine, reporting
from search.ablation import AblationOutcome, RunRecord, Variant, run_ablation
from search.config import TrialConfig
from search.engine import EpochEvent, SearchOptions, TrialEvent
from search.errors import ConfigError
from search.reporting.exports import best_config_document
from search.retrain import FinalOutcome, finished_final_run, pick_trial, retrain_study
from search.store import TRIAL_TAG, Tracker, state_counts
from search.store.locations import PROJECT_ROOT
from search.store.logged_model import logged_models
from search.study import StudySpec
from search.study import load_study as load_study_file
from search.training import EpochStats

StudyLike = str | os.PathLike | StudySpec  # a study's name, its file, or the loaded study
PathLike = str | os.PathLike | None
Echo = Callable[..., None]  # echo(line, err=False), as reporting's progress classes take it

# read by MLflow as it runs: no artifact download progress bar, no "View run ... at: URL"
_QUIET_ENV = {
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}
# MLflow's loggers, and those of the database migrations it and Optuna's RDB storage run
_QUIET_LOGGERS = ("mlflow", "alembic", "sqlalchemy.engine")


@dataclass
class SearchResult:
    """What ``search`` leaves: the Optuna study and, with ``retrain``, its final retrain."""

    spec: StudySpec
    study: optuna.Study
    ran: int | None  # trials this call started (None with several workers)
    final: FinalOutcome | None = None  # the final retrain, if this call ran it
    final_run_id: str | None = None  # its MLflow run (or the one an earlier call finished)
    test_accuracy: float | None = None  # its test accuracy, mean over seeds (0..1)

    @property
    def best_trial(self) -> optuna.trial.FrozenTrial:
        """The trial the final retrain trains (the best COMPLETE one)."""
        return pick_trial(self.study, None)

    @property
    def counts(self) -> dict[str, int]:
        """Trials by state: ``complete``, ``pruned``, ``failed``, ``running``."""
        return state_counts(self.study)


@dataclass(frozen=True)
class BestTrial:
    """A trial as ``cli.py best --format json`` exports it, read from MLflow."""

    trial: int
    run_id: str  # the trial's MLflow run
    config: TrialConfig  # the final retrain's config: its epochs and first seed
    scores: dict[str, Any]  # its search scores and its final retrain's test scores


def load_study(study: StudyLike) -> StudySpec:
    """The checked study file: a name (a file in studies/), a path, or a ``StudySpec``
    (returned as it is). A mistake in it is a ``ConfigError`` naming file, key and value."""
    return study if isinstance(study, StudySpec) else load_study_file(os.fspath(study))


def search(
    study: StudyLike,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    data_dir: PathLike = None,
    device: str | None = None,
    storage: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    retrain: bool = True,
    workers: int = 1,
    gpus: Sequence[str] | None = None,
    trials_per_gpu: int | None = None,
    checkpoint_dir: PathLike = None,
    max_failures: int = 5,
    on_epoch: Callable[[EpochEvent], None] | None = None,
    on_trial: Callable[[TrialEvent], None] | None = None,
    progress: bool = False,
    quiet: bool = True,
) -> SearchResult:
    """``cli.py search``: run (or continue) the study until ``n_trials`` trials (default:
    the file's) are finished, then with ``retrain`` retrain the best trial once per seed of
    the file's ``[retrain]`` and test it, unless an earlier call did exactly that.

    ``overrides`` fixes keys that are not searched, like ``--set``: ``{"optim.epochs": 10}``.
    ``timeout``: seconds after which no trial starts. ``workers`` > 1 or ``gpus`` (with
    ``trials_per_gpu`` each, default ``search.config.TRIALS_PER_GPU``) runs that
    many ``cli.py search`` processes on the study (their lines shown with ``progress``;
    ``on_epoch`` and ``on_trial`` are then not called)."""
    spec = load_study(study)
    _positive(n_trials=n_trials, workers=workers)
    _positive(trials_per_gpu=trials_per_gpu, max_failures=max_failures)
    options = engine.SearchOptions(
        n_trials=n_trials,
        timeout=timeout,
        data_dir=_path(data_dir),
        device=device,
        storage=storage,
        overrides=dict(overrides or {}),
        max_consecutive_failures=max_failures,
        checkpoint_dir=_path(checkpoint_dir),
    )
    echo = _echo(progress)
    shown = reporting.SearchProgress(spec, None, echo)
    with _library_output(quiet):
        engine.apply_overrides(spec, options.overrides)  # a bad key fails before any trial
        if workers > 1 or gpus:
            found = engine.search_in_workers(
                PROJECT_ROOT / "cli.py",
                spec,
                options,
                workers=workers,
                gpus=gpus,
                trials_per_gpu=trials_per_gpu,
                on_start=lambda n: shown.workers_started(n, gpus),
                stdout=None if progress else subprocess.DEVNULL,
            )
            result = SearchResult(spec, found, None)
        else:
            shown.started(options.n_trials or spec.n_trials, options.storage)
            outcome = engine.run_search(
                spec,
                options,
                _both(shown.epoch, on_epoch),
                _both(shown.trial, on_trial),
                shown.waiting,
                on_warning=shown.warning,
                after_search=reporting.write_study_plots,
            )
            shown.finished(outcome)
            result = SearchResult(spec, outcome.study, outcome.ran)
        echo(reporting.study_summary(spec, result.study))
        if retrain:
            _final_retrain_of(result, options, echo)
    return result


def _final_retrain_of(result: SearchResult, options: SearchOptions, echo: Echo) -> None:
    """The final retrain of ``search``, unless an earlier call finished the same one."""
    done = finished_final_run(result.spec, result.study)
    if done is not None:
        echo(reporting.final_done_line(done))
        result.final_run_id = done.info.run_id
        result.test_accuracy = done.data.metrics.get("test_accuracy_mean")
        return
    where = {k: getattr(options, k) for k in ("data_dir", "device", "checkpoint_dir")}
    result.final = _retrain(result.spec, result.study, echo=echo, **where)
    result.final_run_id = result.final.run_id
    result.test_accuracy = result.final.mean_std("accuracy")[0]


def retrain(
    study: StudyLike,
    *,
    trial: int | None = None,
    seeds: Sequence[int] | None = None,
    data_dir: PathLike = None,
    device: str | None = None,
    storage: str | None = None,
    checkpoint_dir: PathLike = None,
    on_epoch: Callable[[int, EpochStats], None] | None = None,
    progress: bool = False,
    quiet: bool = True,
) -> FinalOutcome:
    """``cli.py retrain``: retrain the best trial (or ``trial``) on train+validation and
    test it, once per seed (default: the file's ``[retrain]`` seeds), as a new ``final``
    MLflow run with each seed's model; ``on_epoch(seed, stats)`` after each epoch. The
    outcome has ``.results[seed].final.accuracy`` (0..1), ``.mean_std("accuracy")``,
    ``.config`` (the first seed's), ``.run_id`` and ``.model_uris``."""
    spec, chosen = load_study(study), _seeds(seeds)
    where = {"data_dir": _path(data_dir), "device": device, "checkpoint_dir": _path(checkpoint_dir)}
    with _library_output(quiet):
        found = engine.open_study(spec, storage, create=False)
        return _retrain(
            spec,
            found,
            trial_number=trial,
            seeds=chosen,
            on_epoch=on_epoch,
            echo=_echo(progress),
            **where,
        )


def _retrain(
    spec: StudySpec, study: optuna.Study, *, on_epoch: Any = None, echo: Echo, **options: Any
) -> FinalOutcome:
    """The final retrain as the command runs it: figures on its MLflow run, dashboard notes."""
    shown = reporting.RetrainProgress(spec, echo)
    shown.started()
    on_epoch = _both(shown.epoch, on_epoch)
    outcome = retrain_study(
        spec, study, on_epoch=on_epoch, artifacts=reporting.final_figures, **options
    )
    shown.finished(outcome)
    reporting.write_dashboard_notes(spec, study)
    return outcome


def best(study: StudyLike, *, trial: int | None = None, quiet: bool = True) -> BestTrial:
    """``cli.py best``: the best COMPLETE trial (or ``trial``; with several objectives the
    Pareto front's best on the first), read from MLflow, with its search and final test
    scores and the config of its final retrain (``best_config``)."""
    spec = load_study(study)
    with _library_output(quiet):
        doc = json.loads(best_config_document(spec, "json", trial))
    config = TrialConfig.from_flat(doc["config"])
    return BestTrial(doc["trial"], doc["mlflow_run_id"], config, doc["scores"])


def best_config(study: StudyLike, *, trial: int | None = None, quiet: bool = True) -> TrialConfig:
    """The config ``cli.py best --output FILE`` writes (``config.to_toml()`` is the file):
    the best trial's (or ``trial``'s) with the final retrain's epochs and first seed, so
    that ``search.training.final_run(config, load_dataset(config, data_dir))`` reruns that
    seed of the final retrain (bit for bit on a CPU)."""
    return best(study, trial=trial, quiet=quiet).config


def load_model(
    study: StudyLike, *, trial: int | None = None, seed: int | None = None, quiet: bool = True
) -> torch.nn.Module:
    """The final model: the MLflow model of the latest finished final retrain of the best
    trial (or ``trial``), its first seed's (or ``seed``'s), on the CPU.

    Raw uint8 images ``(N, 3, H, W)`` in, class probabilities ``(N, classes)`` out (the
    normalisation is inside). A ``torch.export`` graph, already in inference mode: call it
    under ``torch.inference_mode()``, never ``.eval()`` (it refuses);
    ``search.training.packaged.predict_proba(model, images, batch_size)`` batches it."""
    import mlflow

    spec = load_study(study)
    with _library_output(quiet):
        number = best(spec, trial=trial, quiet=quiet).trial
        tracker = Tracker(spec.name, create=False)
        query = f"tags.`{TRIAL_TAG}` = '{number}' and attributes.status = 'FINISHED'"
        finals = tracker.find_runs("final", query, order_by=["attributes.start_time DESC"])
        models = logged_models(tracker.client, finals[0].info.run_id) if finals else []
        chosen = [m for m in models if seed is None or m.tags.get("cifar_search.seed") == str(seed)]
        if not chosen:
            which = "" if seed is None else f" of seed {seed}"
            message = f"trial {number} has no retrained MLflow model{which}: run api.retrain first"
            raise ConfigError(message, key="study", value=spec.name)
        with tempfile.TemporaryDirectory(prefix="cifar-search-model-") as tmp:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=chosen[0].artifact_location, dst_path=tmp, tracking_uri=tracker.uri
            )
            return mlflow.pytorch.load_model(local, map_location="cpu")


def ablate(
    study: StudyLike,
    *,
    seeds: Sequence[int] = (0, 1, 2),
    base: str = "auto",
    trial: int | None = None,
    variants: Sequence[str] | None = None,
    leave_one_out: bool = False,
    on: str = "test",
    force: bool = False,
    data_dir: PathLike = None,
    device: str | None = None,
    storage: str | None = None,
    checkpoint_dir: PathLike = None,
    on_run: Callable[[Variant, int, RunRecord], None] | None = None,
    progress: bool = False,
    quiet: bool = True,
) -> AblationOutcome:
    """``cli.py ablate``: train the ``base`` config (``"auto"``, ``"best"`` or the searched
    ``trial``, ``"fixed"``, or a config file) and each variant (the file's ``[[ablation]]``,
    those in ``variants``, or with ``leave_one_out`` each enabled component switched off)
    once per seed, paired, and compare them on the test split (``on="val"``: validation),
    reusing the runs already in MLflow unless ``force``. The outcome has ``.comparisons``
    (difference, confidence interval, p-values, ``verdict``), ``.records`` and ``.of(name)``;
    ``search.reporting.ablation_summary(outcome)`` is the command's table."""
    spec, chosen, echo = load_study(study), _seeds(seeds), _echo(progress)
    with _library_output(quiet):
        outcome = run_ablation(
            spec,
            seeds=chosen,
            base=base,
            trial_number=trial,
            variant_names=variants,
            use_leave_one_out=leave_one_out,
            on=on,
            force=force,
            data_dir=_path(data_dir),
            device=device,
            artifacts=reporting.write_files,
            on_run=_both(lambda v, s, r: echo(reporting.ablation_run_line(v, s, r, on)), on_run),
            checkpoint_dir=_path(checkpoint_dir),
        )
        echo(reporting.ablation_summary(outcome))
        reporting.write_dashboard_notes(spec, storage=storage)  # if the study was searched
    return outcome


@contextlib.contextmanager
def _library_output(quiet: bool) -> Iterator[None]:
    """With ``quiet``, for the block: MLflow's, alembic's and Optuna's log records below
    WARNING dropped, MLflow's progress bars and run URLs off; then all put back. MLflow is
    imported first, as it sets its loggers' levels then (``MLFLOW_LOGGING_LEVEL``)."""
    if not quiet:
        yield
        return
    import mlflow  # noqa: F401

    saved_env = {key: os.environ.get(key) for key in _QUIET_ENV}
    loggers = [logging.getLogger(name) for name in _QUIET_LOGGERS]
    levels, verbosity = [lg.level for lg in loggers], optuna.logging.get_verbosity()
    os.environ.update(_QUIET_ENV)
    for logger in loggers:
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    optuna.logging.set_verbosity(max(verbosity, optuna.logging.WARNING))
    try:
        yield
    finally:
        optuna.logging.set_verbosity(verbosity)
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
        os.environ.update({k: v for k, v in saved_env.items() if v is not None})
        for key in [k for k, v in saved_env.items() if v is None]:
            os.environ.pop(key, None)


def _echo(progress: bool) -> Echo:
    """The command's lines printed with ``progress``; else dropped, but warnings warned."""

    def echo(line: str, err: bool = False) -> None:
        if progress:
            print(line, file=sys.stderr if err else sys.stdout)
        elif err:
            warnings.warn(line, stacklevel=2)

    return echo


def _both(*callbacks: Callable[..., Any] | None) -> Callable[..., None]:
    """One callback that calls each given one in turn (``None`` or ``False`` are skipped)."""
    chosen = [c for c in callbacks if c]

    def call(*args: Any) -> None:
        for callback in chosen:
            callback(*args)

    return call


def _seeds(seeds: Sequence[int] | None) -> tuple[int, ...] | None:
    """The seeds, checked as ``--seeds`` checks them: distinct non-negative integers, one
    at least."""
    if seeds is None:
        return None
    if isinstance(seeds, int):  # as with --seeds, 3 would mean seed 3, not 3 seeds
        raise ConfigError("expected a list of seeds, e.g. (0, 1, 2)", key="seeds", value=seeds)
    values = tuple(seeds)
    wrong = [s for s in values if not isinstance(s, int) or isinstance(s, bool) or s < 0]
    if wrong or not values or len(set(values)) != len(values):
        raise ConfigError("expected distinct non-negative integers", key="seeds", value=seeds)
    return values


def _positive(**values: int | None) -> None:
    for key, value in values.items():
        if value is not None and value < 1:
            raise ConfigError("expected an integer >= 1", key=key, value=value)


def _path(value: PathLike) -> str | None:
    return None if value is None else os.fspath(value)
