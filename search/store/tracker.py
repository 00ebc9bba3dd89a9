"""All MLflow logging (the only module that imports mlflow).

Layout, one experiment per study:
- a parent run per study (``kind=study``): tags with the sampler, pruner, storage and
  package versions; Optuna plots as HTML artifacts;
- a child run per Optuna trial (``kind=trial``): params = the flat ``TrialConfig``,
  per-epoch metrics, tags with the trial number and state; pruned -> KILLED, failed ->
  FAILED with the reason;
- child runs for final retrains (``kind=final``) with test metrics and artifacts.

We use ``MlflowClient`` with explicit run ids rather than the fluent ``mlflow.start_run``
API, so no global "active run" state leaks between trials.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from search.config import TrialConfig, format_value
from search.errors import ConfigError
from search.interrupts import deferred
from search.store.locations import mask_credentials, sqlite_file, sqlite_uri, tracking_uri
from search.store.locks import file_lock

KIND = "cifar_search.kind"  # study | trial | final | ablation
STUDY_TAG = "cifar_search.study"
TRIAL_TAG = "optuna.trial_number"
STATE_TAG = "optuna.trial_state"
REASON_TAG = "cifar_search.reason"
RETRY_TAG = "cifar_search.retry_of"  # on a retry's run: the number of the lost trial it reruns
# MLflow 3's UI opens an experiment without this tag in its GenAI view (traces, token
# usage); this one opens it in the model-training view (runs, metrics, charts).
EXPERIMENT_KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"


class Tracker:
    """MLflow logging for one study."""

    def __init__(self, study_name: str, uri: str | None = None, *, create: bool = True) -> None:
        import mlflow
        from mlflow.tracking import MlflowClient

        self.uri = uri or tracking_uri()
        db = sqlite_file(self.uri)
        if db is not None:
            if not create and not db.exists():
                raise ConfigError(
                    f"no MLflow runs yet ({db} is missing): run `cli.py search` first",
                    key="study",
                    value=study_name,
                )
            db.parent.mkdir(parents=True, exist_ok=True)
        self.study_name = study_name
        # Workers starting together on a new SQLite store would race to create its tables,
        # the experiment and the study's parent run: serialise that with a file lock.
        self._lock_file = None if db is None else db.with_name(db.name + ".lock")
        with self._locked():
            if db is not None and not db.exists():
                _create_sqlite_store(db)
            self.client = MlflowClient(tracking_uri=self.uri)
            self.experiment_id = self._experiment(mlflow, create, db)

    def _locked(self):
        return contextlib.nullcontext() if self._lock_file is None else file_lock(self._lock_file)

    def _experiment(self, mlflow, create: bool, db: Path | None) -> str:
        study_name = self.study_name
        try:
            experiment = self.client.get_experiment_by_name(study_name)
            if experiment is None and not create:
                raise ConfigError(
                    "no MLflow experiment for this study yet: run `cli.py search` first",
                    key="study",
                    value=study_name,
                )
            if experiment is None:
                artifacts = None
                if db is not None:  # keep artifacts beside the local store
                    artifacts = (db.parent / "artifacts" / study_name).resolve().as_uri()
                return self.client.create_experiment(
                    study_name, artifacts, {EXPERIMENT_KIND_TAG: MODEL_TRAINING}
                )
            if create and EXPERIMENT_KIND_TAG not in experiment.tags:  # made by an old version
                self.client.set_experiment_tag(
                    experiment.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING
                )
            return experiment.experiment_id
        except mlflow.exceptions.MlflowException as exc:
            raise ConfigError(
                f"MLflow tracking store unreachable: {str(exc).splitlines()[0]}",
                key="MLFLOW_TRACKING_URI",
                value=mask_credentials(self.uri),
            ) from None

    # runs ------------------------------------------------------------------------
    def find_runs(
        self,
        kind: str,
        extra_filter: str = "",
        order_by: list[str] | None = None,
        max_results: int = 1000,
    ) -> list[Any]:
        query = f"tags.`{KIND}` = '{kind}'" + (f" and {extra_filter}" if extra_filter else "")
        return list(
            self.client.search_runs(
                [self.experiment_id], query, order_by=order_by, max_results=max_results
            )
        )

    def study_run(self, tags: Mapping[str, str]) -> str:
        """The study's parent run id, created on first use and reused on resume."""
        with self._locked():
            runs = self.find_runs("study", order_by=["attributes.start_time ASC"])
            if runs:
                run_id = runs[0].info.run_id
            else:
                run_id = self.client.create_run(
                    self.experiment_id,
                    run_name=self.study_name,
                    tags={KIND: "study", STUDY_TAG: self.study_name},
                ).info.run_id
        self.set_tags(run_id, tags)
        return run_id

    @deferred()  # a write cut in half leaves the database locked
    def start_child(
        self,
        parent_id: str,
        kind: str,
        name: str,
        tags: Mapping[str, Any] | None = None,
        config: TrialConfig | None = None,
    ) -> str:
        run = self.client.create_run(
            self.experiment_id,
            run_name=name,
            tags={
                KIND: kind,
                STUDY_TAG: self.study_name,
                "mlflow.parentRunId": parent_id,
                **{k: str(v) for k, v in (tags or {}).items()},
            },
        )
        if config is not None:
            self.log_params(run.info.run_id, config)
        return run.info.run_id

    @deferred()
    def log_params(self, run_id: str, config: TrialConfig) -> None:
        from mlflow.entities import Param

        self.client.log_batch(
            run_id, params=[Param(k, format_value(v)) for k, v in config.to_flat().items()]
        )

    @deferred()
    def log_metrics(
        self, run_id: str, metrics: Mapping[str, float], step: int | None = None
    ) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id, metrics=[Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        )

    @deferred()
    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        if tags:
            self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    @deferred()
    def end(
        self,
        run_id: str,
        status: str,
        reason: str | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> None:
        """End a run: FINISHED, KILLED (pruned) or FAILED, with the reason as a tag."""
        extra = dict(tags or {})
        if reason:
            extra[REASON_TAG] = reason[:5000]
        self.set_tags(run_id, extra)
        self.client.set_terminated(run_id, status=status)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(run_id, text, artifact_file)

    def log_dir(self, run_id: str, path: Path, artifact_dir: str | None = None) -> None:
        self.client.log_artifacts(run_id, str(path), artifact_dir)

    # reading back ------------------------------------------------------------------
    def complete_trial_runs(self, metrics: Sequence[str]) -> list[tuple[int, tuple, Any]]:
        """``(trial number, values of metrics, run)`` of every COMPLETE trial run that
        logged all of ``metrics`` (the study's objective values), read from MLflow."""
        runs = self.find_runs("trial", f"tags.`{STATE_TAG}` = 'COMPLETE'", max_results=50000)
        return [
            (int(r.data.tags[TRIAL_TAG]), tuple(r.data.metrics[m] for m in metrics), r)
            for r in runs
            if all(m in r.data.metrics for m in metrics)
        ]


def _create_sqlite_store(db: Path) -> None:
    """Create MLflow's SQLite store (tables and migrations) under a temporary name, then
    move it into place: MLflow's migrations are not one transaction, and a worker killed in
    the middle of them would leave a half-made store that every later run fails to open
    ("table spans already exists"). The caller holds the store's creation lock."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    draft = db.with_name(db.name + ".creating")
    draft.unlink(missing_ok=True)  # left by a creator that was killed
    store = SqlAlchemyStore(sqlite_uri(draft), (db.parent / "artifacts").resolve().as_uri())
    store.engine.dispose()
    try:  # a link, unlike a rename, never replaces a store made meanwhile by another tool
        os.link(draft, db)
    except FileExistsError:
        pass
    draft.unlink()


def config_of(run: Any) -> TrialConfig:
    """The ``TrialConfig`` logged as a run's params (text parsed back per key)."""
    return TrialConfig.from_flat(dict(run.data.params))
