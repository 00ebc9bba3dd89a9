"""All MLflow logging (the only module that imports mlflow).

Layout, one experiment per study:
- a parent run per study (``kind=study``): tags with the sampler, pruner, storage and
  package versions; Optuna plots as HTML artifacts;
- a child run per Optuna trial (``kind=trial``): params = the flat ``TrialConfig``,
  per-epoch metrics, tags with the trial number and state; pruned -> KILLED, failed ->
  FAILED with the reason;
- child runs for final retrains (``kind=final``) with test metrics and artifacts;
- on trial and final runs, the data they read as MLflow dataset inputs (``log_dataset``)
  and, when asked, CPU/GPU use as ``system/*`` metrics (``system_metrics``).

We use ``MlflowClient`` with explicit run ids rather than the fluent ``mlflow.start_run``
API, so no global "active run" state leaks between trials.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search.config import TrialConfig, format_value
from search.errors import ConfigError
from search.interrupts import deferred
from search.store.empty_store import create_sqlite_store
from search.store.locations import mask_credentials, sqlite_file, tracking_uri
from search.store.locks import file_lock

KIND = "cifar_search.kind"  # study | trial | final | ablation
STUDY_TAG = "cifar_search.study"
TRIAL_TAG = "optuna.trial_number"
STATE_TAG = "optuna.trial_state"
REASON_TAG = "cifar_search.reason"
RETRY_TAG = "cifar_search.retry_of"  # on a retry's run: the number of the lost trial it reruns
DATA_DIGEST_TAG = "cifar_search.data_digest"  # the run's dataset's content digest
# What kind of experiment this is, for MLflow: model training (runs, metrics, charts), not a
# GenAI app (traces, token usage). MLflow 3.17's UI still opens every experiment in the view
# chosen by its own switch or the address's ?workflowType=machine_learning, which the links
# the tool writes carry (reporting/notes.py).
EXPERIMENT_KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"


@dataclass(frozen=True)
class DataUse:
    """One role in which a run read a dataset: ``context`` is MLflow's ``mlflow.data.context``
    (training, validation or test), ``digest`` the fingerprint of the rows read in that role,
    ``sizes`` their counts for the profile (``{"rows": 45000}``)."""

    context: str
    digest: str
    sizes: Mapping[str, Any]


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
                create_sqlite_store(db)
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

    @deferred()
    def log_dataset(
        self,
        run_id: str,
        name: str,
        digest: str,
        source: str,
        uses: Sequence[DataUse],
        *,
        sizes: Mapping[str, Any] | None = None,
        image_shape: Sequence[int] | None = None,
    ) -> None:
        """Record the data a run read as its MLflow dataset inputs, as ``mlflow.log_input``
        does: one input per use, named ``name``, with the use's digest and its context as the
        input tag ``mlflow.data.context``; the source (a ``file://`` folder is a "local"
        source, anything else the "code" that made the data), the ``(N, *image_shape)``
        uint8 images and int64 labels as schema, and as profile the use's ``sizes``, the
        dataset's ``sizes`` (split sizes) and its whole-content ``digest``, also the run's
        tag ``cifar_search.data_digest`` (filter runs on the same data by it).

        MLflow keeps one dataset per experiment, name and digest (the first one logged), so
        a use's digest must fix everything in its profile: the rows, not only the data."""
        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        if source.startswith("file:"):
            source_type, source_json = "local", json.dumps({"uri": source})
        else:
            source_type = "code"
            source_json = json.dumps({"tags": {"mlflow.source.name": source}})
        inputs = [
            DatasetInput(
                Dataset(
                    name=name,
                    digest=use.digest,
                    source_type=source_type,
                    source=source_json,
                    schema=None if image_shape is None else _tensor_schema(image_shape),
                    profile=json.dumps({**use.sizes, **(sizes or {}), "dataset_digest": digest}),
                ),
                [InputTag(MLFLOW_DATASET_CONTEXT, use.context)],
            )
            for use in uses
        ]
        from mlflow.exceptions import MlflowException

        try:
            self.client.log_inputs(run_id, datasets=inputs)
        except MlflowException:
            # MLflow looks a dataset up, then inserts it, unlocked: two workers logging the
            # same data at once make one fail on the unique key. The dataset exists now.
            self.client.log_inputs(run_id, datasets=inputs)
        self.set_tags(run_id, {DATA_DIGEST_TAG: digest})

    @contextlib.contextmanager
    def system_metrics(self, run_id: str, interval_s: float) -> Iterator[None]:
        """While the block runs, MLflow's system metrics monitor samples CPU use, memory,
        disk and network (and each GPU's use, memory and power with nvidia-ml-py) every
        ``interval_s`` seconds into the run's ``system/*`` metrics, in this tracker's store
        (``$MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`` overrides the interval). However the
        block ends, the sampling thread is stopped and joined; samples of a last, partial
        interval are not written (MLflow's monitor drops them), so a trial shorter than
        ``interval_s`` records none."""
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        # The tool's output is its own: no INFO lines when a monitor starts and stops, and
        # no warning per sample for a GPU figure the driver does not report (its power on
        # some virtual GPUs). Errors still show.
        logging.getLogger("mlflow.system_metrics").setLevel(logging.ERROR)
        monitor = SystemMetricsMonitor(
            run_id, sampling_interval=interval_s, samples_before_logging=1, tracking_uri=self.uri
        )
        monitor.start()
        try:
            yield
        finally:
            with deferred():  # stops and joins the sampling thread
                monitor.finish()

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


def _tensor_schema(image_shape: Sequence[int]) -> str:
    """The schema ``mlflow.data.from_numpy`` gives uint8 images and int64 labels."""

    def spec(dtype: str, shape: list[int]) -> str:
        return json.dumps([{"type": "tensor", "tensor-spec": {"dtype": dtype, "shape": shape}}])

    features, targets = spec("uint8", [-1, *map(int, image_shape)]), spec("int64", [-1])
    return json.dumps({"mlflow_tensorspec": {"features": features, "targets": targets}})


def require_system_metrics() -> None:
    """System metrics need psutil (``search --system-metrics``): say so before any trial."""
    if importlib.util.find_spec("psutil") is None:
        raise ConfigError(
            "system metrics need psutil: pip install psutil (GPU figures also need nvidia-ml-py)",
            key="--system-metrics",
        )


def gpu_metrics_available() -> bool:
    """Whether MLflow's system metrics can read NVIDIA GPUs (the nvidia-ml-py package)."""
    return importlib.util.find_spec("pynvml") is not None


def config_of(run: Any) -> TrialConfig:
    """The ``TrialConfig`` logged as a run's params (text parsed back per key)."""
    return TrialConfig.from_flat(dict(run.data.params))
