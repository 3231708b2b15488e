"""The one MLflow helper every stage uses.

A stage opens a :class:`Run` around its work::

    with tracking.Run(cfg, "segmentation", "train_segmentation") as run:
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
import functools
import hashlib
import json
import logging
import math
import os
import re
import socket
import subprocess
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import numpy as np

from petvision import config as config_lib
from petvision import paths
from petvision.config import Config, TrackingConfig
from petvision.errors import DataError, TrackingError

log = logging.getLogger(__name__)

__all__ = ["NoRun", "Run", "check_reachable", "data_digest", "tracking_uri", "ui_url"]

TASKS = ("segmentation", "classification", "interpretation")
T = TypeVar("T")

# MLflow's HTTP client retries 7 times with exponential backoff and a 120 s timeout by default:
# minutes before a call to a dead server gives up. These bounds (used unless the user set the
# variable) make a refused connection fail in about 3 s and a silent host in about a minute.
HTTP_BOUNDS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
}
HTTP_TIMEOUT_FLOOR_S = 20  # a big artifact upload can keep a healthy server quiet for a while

# SQLite answers "database is locked" when two writers collide in a way its busy timeout cannot
# wait out (both hold read locks and want to write); the transaction is rolled back, so retrying
# it is safe.
LOCKED_RETRIES = 6


# --------------------------------------------------------------------------- where


def tracking_uri(cfg: TrackingConfig) -> str:
    """The tracking URI runs go to (see module docstring). A relative SQLite path is taken
    against the tracking root, not the working directory."""
    uri = cfg.uri.strip() or os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if not uri:
        return f"sqlite:///{paths.tracking_root() / 'mlflow.db'}"
    db = _sqlite_path(uri)
    if db is not None and not db.is_absolute():
        return f"sqlite:///{paths.tracking_root() / db}"
    return uri


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative as written), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def _is_http(uri: str) -> bool:
    return urlparse(uri).scheme in ("http", "https")


def artifact_root(uri: str) -> str | None:
    """Where experiments we create keep their artifacts, for stores whose client writes them:
    ``mlruns/`` beside a SQLite file, or in the tracking root for other databases. None for
    tracking servers (the server decides) and file stores (artifacts live inside)."""
    db = _sqlite_path(uri)
    if db is not None:
        return (db.parent / "mlruns").as_uri()
    if urlparse(uri).scheme.split("+")[0] in ("postgresql", "mysql", "mssql"):
        return (paths.tracking_root() / "mlruns").as_uri()
    return None


def ui_url(uri: str, experiment_id: str, host: str = "http://127.0.0.1:5000") -> str:
    """The MLflow UI page with an experiment's runs table. MLflow 3 opens experiments in the
    GenAI (traces) view; ``workflowType=machine_learning`` selects the runs table instead."""
    base = uri.rstrip("/") if _is_http(uri) else host
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


# --------------------------------------------------------------------------- can it be used


def bound_http_retries(timeout_s: float) -> None:
    """Cap MLflow's HTTP retries and timeout (process-wide) unless the user set them."""
    for name, value in HTTP_BOUNDS.items():
        os.environ.setdefault(name, value)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(HTTP_TIMEOUT_FLOOR_S, math.ceil(timeout_s))))


def check_reachable(uri: str, timeout_s: float) -> None:
    """Raise :class:`TrackingError` naming ``uri`` when the store cannot be used, within about
    ``timeout_s``. A SQLite store is created here if it does not exist yet."""
    scheme = urlparse(uri).scheme
    if _is_http(uri):
        _probe_http(uri, timeout_s)
    elif scheme == "sqlite":
        _prepare_sqlite(uri, timeout_s)
    elif scheme in ("", "file"):
        folder = Path(urlparse(uri).path if scheme == "file" else uri)
        _check_writable_dir(folder, uri)
    else:
        _probe_with_client(uri, timeout_s)


def _probe_http(uri: str, timeout_s: float) -> None:
    import requests

    url = uri.rstrip("/") + "/health"
    try:
        response = requests.get(url, timeout=timeout_s)
    except requests.RequestException as exc:
        reason = type(exc).__name__
        if isinstance(exc, requests.ConnectionError) and "refused" in str(exc).lower():
            reason = "connection refused"
        raise TrackingError(
            f"MLflow tracking server {uri} is not reachable ({reason}); start it "
            "(mlflow server --host 127.0.0.1 --port 5000) or point tracking.uri / MLFLOW_TRACKING_URI elsewhere"
        ) from None
    if response.status_code != 200:
        raise TrackingError(
            f"MLflow tracking server {uri}: {url} answered HTTP {response.status_code}; "
            "is this the address of an MLflow tracking server?"
        )


def _check_writable_dir(folder: Path, uri: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrackingError(f"MLflow tracking store {uri}: cannot create {folder} ({exc.strerror})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise TrackingError(f"MLflow tracking store {uri}: {folder} is not writable")


@contextlib.contextmanager
def _folder_lock(folder: Path, timeout_s: float, uri: str) -> Iterator[None]:
    """An exclusive flock on the store's folder itself (no lock file left behind)."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; concurrent first runs there may race
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TrackingError(
                        f"MLflow tracking store {uri}: another process kept {folder} locked "
                        f"for over {timeout_s:.0f} s while creating the store"
                    ) from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _prepare_sqlite(uri: str, timeout_s: float) -> None:
    import mlflow

    db = _sqlite_path(uri)
    if db is None:  # in-memory: nothing to check
        return
    _check_writable_dir(db.parent, uri)
    if db.exists() and not os.access(db, os.R_OK | os.W_OK):
        raise TrackingError(f"MLflow tracking store {uri}: {db} is not writable")
    # MLflow creates the tables on first use without guarding against a second process doing the
    # same at the same moment (two queued DVC experiments); one of them would then fail.
    with _folder_lock(db.parent, max(timeout_s, 60.0), uri):
        try:
            _retry_locked(lambda: mlflow.MlflowClient(uri).search_experiments(max_results=1))
        except Exception as exc:  # noqa: BLE001 - whatever it is, the store is unusable
            raise TrackingError(f"MLflow tracking store {uri} cannot be used: {_first_line(exc)}") from None


def _probe_with_client(uri: str, timeout_s: float) -> None:
    """Any other store (a database server...): one cheap query, abandoned after ``timeout_s``."""
    import mlflow

    outcome: list[BaseException | None] = []

    def probe() -> None:
        try:
            mlflow.MlflowClient(uri).search_experiments(max_results=1)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - reported below
            outcome.append(exc)

    thread = threading.Thread(target=probe, daemon=True, name="mlflow-probe")
    thread.start()
    thread.join(timeout_s)
    if not outcome:
        raise TrackingError(f"MLflow tracking store {uri} did not answer within {timeout_s:.0f} s")
    if outcome[0] is not None:
        raise TrackingError(f"MLflow tracking store {uri} cannot be used: {_first_line(outcome[0])}")


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:limit]


def _is_locked(exc: BaseException) -> bool:
    return "database is locked" in str(exc).lower() or "database table is locked" in str(exc).lower()


def _retry_locked(call: Callable[[], T]) -> T:
    for attempt in range(LOCKED_RETRIES):
        try:
            return call()
        except Exception as exc:
            if not _is_locked(exc) or attempt == LOCKED_RETRIES - 1:
                raise
            time.sleep(0.1 * 2**attempt)
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- data


def data_digest(files: Iterable[Path]) -> str:
    """A short content digest of input files: their names, sizes and bytes (streamed), in name
    order, so the same data gives the same digest wherever it lies."""
    digest = hashlib.sha256()
    for path in sorted((Path(p) for p in files), key=lambda p: (p.name, str(p))):
        try:
            size = path.stat().st_size
            digest.update(f"{path.name}\0{size}\0".encode())
            with path.open("rb") as fh:
                for chunk in iter(functools.partial(fh.read, 1 << 20), b""):
                    digest.update(chunk)
        except OSError as exc:
            raise DataError(f"{path}: cannot read it to compute the data digest ({exc.strerror})") from None
    return digest.hexdigest()[:16]


# --------------------------------------------------------------------------- params and tags


def _param_key(key: str) -> str:
    """MLflow keys allow letters, digits, ``_-. /:``; the config's ``archives[0].name`` becomes
    ``archives.0.name``."""
    key = re.sub(r"\[(\d+)\]", r".\1", key)
    return re.sub(r"[^\w.\- /:]", "_", key)


def _param_value(value: Any, limit: int) -> str:
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, (list, tuple, dict)):
        text = json.dumps(value, default=str)
    else:
        text = str(value)
    if len(text) > limit:
        note = f"... ({len(text)} characters; the whole value is in config.yaml)"
        text = text[: limit - len(note)] + note
    return text


def _git(*args: str) -> str | None:
    try:
        result = subprocess.run(["git", "-C", str(paths.project_root()), *args],
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def _package_version(*names: str) -> str:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "not installed"


def _context_tags(cfg: Config, task: str, stage: str) -> dict[str, str]:
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    tags = {
        "petvision.task": task,
        "petvision.stage": stage,
        "preset": cfg.preset,
        "git.commit": commit or "unknown",
        "git.dirty": "unknown" if status is None else str(bool(status)).lower(),
        "tensorflow.version": _package_version("tensorflow", "tensorflow-cpu", "tensorflow-macos"),
        "keras.version": _package_version("keras"),
        "host": socket.gethostname(),
    }
    if os.environ.get("DVC_STAGE"):
        tags["dvc.stage"] = os.environ["DVC_STAGE"]
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc.exp_name"] = os.environ["DVC_EXP_NAME"]
    if os.environ.get("DVC_EXP_BASELINE_REV"):
        tags["dvc.exp_baseline"] = os.environ["DVC_EXP_BASELINE_REV"]
    return tags


def _model_name(cfg: Config, task: str) -> str:
    return {
        "segmentation": cfg.segmentation.model.name,
        "classification": cfg.classification.model.name,
        "interpretation": cfg.visualize.model,
    }[task]


def _pip_requirements() -> list[str]:
    """What a served model needs, pinned to what trained it. Listing it ourselves spares MLflow
    inferring it, which imports the model in a subprocess (TensorFlow: tens of seconds)."""
    import keras

    backend = keras.backend.backend()
    packages = {"tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-macos"),
                "jax": ("jax",), "torch": ("torch",)}.get(backend, ())
    reqs = [f"keras=={keras.__version__}", f"numpy=={np.__version__}"]
    for name in packages:
        try:
            reqs.append(f"{name}=={metadata.version(name)}")
            break
        except metadata.PackageNotFoundError:
            continue
    return reqs


class _KerasFlavorMakingDir:
    """``mlflow.keras`` with one fix, for :meth:`mlflow.models.Model.log`.

    MLflow 3.17.2's ``mlflow.keras.save_model`` writes the input example into the model folder
    before it creates the folder, so ``mlflow.keras.log_model(..., input_example=x)`` fails with
    ``FileNotFoundError: .../model/input_example.json`` (SPEC §6). ``Model.log`` (what
    ``mlflow.keras.log_model`` calls) accepts any object with a ``save_model``; this one creates
    the folder and hands over to the real Keras flavor, so the logged model is an ordinary Keras
    flavor model (loader ``mlflow.keras``) with its signature and input example.
    """

    __name__ = "mlflow.keras"

    @staticmethod
    def save_model(path: str, **kwargs: Any) -> None:
        import mlflow.keras

        os.makedirs(path, exist_ok=True)
        mlflow.keras.save_model(path=path, **kwargs)


# --------------------------------------------------------------------------- the run

# What runs_tagged() adds to the runs started in its scope (a search's trials), and their ids.
_scoped_tags: dict[str, str] = {}
_scoped_started: list[str] = []


@contextlib.contextmanager
def runs_tagged(tags: dict[str, str]) -> Iterator[list[str]]:
    """Every run a stage starts inside this scope gets ``tags`` too; yields the list of the ids
    of those runs. A hyperparameter search (:mod:`petvision.search`) makes each trial's run a
    child of its search's run this way (``mlflow.parentRunId``), without the stage knowing."""
    global _scoped_started
    previous = dict(_scoped_tags), _scoped_started
    _scoped_tags.update(tags)
    _scoped_started = started = []
    try:
        yield started
    finally:
        _scoped_tags.clear()
        _scoped_tags.update(previous[0])
        _scoped_started = previous[1]



class Run:
    """One MLflow run around a stage's work (a context manager). See the module docstring."""

    def __init__(self, cfg: Config, task: str, stage: str, run_name: str | None = None,
                 resume_run_id: str | None = None, tags: dict[str, str] | None = None):
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, not {task!r}")
        self.cfg, self.task, self.stage = cfg, task, stage
        self.run_name = run_name or f"{stage} {_model_name(cfg, task)} {cfg.preset} {datetime.now():%m-%d %H:%M}"
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

        if _is_http(self.uri):
            bound_http_retries(self.cfg.tracking.connect_timeout_s)
        check_reachable(self.uri, self.cfg.tracking.connect_timeout_s)
        # Model.log and pyfunc.load_model("models:/...") resolve the store through MLflow's global
        # URI. Setting it also exports $MLFLOW_TRACKING_URI, which tracking_uri() reads as the
        # user's choice: that is put back at __exit__.
        self._env_uri = os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(self.uri)
        self._client = mlflow.MlflowClient(self.uri)
        try:
            self.experiment_id = _retry_locked(self._experiment)
            _retry_locked(self._start_run)
            # Model.log files a logged model under the fluent API's current experiment.
            _retry_locked(lambda: mlflow.set_experiment(experiment_id=self.experiment_id))
        except Exception as exc:  # noqa: BLE001 - the store answered but refused: say which store
            self._restore_env_uri()
            raise TrackingError(f"MLflow tracking store {self.uri}: could not start the run: {_first_line(exc)}") from None
        try:
            self._log_params_now(config_lib.flatten(config_lib.to_dict(self.cfg)))
            _retry_locked(lambda: self._client.log_text(self.run_id, config_lib.to_yaml(self.cfg), "config.yaml"))
        except Exception as exc:  # noqa: BLE001
            with contextlib.suppress(Exception):
                self._client.set_terminated(self.run_id, "FAILED")
            self._restore_env_uri()
            raise TrackingError(f"MLflow tracking store {self.uri}: could not log the configuration: {_first_line(exc)}") from None
        log.info("MLflow run %r (%s) %s in experiment %s at %s; runs table: %s",
                 self.run_name, self.run_id, "resumed" if self.resumed else "started",
                 getattr(self.cfg.tracking.experiments, self.task), self.uri,
                 ui_url(self.uri, self.experiment_id))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        if exc_type is None or (exc_type is SystemExit and not getattr(exc, "code", 1)):
            status = "FINISHED"
        elif issubclass(exc_type, KeyboardInterrupt):
            status = "KILLED"
        else:
            status = "FAILED"
        self._safe(f"end of run ({status})", lambda: self._client.set_terminated(self.run_id, status))
        self._restore_env_uri()
        if self.lost:
            log.warning("MLflow run %s at %s: %d log call(s) were lost: %s",
                        self.run_id, self.uri, len(self.lost), "; ".join(self.lost))
        return False

    def _restore_env_uri(self) -> None:
        if self._env_uri is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = self._env_uri

    def _experiment(self) -> str:
        name = getattr(self.cfg.tracking.experiments, self.task)
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

        tags = {**_context_tags(self.cfg, self.task, self.stage), **_scoped_tags, **self.extra_tags}
        if self.resume_run_id:
            previous = self._previous_run(self.resume_run_id)
            if previous is not None:
                self.run_id, self.resumed = previous.info.run_id, True
                self._params = dict(previous.data.params)
                self._client.update_run(self.run_id, status="RUNNING")
                self._set_tags_now({**tags, "resumed": "true"})
                return
        try:
            tags = context_registry.resolve_tags(tags)  # mlflow.user, mlflow.source.*, as mlflow.start_run does
        except Exception as exc:  # noqa: BLE001 - context tags are a nicety
            log.debug("MLflow context tags unavailable: %s", exc)
        run = self._client.create_run(self.experiment_id, run_name=self.run_name, tags=tags)
        self.run_id = run.info.run_id
        _scoped_started.append(self.run_id)

    def _previous_run(self, run_id: str) -> Any:
        try:
            run = self._client.get_run(run_id)
        except Exception as exc:  # noqa: BLE001 - not in this store: start afresh
            log.info("MLflow run %s to resume is not in %s (%s); starting a new run", run_id, self.uri, _first_line(exc))
            return None
        if run.info.lifecycle_stage == "deleted" or run.info.experiment_id != self.experiment_id:
            log.info("MLflow run %s to resume was deleted or belongs to another experiment; starting a new run", run_id)
            return None
        return run

    # ------------------------------------------------------------------ fault handling
    def _safe(self, what: str, call: Callable[[], T]) -> T | None:
        """Run one log call; on failure record it in ``lost`` instead of raising."""
        try:
            with self._fewer_retries_while_degraded():
                result = _retry_locked(call)
        except Exception as exc:  # noqa: BLE001 - logging must not stop training
            self.lost.append(f"{what}: {type(exc).__name__}: {_first_line(exc, 200)}")
            if not self._degraded:
                log.warning("MLflow logging to %s failed (%s: %s); training goes on, and later failures "
                            "are collected and listed at the end", self.uri, what, _first_line(exc, 200))
            self._degraded = True
            return None
        self._degraded = False
        return result

    @contextlib.contextmanager
    def _fewer_retries_while_degraded(self) -> Iterator[None]:
        """Once a call to a tracking server has failed, the next ones try once instead of
        retrying, so a dead server costs one timeout per call, not several."""
        if not (self._degraded and _is_http(self.uri)):
            yield
            return
        name = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
        before = os.environ.get(name)
        os.environ[name] = "0"
        try:
            yield
        finally:
            if before is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = before

    # ------------------------------------------------------------------ logging
    def set_tags(self, tags: dict[str, str]) -> None:
        self._safe(f"tags {sorted(tags)}", lambda: self._set_tags_now(tags))

    def _set_tags_now(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag
        from mlflow.utils.validation import MAX_TAG_VAL_LENGTH

        items = [RunTag(_param_key(k), _param_value(v, MAX_TAG_VAL_LENGTH)) for k, v in tags.items()]
        for i in range(0, len(items), 100):
            self._client.log_batch(self.run_id, tags=items[i:i + 100])

    def log_params(self, params: dict) -> None:
        self._safe(f"params {sorted(params)}", lambda: self._log_params_now(params))

    def _log_params_now(self, params: dict) -> None:
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

        new: dict[str, str] = {}
        for key, value in params.items():
            k, v = _param_key(key), _param_value(value, MAX_PARAM_VAL_LENGTH)
            if k in self._params:
                if self._params[k] != v:
                    log.warning("MLflow param %s is %r in run %s; not changing it to %r (params are fixed "
                                "once logged; config.yaml holds this attempt's value)", k, self._params[k], self.run_id, v)
                continue
            new[k] = v
        items = [Param(k, v) for k, v in new.items()]
        for i in range(0, len(items), 100):  # MLflow's batch limit for params
            self._client.log_batch(self.run_id, params=items[i:i + 100])
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
            items.append(Metric(_param_key(key), number, now, int(step or 0)))
        if not items:
            return

        def send() -> None:
            for i in range(0, len(items), 1000):
                self._client.log_batch(self.run_id, metrics=items[i:i + 1000])

        self._safe(f"metrics {sorted(metrics)} at step {step or 0}", send)

    def logged_steps(self, key: str) -> set[int] | None:
        """The steps at which metric ``key`` is in this run; None if the store cannot say (a
        resumed training session uses it to log the epochs the run is missing)."""
        try:
            return {m.step for m in _retry_locked(lambda: self._client.get_metric_history(self.run_id, key))}
        except Exception as exc:  # noqa: BLE001 - a read: nothing is lost
            log.warning("MLflow: cannot read the %s history of run %s (%s)", key, self.run_id, _first_line(exc, 200))
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

    def log_input_dataset(self, name: str, digest: str, source: str, context: str,
                          shape_info: dict | None = None) -> None:
        """Record a dataset as a run input (the UI's Datasets column): name, digest, where it is,
        its role (``training``, ``validation``, ``testing``...) and, as its profile, shapes/counts."""
        self._safe(f"input dataset {name}", lambda: self._client.log_inputs(
            self.run_id, datasets=[_dataset_input(name, digest, source, context, shape_info)]))

    def log_keras_model(self, model: Any, example: np.ndarray, name: str = "model") -> str:
        """Log ``model`` through MLflow's Keras flavor with a signature and an input example;
        return its URI (``models:/<id>``), loadable with ``mlflow.pyfunc.load_model``. "" if lost."""
        uri = self._safe(f"model {name}", lambda: self._log_keras_model_now(model, example, name))
        if uri:
            log.info("MLflow model %s logged: %s", name, uri)
        return uri or ""

    def _log_keras_model_now(self, model: Any, example: np.ndarray, name: str) -> str:
        import keras
        from mlflow.models import Model, infer_signature

        example = np.asarray(example)
        output = np.asarray(keras.ops.convert_to_numpy(model.predict(example, verbose=0)))
        if output.dtype not in (np.float16, np.float32, np.float64):
            output = output.astype(np.float32)  # bfloat16 outputs (mixed precision) have no MLflow type
        info = Model.log(
            artifact_path=None, name=name, flavor=_KerasFlavorMakingDir, flavor_name="mlflow.keras",
            run_id=self.run_id, model=model, signature=infer_signature(example, output),
            input_example=example, pip_requirements=_pip_requirements(),
        )
        return info.model_uri

    def keras_callback(self) -> Any:
        """A Keras callback logging each epoch's logs (train and ``val_`` metrics) at step=epoch."""
        import keras

        run = self

        class MlflowEpochLogger(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                if logs:
                    run.log_metrics(dict(logs), step=epoch)

        return MlflowEpochLogger()


def _dataset_input(name: str, digest: str, source: str, context: str, shape_info: dict | None) -> Any:
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    class ProfiledDataset(MetaDataset):
        @property
        def profile(self) -> Any:
            return shape_info

        def to_dict(self) -> dict[str, str]:
            config = super().to_dict()
            if shape_info:
                config["profile"] = json.dumps(shape_info, default=str)
            return config

    with warnings.catch_warnings():  # "can be interpreted in multiple ways": it is a local path
        warnings.simplefilter("ignore")
        dataset_source = resolve_dataset_source(source)
    dataset = ProfiledDataset(dataset_source, name=name, digest=digest)
    return DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])


class NoRun:
    """A run that logs nothing: what non-chief workers (and code paths without tracking) use,
    so that callers need no ``if`` around each log call."""

    def __init__(self) -> None:
        self.run_id = ""
        self.experiment_id = ""
        self.uri = ""
        self.resumed = False
        self.lost: list[str] = []

    def __enter__(self) -> NoRun:
        return self

    def __exit__(self, *exc_info: Any) -> bool:
        return False

    def set_tags(self, tags: dict[str, str]) -> None:
        pass

    def log_params(self, params: dict) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        pass

    def logged_steps(self, key: str) -> set[int] | None:
        return None

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        pass

    def log_input_dataset(self, name: str, digest: str, source: str, context: str,
                          shape_info: dict | None = None) -> None:
        pass

    def log_keras_model(self, model: Any, example: np.ndarray, name: str = "model") -> str:
        return ""

    def keras_callback(self) -> Any:
        import keras

        return keras.callbacks.Callback()
