"""The one MLflow helper every stage uses.

A stage opens a :class:`Run` around its work: in its task's experiment when it has a task
(:class:`petvision.config.TaskConfig`), else in the experiment it names::

    task = task_config(cfg, Task.segmentation)
    with tracking.Run(cfg, task.stage, task=task) as run:
        model.fit(..., callbacks=[run.keras_callback()])
        run.log_keras_model(model, example_batch)

Where runs go (:func:`tracking_uri`): ``tracking.uri``, else ``$MLFLOW_TRACKING_URI``, else the
project's own store, ``mlflow.db`` (SQLite) with artifacts in ``mlruns/``, both in the tracking
root (the project root; the user's workspace inside ``dvc exp run --temp/--queue``), whatever
the working directory.

How it fails: a store that cannot be used stops the stage at the start, within seconds, with a
:class:`TrackingError` naming the URI, before any training. Once the run is open, logging never
stops training: a call that fails is retried a bounded number of times, then recorded in
:attr:`Run.lost`, warned about once, and listed again when the run ends. The stage's DVC outputs
do not depend on MLflow.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from petvision import config as config_lib
from petvision.config import Config, TaskConfig
from petvision.core.errors import TrackingError
from petvision.tracking import flavor, scope
from petvision.tracking.context import (
    context_tags,
    dataset_input,
    log_keras_model,
    param_key,
    param_value,
)
from petvision.tracking.store import (
    artifact_root,
    bound_http_retries,
    check_reachable,
    first_line,
    is_http,
    retry_locked,
    tracking_uri,
    ui_url,
)
from petvision.util.nested import flatten

log = logging.getLogger(__name__)

T = TypeVar("T")


# --------------------------------------------------------------------------- the run


class Run:
    """One MLflow run around a stage's work (a context manager). See the module docstring."""

    def __init__(
        self,
        cfg: Config,
        stage: str,
        *,
        task: TaskConfig | None = None,
        experiment: str | None = None,
        run_name: str | None = None,
        resume_run_id: str | None = None,
        tags: dict[str, str] | None = None,
    ):
        """A run of ``stage`` logging ``cfg`` whole as its params, in ``task``'s experiment (the
        run is then tagged with the task, and a model it logs also takes encoded photos, resized
        as that task's data was) or in the experiment named ``experiment``: one of the two."""
        if (task is None) == (experiment is None):
            raise TypeError("tracking.Run: give the run's task or its experiment, one of them")
        self.cfg, self.stage, self.task = cfg, stage, task
        self.experiment = task.experiment if task is not None else str(experiment)
        self.run_name = run_name  # None: MLflow makes one up
        self.resume_run_id = resume_run_id
        self.extra_tags = dict(tags or {})
        self.uri = tracking_uri(cfg.tracking)
        self.run_id = ""
        self.experiment_id = ""
        self.resumed = False
        self.lost: list[str] = []
        self._client: Any = None
        self._params: dict[str, str] = {}  # what the run holds: MLflow params cannot change
        self._degraded = False
        self._env_uri: str | None = None

    # ------------------------------------------------------------------ start and end
    def __enter__(self) -> Run:
        import mlflow

        if is_http(self.uri):
            bound_http_retries(self.cfg.tracking.connect_timeout_s)
        check_reachable(self.uri, self.cfg.tracking.connect_timeout_s)
        # Model.log and pyfunc.load_model("models:/...") resolve the store through MLflow's global
        # URI. Setting it also exports $MLFLOW_TRACKING_URI, which tracking_uri() reads as the
        # user's choice: that is put back at __exit__.
        self._env_uri = os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(self.uri)
        self._client = mlflow.MlflowClient(self.uri)
        try:
            self.experiment_id = retry_locked(self._experiment)
            retry_locked(self._start_run)
            # Model.log files a logged model under the fluent API's current experiment.
            retry_locked(lambda: mlflow.set_experiment(experiment_id=self.experiment_id))
        except Exception as exc:
            self._restore_env_uri()
            raise TrackingError(
                f"MLflow tracking store {self.uri}: could not start the run: {first_line(exc)}"
            ) from None
        try:
            self._log_params_now(flatten(config_lib.to_dict(self.cfg), index_lists=True))
            retry_locked(
                lambda: self._client.log_text(
                    self.run_id, config_lib.to_yaml(self.cfg), "config.yaml"
                )
            )
        except Exception as exc:
            with contextlib.suppress(Exception):
                self._client.set_terminated(self.run_id, "FAILED")
            self._restore_env_uri()
            raise TrackingError(
                f"MLflow tracking store {self.uri}: could not log the configuration: {first_line(exc)}"
            ) from None
        log.info(
            "MLflow run %r (%s) %s in experiment %s at %s; runs table: %s",
            self.run_name,
            self.run_id,
            "resumed" if self.resumed else "started",
            self.experiment,
            self.uri,
            ui_url(self.uri, self.experiment_id),
        )
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> bool:
        if exc_type is None or (exc_type is SystemExit and not getattr(exc, "code", 1)):
            status = "FINISHED"
        elif issubclass(exc_type, KeyboardInterrupt):
            status = "KILLED"
        else:
            status = "FAILED"
        self._safe(
            f"end of run ({status})", lambda: self._client.set_terminated(self.run_id, status)
        )
        self._restore_env_uri()
        if self.lost:
            log.warning(
                "MLflow run %s at %s: %d log call(s) were lost: %s",
                self.run_id,
                self.uri,
                len(self.lost),
                "; ".join(self.lost),
            )
        return False

    def _restore_env_uri(self) -> None:
        if self._env_uri is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = self._env_uri

    def _experiment(self) -> str:
        name = self.experiment
        experiment = self._client.get_experiment_by_name(name)
        if experiment is None:
            root = artifact_root(self.uri)
            location = f"{root}/{name}" if root else None
            try:
                return self._client.create_experiment(name, artifact_location=location)
            except Exception:
                # Another process may have created it a moment ago.
                experiment = self._client.get_experiment_by_name(name)
                if experiment is None:
                    raise
        if experiment.lifecycle_stage == "deleted":
            log.info("MLflow experiment %r was deleted; restoring it", name)
            self._client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id

    def _start_run(self) -> None:
        from mlflow.tracking.context import registry as context_registry

        tags = {
            **context_tags(self.cfg, self.task.task if self.task else None, self.stage),
            **scope.tags(),
            **self.extra_tags,
        }
        if self.resume_run_id:
            previous = self._previous_run(self.resume_run_id)
            if previous is not None:
                self.run_id, self.resumed = previous.info.run_id, True
                self.run_name = previous.info.run_name
                self._params = dict(previous.data.params)
                self._client.update_run(self.run_id, status="RUNNING")
                self._set_tags_now({**tags, "resumed": "true"})
                return
        try:
            tags = context_registry.resolve_tags(
                tags
            )  # mlflow.user, mlflow.source.*, as mlflow.start_run does
        except Exception as exc:
            log.debug("MLflow context tags unavailable: %s", exc)
        run = self._client.create_run(self.experiment_id, run_name=self.run_name, tags=tags)
        self.run_id = run.info.run_id
        self.run_name = run.info.run_name
        scope.record_started(self.run_id)

    def _previous_run(self, run_id: str) -> Any:
        try:
            run = self._client.get_run(run_id)
        except Exception as exc:
            log.info(
                "MLflow run %s to resume is not in %s (%s); starting a new run",
                run_id,
                self.uri,
                first_line(exc),
            )
            return None
        if run.info.lifecycle_stage == "deleted" or run.info.experiment_id != self.experiment_id:
            log.info(
                "MLflow run %s to resume was deleted or belongs to another experiment; starting a new run",
                run_id,
            )
            return None
        return run

    # ------------------------------------------------------------------ fault handling
    def _safe(self, what: str, call: Callable[[], T]) -> T | None:
        """Run one log call; on failure record it in ``lost`` instead of raising."""
        try:
            result = retry_locked(call)
        except Exception as exc:
            self.lost.append(f"{what}: {type(exc).__name__}: {first_line(exc, 200)}")
            log.debug("MLflow call %s failed", what, exc_info=True)  # the traceback, for -v runs
            if not self._degraded:
                log.warning(
                    "MLflow logging to %s failed (%s: %s); training goes on, and later failures "
                    "are collected and listed at the end",
                    self.uri,
                    what,
                    first_line(exc, 200),
                )
            self._degraded = True
            return None
        self._degraded = False
        return result

    def close_other_run(self, run_id: str, tags: dict[str, str], status: str, what: str) -> None:
        """Tag and end another run of the same store (a search's trial, which the stage opened
        in a child process) through this run's client. Like every log call here, a failure is
        recorded on this run and never raised."""

        def close() -> None:
            for key, value in tags.items():
                self._client.set_tag(run_id, key, value)
            self._client.set_terminated(run_id, status)

        self._safe(what, close)

    def running_children(self) -> dict[str, dict[str, str]]:
        """This run's child runs (tag ``mlflow.parentRunId``) that the store still marks RUNNING,
        each with its tags; none where the store cannot say (recorded in ``lost``)."""

        def find() -> dict[str, dict[str, str]]:
            experiments = [e.experiment_id for e in self._client.search_experiments()]
            query = f"tags.`mlflow.parentRunId` = '{self.run_id}' and attributes.status = 'RUNNING'"
            runs = self._client.search_runs(experiments, query, max_results=10_000)
            return {run.info.run_id: dict(run.data.tags) for run in runs}

        return self._safe("running child runs", find) or {}

    # ------------------------------------------------------------------ logging
    def set_tags(self, tags: dict[str, str]) -> None:
        self._safe(f"tags {sorted(tags)}", lambda: self._set_tags_now(tags))

    def _set_tags_now(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag
        from mlflow.utils.validation import MAX_TAG_VAL_LENGTH

        items = [RunTag(param_key(k), param_value(v, MAX_TAG_VAL_LENGTH)) for k, v in tags.items()]
        for i in range(0, len(items), 100):
            self._client.log_batch(self.run_id, tags=items[i : i + 100])

    def log_params(self, params: dict) -> None:
        self._safe(f"params {sorted(params)}", lambda: self._log_params_now(params))

    def _log_params_now(self, params: dict) -> None:
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

        new: dict[str, str] = {}
        for key, value in params.items():
            k, v = param_key(key), param_value(value, MAX_PARAM_VAL_LENGTH)
            if k in self._params:
                if self._params[k] != v:
                    log.warning(
                        "MLflow param %s is %r in run %s; not changing it to %r (params are fixed "
                        "once logged; config.yaml holds this attempt's value)",
                        k,
                        self._params[k],
                        self.run_id,
                        v,
                    )
                continue
            new[k] = v
        items = [Param(k, v) for k, v in new.items()]
        for i in range(0, len(items), 100):  # MLflow's batch limit for params
            self._client.log_batch(self.run_id, params=items[i : i + 100])
        self._params.update(new)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = []
        for key, value in metrics.items():
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue  # not a number (a string in Keras logs): nothing to chart
            items.append(Metric(param_key(key), number, now, int(step or 0)))
        if not items:
            return

        def send() -> None:
            for i in range(0, len(items), 1000):
                self._client.log_batch(self.run_id, metrics=items[i : i + 1000])

        self._safe(f"metrics {sorted(metrics)} at step {step or 0}", send)

    def logged_steps(self, key: str) -> set[int] | None:
        """The steps at which metric ``key`` is in this run; None if the store cannot say (a
        resumed training session uses it to log the epochs the run is missing)."""
        try:
            return {
                m.step
                for m in retry_locked(lambda: self._client.get_metric_history(self.run_id, key))
            }
        except Exception as exc:
            log.warning(
                "MLflow: cannot read the %s history of run %s (%s)",
                key,
                self.run_id,
                first_line(exc, 200),
            )
            return None

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        path = Path(path)

        def send() -> None:
            if path.is_dir():
                self._client.log_artifacts(self.run_id, str(path), artifact_path)
            elif path.is_file():
                self._client.log_artifact(self.run_id, str(path), artifact_path)
            else:
                raise FileNotFoundError(f"{path} does not exist")

        self._safe(f"artifact {path.name}", send)

    def log_input_dataset(
        self, name: str, digest: str, source: str, context: str, shape_info: dict | None = None
    ) -> None:
        """Record a dataset as a run input (the UI's Datasets column): name, digest, where it is,
        its role (``training``, ``validation``, ``testing``...) and, as its profile, shapes/counts."""
        self._safe(
            f"input dataset {name}",
            lambda: self._client.log_inputs(
                self.run_id, datasets=[dataset_input(name, digest, source, context, shape_info)]
            ),
        )

    def log_keras_model(
        self, model: Any, example: np.ndarray, name: str = "model", extra_files: Sequence[Path] = ()
    ) -> str:
        """Log ``model`` through MLflow's Keras flavor with an input example (a trained task's
        model: no signature, its pyfunc takes arrays or encoded photos, see tracking.flavor);
        return its URI (``models:/<id>``), loadable with ``mlflow.pyfunc.load_model``. "" if lost.
        ``extra_files`` travel inside the logged model (tracking.flavor.EXTRA_FILES_DIR)."""
        photos = None
        if self.task is not None:
            # The trained models' python_function flavor also takes encoded photos.
            photos = flavor.model_config(self.task.task, self.task.data.interpolation)
        uri = self._safe(
            f"model {name}",
            lambda: log_keras_model(self.run_id, model, example, name, photos, extra_files),
        )
        if uri:
            log.info("MLflow model %s logged: %s", name, uri)
        return uri or ""

    def keras_callback(self) -> Any:
        """A Keras callback logging each epoch's logs (train and ``val_`` metrics) at step=epoch."""
        import keras

        run = self

        class MlflowEpochLogger(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                if logs:
                    run.log_metrics(dict(logs), step=epoch)

        return MlflowEpochLogger()
