"""Where MLflow runs go, and whether that store can be used: the tracking URI, reachability
checks that fail within seconds, the SQLite store's preparation and locking, and retries of
calls that SQLite refused with "database is locked"."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

from petvision.config import TrackingConfig
from petvision.core import paths
from petvision.core.errors import TrackingError
from petvision.util.retry import with_retries

log = logging.getLogger(__name__)

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
LOCKED_RETRIES = 6  # attempts in all
LOCKED_BACKOFF_S = 0.1


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


def is_http(uri: str) -> bool:
    """A tracking server's address (``http://``, ``https://``), not a store MLflow opens itself."""
    return urlparse(uri).scheme in ("http", "https")


def artifact_root(uri: str) -> str | None:
    """Where experiments we create keep their artifacts: ``mlruns/`` beside a SQLite file. None
    for other stores: a tracking server decides, a file store keeps them inside."""
    db = _sqlite_path(uri)
    return (db.parent / "mlruns").as_uri() if db is not None else None


def ui_url(uri: str, experiment_id: str, host: str = "http://127.0.0.1:5000") -> str:
    """The MLflow UI page with an experiment's runs table. MLflow 3 opens experiments in the
    GenAI (traces) view; ``workflowType=machine_learning`` selects the runs table instead."""
    base = uri.rstrip("/") if is_http(uri) else host
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


# --------------------------------------------------------------------------- can it be used


def bound_http_retries(timeout_s: float) -> None:
    """Cap MLflow's HTTP retries and timeout (process-wide) unless the user set them."""
    for name, value in HTTP_BOUNDS.items():
        os.environ.setdefault(name, value)
    os.environ.setdefault(
        "MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(HTTP_TIMEOUT_FLOOR_S, math.ceil(timeout_s)))
    )


def check_reachable(uri: str, timeout_s: float) -> None:
    """Raise :class:`TrackingError` naming ``uri`` when the store cannot be used, within about
    ``timeout_s``. A SQLite store is created here if it does not exist yet."""
    scheme = urlparse(uri).scheme
    if is_http(uri):
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
            "(mlflow server --host 127.0.0.1 --port 5000) "
            "or point tracking.uri / MLFLOW_TRACKING_URI elsewhere"
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
        raise TrackingError(
            f"MLflow tracking store {uri}: cannot create {folder} ({exc.strerror})"
        ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise TrackingError(f"MLflow tracking store {uri}: {folder} is not writable")


@contextlib.contextmanager
def _folder_lock(folder: Path, timeout_s: float, uri: str) -> Iterator[None]:
    """An exclusive flock on the store's folder itself (no lock file left behind)."""
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
            retry_locked(lambda: mlflow.MlflowClient(uri).search_experiments(max_results=1))
        except Exception as exc:
            raise TrackingError(
                f"MLflow tracking store {uri} cannot be used: {first_line(exc)}"
            ) from None


def _probe_with_client(uri: str, timeout_s: float) -> None:
    """Any other store (a database server...): one cheap query, abandoned after ``timeout_s``."""
    import mlflow

    outcome: list[BaseException | None] = []

    def probe() -> None:
        try:
            mlflow.MlflowClient(uri).search_experiments(max_results=1)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=probe, daemon=True, name="mlflow-probe")
    thread.start()
    thread.join(timeout_s)
    if not outcome:
        raise TrackingError(f"MLflow tracking store {uri} did not answer within {timeout_s:.0f} s")
    if outcome[0] is not None:
        raise TrackingError(f"MLflow tracking store {uri} cannot be used: {first_line(outcome[0])}")


def first_line(exc: BaseException, limit: int = 300) -> str:
    """An error's first line, cut to ``limit`` characters: what a one-line message quotes."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:limit]


def _is_locked(exc: BaseException) -> bool:
    return (
        "database is locked" in str(exc).lower() or "database table is locked" in str(exc).lower()
    )


def retry_locked(call: Callable[[], T]) -> T:
    """``call()``, tried again (briefly backing off) while SQLite answers "database is locked"."""
    return with_retries(
        call, retryable=_is_locked, retries=LOCKED_RETRIES - 1, backoff_s=LOCKED_BACKOFF_S
    )
