"""Trained classifiers as MLflow 3 models ("LoggedModels"), linked to the run that made
them, and their versions in the Model Registry.

``log_classifier`` saves a module that takes raw uint8 images ``(N, 3, H, W)`` and returns
class probabilities (``search.training.packaged.PackagedClassifier``) with a tensor
signature and an input example. ``mlflow.pytorch.load_model(logged.model_uri)`` gives it
back; ``register`` puts it in the registry (``models:/NAME/VERSION``).

How, and why not ``mlflow.pytorch.log_model``. The tool writes to MLflow through an
``MlflowClient`` with explicit run ids (``tracker.py``); the fluent ``log_model`` resolves
the store, the experiment and the run from process globals instead:
- without an active run it puts the model in the *Default* experiment (id 0) even when
  given ``run_id=`` (the experiment comes from ``mlflow.set_experiment`` / the
  environment, not from the run), and it writes to the global tracking URI, which need not
  be the Tracker's;
- ``mlflow.start_run(run_id=...)`` would fix both, but it makes the run the process's
  active run, and leaving the block ends it (FINISHED, or FAILED on an exception): the
  final run would be closed after its first seed, and workers sharing a process would
  share one active run;
- it also re-logs *every* metric of the run at the model's step against the new model, so
  seed 1's model would carry seed 0's test scores.
So this module does what ``log_model`` does inside, with the client: ``create_logged_model``
in the run's experiment (source run, params, tags) -> ``log_outputs`` (the run lists the
model among its outputs) -> ``mlflow.pytorch.save_model`` to a temporary folder ->
``log_model_artifacts`` -> the given metrics through ``log_batch`` with the model's id
(they show on the run and on the model's page; a point the run already holds keeps its
timestamp, so it is linked, not duplicated) -> ``finalize_logged_model`` READY (FAILED if
anything on the way raised). No global tracking state (URI, experiment, active run) is
read or changed.

The model is saved in MLflow's default "pt2" format (``torch.export``): a traced graph with
its weights, loadable without this project's code (the pickle format would need
``search``/``cifar_models`` importable, and MLflow 3.17 refuses to unpickle models unless
``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=true``). The batch dimension is exported as dynamic,
which needs an input example of at least 2 images. pip requirements are given rather than
inferred (inference loads the model in a subprocess: seconds per model).

MLflow and torch are imported inside the functions: importing this module stays light.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from search.errors import ConfigError
from search.interrupts import deferred

if TYPE_CHECKING:
    import numpy as np
    import torch
    from mlflow import MlflowClient
    from mlflow.entities import LoggedModel
    from mlflow.models import ModelSignature

MODEL_TYPE = "image-classifier"
# the LoggedModel tag through which MLflow lists a model's registered versions
MODEL_VERSIONS_TAG = "mlflow.modelVersions"
# URI schemes whose stores MLflow runs inside this process (see ``register``)
_IN_PROCESS_SCHEMES = ("", "sqlite", "postgresql", "mysql", "mssql", "file")


def log_classifier(
    tracking: str | MlflowClient,
    run_id: str,
    model: torch.nn.Module,
    name: str,
    input_example: np.ndarray,
    *,
    params: Mapping[str, str] | None = None,
    metrics: Mapping[str, float] | None = None,
    tags: Mapping[str, str] | None = None,
    step: int = 0,
    quiet: bool = True,
) -> LoggedModel:
    """Log ``model`` (uint8 images in, probabilities out; on the CPU; put in eval mode here)
    as an MLflow model named ``name``, produced by run ``run_id``, in that run's experiment.

    ``tracking`` is a tracking URI (``Tracker.uri``) or a client (``Tracker.client``).
    ``input_example``: uint8 ``(n, 3, H, W)`` with ``n >= 2``, a few real images; it fixes
    the signature's image shape and number of classes. The model's params are the run's
    params updated with ``params``. ``metrics`` are linked to the model and logged to the
    run at ``step``; a metric the run already holds with that value at that step (logged
    before through ``Tracker.log_metrics``) is linked as it is, not logged twice. ``quiet``
    keeps MLflow's and torch.export's log lines and warnings off the console. Returns the
    READY ``LoggedModel`` (``.model_id``, ``.model_uri`` = ``models:/<model_id>``,
    ``.metrics``, ``.params``); on an error the model is left FAILED and the error raised."""
    import numpy as np
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus

    if any(t.device.type != "cpu" for t in [*model.parameters(), *model.buffers()]):
        raise ValueError("log the model from the CPU: an exported model loads where it was saved")
    model.eval()
    example = np.ascontiguousarray(input_example)
    client = _client(tracking)
    run = client.get_run(run_id)
    with _quiet(quiet):
        signature = classifier_signature(model, example)
        logged = None
        try:
            with deferred():  # an interrupt lands after it: inside the try, which fails it
                logged = client.create_logged_model(
                    run.info.experiment_id,
                    name=name,
                    source_run_id=run_id,
                    tags={str(k): str(v) for k, v in (tags or {}).items()},
                    params={
                        **run.data.params,
                        **{str(k): str(v) for k, v in (params or {}).items()},
                    },
                    model_type=MODEL_TYPE,
                )
            with deferred():
                client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step)])
            _upload(client, logged, run_id, model, signature, example)
            linked = _model_metrics(client, run_id, logged.model_id, metrics or {}, step)
            with deferred():
                if linked:
                    client.log_batch(run_id, metrics=linked)
                client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
        except BaseException:
            if logged is not None:
                with contextlib.suppress(Exception), deferred():
                    client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
            raise
    return client.get_logged_model(logged.model_id)


def _model_metrics(
    client: MlflowClient, run_id: str, model_id: str, metrics: Mapping[str, float], step: int
) -> list:
    """``metrics`` as points of the run tagged with ``model_id``. A point the run already
    holds (same key, step and value) keeps its timestamp: MLflow then links it to the model
    without adding it to the run's history again (as ``mlflow.pytorch.log_model`` does)."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    points = []
    for key, value in metrics.items():
        value = float(value)
        earlier = [
            m.timestamp
            for m in client.get_metric_history(run_id, key)
            if m.step == step and m.value == value
        ]
        points.append(Metric(key, value, earlier[-1] if earlier else now, step, model_id=model_id))
    return points


def classifier_signature(model: torch.nn.Module, input_example: np.ndarray) -> ModelSignature:
    """uint8 ``(-1, 3, H, W)`` in, float32 ``(-1, C)`` out, C read off the model's output
    for ``input_example`` (which must be uint8 ``(n >= 2, 3, H, W)``)."""
    import numpy as np
    import torch
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    if input_example.dtype != np.uint8 or input_example.ndim != 4 or input_example.shape[0] < 2:
        raise ValueError(
            "input_example must be uint8 images (n, 3, H, W) with n >= 2 (a batch of one "
            f"would export a model that takes one image only), not {input_example.dtype} "
            f"{input_example.shape}"
        )
    with torch.no_grad():
        out = model(torch.from_numpy(input_example))
    if out.dtype != torch.float32 or out.ndim != 2 or out.shape[0] != input_example.shape[0]:
        raise ValueError(f"the model must return float32 (n, classes), not {out.dtype} {out.shape}")
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, *input_example.shape[1:]))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, out.shape[1]))]),
    )


def _upload(
    client: MlflowClient,
    logged: LoggedModel,
    run_id: str,
    model: torch.nn.Module,
    signature: ModelSignature,
    example: np.ndarray,
) -> None:
    """Save the model the way ``Model.log`` does (an ``MLmodel`` naming the LoggedModel
    and its run) to a temporary folder, then copy it to the model's artifact location."""
    import mlflow.pytorch
    from mlflow.models import Model

    mlflow_model = Model(
        artifact_path=logged.artifact_location,
        model_uuid=logged.model_id,
        run_id=run_id,
        model_id=logged.model_id,
    )
    with tempfile.TemporaryDirectory(prefix="logged-model-") as tmp:
        folder = f"{tmp}/model"
        mlflow.pytorch.save_model(
            model,
            folder,
            mlflow_model=mlflow_model,
            signature=signature,
            input_example=example,
            serialization_format="pt2",
            pip_requirements=mlflow.pytorch.get_default_pip_requirements(),
        )
        client.log_model_artifacts(logged.model_id, folder)


def register(
    tracking: str | MlflowClient,
    model: str,
    name: str,
    *,
    tags: Mapping[str, str] | None = None,
    description: str | None = None,
) -> int:
    """Register the logged model ``model`` (its id ``m-...`` or ``models:/m-...``) as a new
    version of the registered model ``name`` (created on first use); returns the version
    number (1, 2, ...). Loads back with ``mlflow.pytorch.load_model(f"models:/{name}/{v}")``.

    Prints nothing (``mlflow.register_model`` prints "Successfully registered ..."). The
    version's source is ``models:/<model_id>`` on a tracking server, as MLflow does; for a
    store MLflow opens in this process (SQLite, a database, files) it is the model's artifact
    location, because MLflow resolves a ``models:/`` source there through the *global*
    tracking URI, not this client's. Either way the LoggedModel's ``mlflow.modelVersions``
    tag lists its versions, as ``mlflow.register_model`` leaves it."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, ErrorCode

    client = _client(tracking)
    model_id = model.removeprefix("models:/")
    logged = client.get_logged_model(model_id)
    in_process = urlparse(client.tracking_uri).scheme.split("+")[0] in _IN_PROCESS_SCHEMES
    source = logged.artifact_location if in_process else logged.model_uri
    try:
        with deferred():
            _ensure_registered_model(client, name)
            version = client.create_model_version(
                name,
                source,
                run_id=logged.source_run_id,
                tags={str(k): str(v) for k, v in (tags or {}).items()},
                description=description,
                await_creation_for=0,
                model_id=model_id,
            )
    except MlflowException as exc:
        if exc.error_code == ErrorCode.Name(INVALID_PARAMETER_VALUE):
            message = str(exc.message).splitlines()[0]
            raise ConfigError(message, key="registered model name", value=name) from None
        raise
    versions = json.loads(logged.tags.get(MODEL_VERSIONS_TAG, "[]"))
    versions.append({"name": version.name, "version": version.version})
    with deferred():
        client.set_logged_model_tags(model_id, {MODEL_VERSIONS_TAG: json.dumps(versions)})
    return int(version.version)


def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import ALREADY_EXISTS, RESOURCE_ALREADY_EXISTS, ErrorCode

    try:
        client.create_registered_model(name)
    except MlflowException as exc:  # made earlier, or meanwhile by another process
        exists = {ErrorCode.Name(RESOURCE_ALREADY_EXISTS), ErrorCode.Name(ALREADY_EXISTS)}
        if exc.error_code not in exists:
            raise


def logged_models(tracking: str | MlflowClient, run_id: str) -> list[LoggedModel]:
    """The models run ``run_id`` produced (its outputs), oldest first, with their params,
    metrics, tags and status."""
    client = _client(tracking)
    run = client.get_run(run_id)
    outputs = run.outputs.model_outputs if run.outputs else []
    models = [client.get_logged_model(o.model_id) for o in outputs]
    return sorted(models, key=lambda m: (m.creation_timestamp, m.name))


def _client(tracking: str | MlflowClient) -> MlflowClient:
    if isinstance(tracking, str):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=tracking)
    return tracking


@contextlib.contextmanager
def _quiet(enabled: bool) -> Iterator[None]:
    """MLflow's and torch.export's loggers at ERROR and their warnings ignored."""
    if not enabled:
        yield
        return
    names = ("mlflow", "torch.export", "torch._export", "torch._dynamo", "torch.fx")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
