"""Shared fixtures: the real configuration, composed once per test and pointed at tmp_path."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Tests commit into temporary git repositories; CI machines may have no git identity.
for var, value in {
    "GIT_AUTHOR_NAME": "petvision tests",
    "GIT_AUTHOR_EMAIL": "tests@petvision.local",
    "GIT_COMMITTER_NAME": "petvision tests",
    "GIT_COMMITTER_EMAIL": "tests@petvision.local",
}.items():
    os.environ.setdefault(var, value)

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
# Every Python process the tests start applies pyproject.toml's warning filters (a deprecation
# raised from petvision's code is an error there too): see subprocess_site/sitecustomize.py.
SUBPROCESS_SITE = Path(__file__).resolve().parent / "subprocess_site"


# The JAX tests check what compiles, how often and what it computes, not how fast the compiled
# code runs: XLA's CPU compiler at its lowest optimization level compiles a model's steps in about
# half the time (the five models' test: 72 s -> 39 s on 2 cores). Appended, so a command's own
# XLA_FLAGS (scripts/ci_as_avx2's ISA limit) stay.
FAST_XLA_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
os.environ["XLA_FLAGS"] = " ".join(filter(None, [os.environ.get("XLA_FLAGS"), FAST_XLA_COMPILE]))

# A sitecustomize.py for the JAX tests: on PYTHONPATH, every Python process they start (the stages
# too) fails to import TensorFlow, as on the lent GPU machine, which has none.
NO_TENSORFLOW = """
import sys

class NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "tensorflow":
            raise ImportError(f"{name}: TensorFlow is blocked in this check")

sys.meta_path.insert(0, NoTensorFlow())
"""


def pythonpath(*first: str | Path) -> str:
    """A PYTHONPATH for a child process: ``first``, then what this one passes on (the warning
    filters' folder). Tests that set their own PYTHONPATH build it with this, not over it."""
    inherited = os.environ.get("PYTHONPATH", "")
    return os.pathsep.join([*(str(p) for p in first), *([inherited] if inherited else [])])


os.environ["PYTHONPATH"] = os.pathsep.join(
    dict.fromkeys(
        [str(SUBPROCESS_SITE), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    )
)
# The processes the tests start on TensorFlow find no JAX (subprocess_site/sitecustomize.py: it
# costs each 0.7 CPU-s of start-up for bridges nobody uses); the test processes themselves, which
# inherit the same setting, keep it for the JAX tests that run in them.
os.environ["PETVISION_TESTS_JAX"] = "absent"
if "jax" in sys.modules and sys.modules["jax"] is None:
    del sys.modules["jax"]


# --------------------------------------------------------------------------- one session, several workers

# The suite runs in several processes (pytest-xdist: make test's -n 2). What a session makes once
# for all of them (the trained pipeline, the tiny project) lies in one folder that the first
# process makes and names here; the workers it starts inherit the name.
SESSION_ENV = "PETVISION_TEST_SESSION"
_MADE_HERE = pytest.StashKey[bool]()


def pytest_configure(config):
    if SESSION_ENV not in os.environ:
        import tempfile

        os.environ[SESSION_ENV] = tempfile.mkdtemp(prefix="petvision-tests-")
        config.stash[_MADE_HERE] = True


def pytest_collection_finish(session):
    """The test modules are imported, and with them TensorFlow, Keras, JAX and MLflow: freeze those
    objects out of the garbage collector's full collections for the rest of the session, as a
    stage run does (petvision/__init__.py). Many tests run a stage in this process."""
    import gc

    gc.freeze()


def session_dir() -> Path:
    """The folder shared by every process of this test session."""
    return Path(os.environ[SESSION_ENV])


@contextlib.contextmanager
def session_lock(name: str):
    """Held by one process of the session at a time (the others wait), across the workers."""
    import fcntl

    with (session_dir() / f"{name}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def pytest_sessionfinish(session, exitstatus):
    """The session is over in every worker (this runs last in the process that started them):
    end a background training still running, and remove the session's folder (the quick
    preset's project alone is about 800 MB) unless a test failed: then it stays, for its logs."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        import trained

        trained.stop()
        if session.config.stash.get(_MADE_HERE, False):
            if exitstatus == 0 or not any(session_dir().iterdir()):
                shutil.rmtree(session_dir(), ignore_errors=True)
            else:
                print(f"\nthe session's shared folder is kept: {session_dir()}")


@pytest.fixture(scope="session")
def repro_project():
    """The tiny project after ``make run EXPERIMENT=tiny``, made once per session
    (project_copy.shared_repro_project). Read-only: copy it before changing anything."""
    from project_copy import shared_repro_project

    return shared_repro_project()


# --------------------------------------------------------------------------- the trained pipeline


# The slowest test files, slowest first: seconds of wall time on one of two workers, in a run of
# the suite without the background training (2-core AVX-512-BF16 CPU, 2026-12-06; on a slower or
# busier machine all grow alike, and the order is what matters). make test hands whole files to
# its workers in collection order (--dist loadfile --no-loadscope-reorder), so these start first
# and the many short files fill the end; in xdist's own order (most tests first) test_gpu_run came
# among the last and ended the session. The first two do not both wait for the shared tiny
# project (repro_project above): test_search makes it while test_reliability runs.
SLOWEST_FILES = (
    "test_search.py",  # 445: searches, each trial a training (the first makes the tiny project)
    "test_reliability.py",  # 389: in-process stage runs, killed and rerun; a real ENOSPC
    "test_gpu_run.py",  # 281: scripts/gpu_run --tiny on JAX, compiling every step
    "test_kill_points.py",  # 261: a real SIGKILL at each commit point, 16 stage processes
    "test_experiments.py",  # 191: dvc exp run and dvc queue of the tiny pipeline
    "test_backend_neutral.py",  # 184: every model compiled on JAX, twice
    "test_pipeline.py",  # 161: the five stages from the command line; dvc repro again
    "test_tracking_server.py",  # 125: a stage logging to a real MLflow server
)


def _run_order(item) -> tuple[bool, int]:
    name = item.path.name
    return (
        "trained_pipeline" in item.fixturenames,
        SLOWEST_FILES.index(name) if name in SLOWEST_FILES else len(SLOWEST_FILES),
    )


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """The slowest files first (:data:`SLOWEST_FILES`), and the tests that read the trained
    pipeline last: it trains in the background while the rest of the suite runs
    (tests/trained.py)."""
    items.sort(key=_run_order)  # stable: the order within a file, and of the others, is kept


@pytest.fixture(scope="session", autouse=True)
def _train_in_the_background(request):
    """Start the trained pipeline's training when the session starts (in whichever worker comes
    first), if a selected test reads it."""
    import trained

    if any("trained_pipeline" in item.fixturenames for item in request.session.items):
        trained.start()


@pytest.fixture(scope="session")
def trained_pipeline(_train_in_the_background):
    """The quick recipe trained once (tests/trained.py): read-only."""
    import trained

    return trained.wait()


@contextlib.contextmanager
def time_bound(seconds: float, what: str):
    """Fail the test if the block takes longer than ``seconds``. pytest-timeout bounds test bodies
    only (``timeout_func_only``): an in-process fixture that trains or runs a stage wraps its work
    in this, so that a hang fails there instead of eating CI's limit. Like pytest-timeout's signal
    method it interrupts Python code between bytecodes, and a native call once it returns."""

    def expired(signum, frame):
        pytest.fail(f"{what} took more than {seconds:g} s (conftest.time_bound)")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# Every oddity of the real dataset that write_quirky_image can write.
QUIRKS = (
    "jpeg",
    "png_as_jpg",
    "gif_as_jpg",
    "rgba",
    "cmyk",
    "grayscale",
    "palette",
    "extraneous_bytes",
)

# dvc.yaml's outs, metrics and plots of each training stage (paths relative to the project).
STAGE_OUTPUTS = {
    "segmentation": [
        "models/segmentation.keras",
        "models/segmentation.trust.npz",
        "reports/segmentation/metrics.json",
        "reports/segmentation/mlflow_run.json",
        "reports/segmentation/history.csv",
        "reports/segmentation/learning_curves.png",
        "reports/segmentation/samples.png",
        "reports/segmentation/reliability.png",
    ],
    "classification": [
        "models/classifier.keras",
        "models/classifier.trust.npz",
        "reports/classification/metrics.json",
        "reports/classification/mlflow_run.json",
        "reports/classification/history.csv",
        "reports/classification/learning_curves.png",
        "reports/classification/confusion_matrix.png",
        "reports/classification/misclassified.png",
        "reports/classification/reliability.png",
    ],
}


def write_quirky_image(path: Path, rgb, quirk: str) -> None:
    """Save ``rgb`` under ``path`` (a .jpg name) as one of the real set's oddities."""
    import io

    from PIL import Image

    img = Image.fromarray(rgb)
    if quirk in ("jpeg", "extraneous_bytes"):
        buffer = io.BytesIO()
        img.save(buffer, format="JPEG", quality=95)
        data = buffer.getvalue()
        if quirk == "extraneous_bytes":
            # libjpeg's "Corrupt JPEG data: N extraneous bytes before marker 0xd9": decodes fine.
            data = data[:-2] + b"\x00\x11\x22" + data[-2:]
        path.write_bytes(data)
    elif quirk == "png_as_jpg":
        img.save(path, format="PNG")
    elif quirk == "gif_as_jpg":
        img.convert("P", palette=Image.Palette.ADAPTIVE, colors=8).save(path, format="GIF")
    elif quirk == "rgba":
        img.convert("RGBA").save(path, format="PNG")
    elif quirk == "cmyk":
        img.convert("CMYK").save(path, format="JPEG", quality=95)
    elif quirk == "grayscale":
        img.convert("L").save(path, format="JPEG", quality=95)
    elif quirk == "palette":
        img.convert("P", palette=Image.Palette.ADAPTIVE, colors=8).save(path, format="PNG")
    else:
        raise AssertionError(quirk)


def path_overrides(base: Path) -> list[str]:
    """Hydra overrides that move every output of the pipeline under ``base``."""
    names = ["raw", "downloads", "npy", "models", "reports", "state"]
    return [f"paths.{name}={base / name}" for name in names]


@pytest.fixture
def make_config(tmp_path):
    """``make_config(*overrides)`` -> a validated Config whose paths all lie under tmp_path, with
    its own local MLflow store there."""
    from petvision import config

    def make(*overrides: str, raw: bool = False):
        composed = config.compose(
            [*path_overrides(tmp_path), f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", *overrides]
        )
        return composed if raw else config.load(composed)

    return make


def run_module(
    module: str,
    *args: str,
    cwd: Path = ROOT,
    env: dict | None = None,
    timeout: float = 600,
    hydra_dir: Path | None = None,
):
    """Run ``python -m <module> args`` as a user would; returns the CompletedProcess. Hydra's run
    folder goes to ``hydra_dir`` (a tmp path) so tests leave nothing in the checkout."""
    full_env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", **(env or {})}
    extra = [f"hydra.run.dir={hydra_dir}"] if hydra_dir else []
    return subprocess.run(
        [sys.executable, "-m", module, *args, *extra],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (at the moment of asking)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    args: list[str], health_url: str, log: Path, *, wait_s: float, env: dict | None = None
):
    """Start a real server in its own process group, its output in ``log``, and wait until
    ``health_url`` answers 200; returns ``(process, kill)``, where ``kill()`` stops the server and
    the workers it forked at once (SIGKILL), as a crash would. A server that exits or is not up
    within ``wait_s`` fails the test with the end of its log."""
    import signal
    import time

    import requests

    log_file = log.open("w")
    process = subprocess.Popen(
        args, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
    )

    def kill() -> None:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        log_file.close()

    deadline = time.monotonic() + wait_s
    while True:
        try:
            if requests.get(health_url, timeout=2).status_code == 200:
                return process, kill
        except requests.RequestException:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            kill()
            pytest.fail(f"{Path(args[0]).name} {args[1]} did not start: {log.read_text()[-3000:]}")
        time.sleep(0.3)


@pytest.fixture
def mlflow_server(tmp_path):
    """A real ``mlflow server`` (SQLite backend, proxied artifacts) on a free local port; yields
    ``(uri, kill)`` where ``kill()`` stops it at once (SIGKILL), as a crashed server would."""
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    _, kill = start_server(
        [
            str(VENV_BIN / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{tmp_path}/server.db",
            "--artifacts-destination",
            str(tmp_path / "server-artifacts"),
        ],
        f"{uri}/health",
        tmp_path / "server.log",
        # Minutes, not seconds: on a busy 2-core machine its first start (creating the tables)
        # is slow.
        wait_s=300,
    )
    yield uri, kill
    kill()


# --------------------------------------------------------------------------- shared by several test files

# The misbehaving HTTP server of the download tests (tests/archive_server.py), for every test module.
from archive_server import pet_server, served  # noqa: E402, F401


@pytest.fixture
def isolated_env(monkeypatch):
    """A clean copy of the variables that steer the project (tracking store, DVC, project root)
    for one test; the tracking layer sets MLflow's HTTP bounds in os.environ (setdefault), so the
    whole environment is put back afterwards."""
    from petvision.tracking import store

    saved = dict(os.environ)
    for name in [
        "MLFLOW_TRACKING_URI",
        "DVC_ROOT",
        "DVC_STAGE",
        "DVC_EXP_NAME",
        "PETVISION_ROOT",
        *store.HTTP_BOUNDS,
        "MLFLOW_HTTP_REQUEST_TIMEOUT",
    ]:
        monkeypatch.delenv(name, raising=False)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(autouse=True)
def float32_keras_policy():
    """A stage run in-process sets Keras's global dtype policy (mixed_bfloat16 where the CPU has
    native bfloat16): put float32 back, so a later test's model is not built in bfloat16."""
    yield
    if "keras" in sys.modules:
        sys.modules["keras"].config.set_dtype_policy("float32")


@pytest.fixture
def untrained_models(make_config):
    """``(cfg, {Task: model})``: the tiny preset's configuration, its untrained models saved where
    the pipeline saves its own (tests/saved_models.py)."""
    from saved_models import save_untrained_models

    cfg = make_config("experiment=tiny")
    return cfg, save_untrained_models(cfg)


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory) -> Path:
    """The folder of one SQLite store (``mlflow.db``) for the tests of a module that do not care
    whose it is: creating one costs seconds."""
    return tmp_path_factory.mktemp("shared-store")


# One epoch of the segmentation stage at 32 px, no model logged: the reliability tests' stage run.
SEG = (
    "data.segmentation.image_size=32",
    "segmentation.train.epochs=1",
    "segmentation.train.batch_size=8",
    "tracking.log_model=false",
)


class Killed(BaseException):
    """An in-process stand-in for SIGKILL: nothing after it runs, no on_train_end included."""


def tiny_segmenter(filters: int = 4, optimizer="adam", seed: int = 0):
    """Per-pixel class scores, like the segmentation model, at 8x8: seconds to fit."""
    import keras

    keras.utils.set_random_seed(seed)
    x_in = keras.Input((8, 8, 3), dtype="uint8")
    x = keras.layers.Rescaling(1 / 255)(x_in)
    x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
    out = keras.layers.Conv2D(3, 1, activation="softmax", dtype="float32")(x)
    model = keras.Model(x_in, out)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    return model


def write_npy(
    npy: Path,
    task: str,
    size: int,
    counts: dict[str, int],
    seed: int = 0,
    pet_divisor: int = 3,
    centred: bool = False,
    **index: object,
) -> None:
    """A learnable toy set in the preprocess stage's layout: a bright square of side
    ``size // pet_divisor`` on noise is the pet (mask 0, background 1), somewhere or ``centred``;
    its colour channel is the species (red cat, blue dog). ``index`` goes into index.json (the
    settings preprocess records there)."""
    import numpy as np

    from petvision.data import npy_dataset

    rng = np.random.default_rng(seed)
    splits = {}
    folder = npy / task
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in counts.items():
        labels = (np.arange(count) % 2).astype(np.uint8)
        images = rng.integers(0, 60, (count, size, size, 3), dtype=np.uint8)
        masks = np.ones((count, size, size, 1), np.uint8)
        side = size // pet_divisor
        for i in range(count):
            top, left = ((size - side) // 2,) * 2 if centred else rng.integers(0, size - side, 2)
            images[i, top : top + side, left : left + side, 2 * labels[i]] = 220
            masks[i, top : top + side, left : left + side] = 0
        arrays = {"images": images, "masks": masks, "labels": labels}
        for name in npy_dataset.ARRAYS[task]:
            np.save(npy_dataset.array_path(npy, task, split, name), arrays[name])
        splits[split] = [
            f"{'Abyssinian' if label == 0 else 'beagle'}_{split}_{i}"
            for i, label in enumerate(labels)
        ]
    made = npy_dataset.make_index(task, size, splits, **index)  # type: ignore[arg-type]
    (folder / npy_dataset.INDEX_FILE).write_text(json.dumps(made), encoding="utf-8")
