"""Reliability: every fault in docs/reliability.md, injected, with the outcome it must have.

Training runs on tiny data written straight to ``.npy`` files here (32x32 images) and, for the
resume protocol, on an 8x8 model through :func:`petvision.training.loop.fit`. A kill is simulated
in-process by raising :class:`Killed` (a ``BaseException``, so no handler of ours or of Keras
runs, as with SIGKILL) at a chosen point of an epoch's end; the slow test kills a real stage
process with SIGKILL.
"""

from __future__ import annotations

import csv
import errno
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import keras
import numpy as np
import pytest
from archive_server import FAST
from conftest import (
    ROOT,
    SEG,
    STAGE_OUTPUTS,
    VENV_BIN,
    Killed,
    free_port,
    path_overrides,
    run_module,
    time_bound,
    tiny_segmenter,
    write_npy,
)
from mlflow import MlflowClient

from petvision.config import TrainConfig, task_config
from petvision.core import atomic
from petvision.core.errors import DataError, TrackingError, TrainingError
from petvision.core.tasks import Task
from petvision.data import inputs, npy_dataset
from petvision.models import loading
from petvision.render import plots
from petvision.train_segmentation import run_train_segmentation
from petvision.train_xception import run_train_xception
from petvision.training import faults, loop, session
from petvision.training.workdir import Workdir, _backup_epoch

# The tracking layer sets variables in os.environ: every test gets a clean copy.
pytestmark = pytest.mark.usefixtures("isolated_env")


# --------------------------------------------------------------------------- tiny data


CLS = (
    "data.classification.image_size=32",
    "classification.train.epochs=1",
    "classification.train.batch_size=8",
    "classification/model=residual_convnet",
    "tracking.log_model=false",
)


@pytest.fixture
def stage_data(tmp_path):
    npy = tmp_path / "npy"
    write_npy(npy, "segmentation", 32, {"train": 24, "val": 8})
    write_npy(npy, "classification", 32, {"train": 16, "val": 8, "test": 8}, seed=1)
    return npy


def files_under(*folders: Path) -> dict[str, bytes]:
    return {
        str(p): p.read_bytes()
        for folder in folders
        if folder.exists()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# --------------------------------------------------------------------------- the resume protocol

STEPS = 4  # 32 training images, batches of 8
TRAIN = TrainConfig(
    optimizer="adam", learning_rate=0.01, batch_size=8, epochs=4, early_stopping_patience=0
)


def tiny_model(filters: int = 4) -> keras.Model:
    return tiny_segmenter(filters, optimizer=loop.make_optimizer(TRAIN), seed=0)


def tiny_data():
    """Unshuffled batches: a resumed run then sees exactly what an uninterrupted one sees."""
    rng = np.random.default_rng(0)
    x, y = (
        rng.integers(0, 255, (40, 8, 8, 3), dtype=np.uint8),
        rng.integers(0, 3, (40, 8, 8, 1), dtype=np.uint8),
    )
    y[:, :4] = x[:, :4, :, :1] > 127  # something to learn, so that val_loss moves
    return (
        inputs.batches(x[:32], y[:32], 8, shuffle=False, seed=0),
        inputs.batches(x[32:], y[32:], 8, shuffle=False, seed=0),
    )


def tiny_fit(
    workdir: Workdir,
    callbacks=(),
    model: keras.Model | None = None,
    train: TrainConfig = TRAIN,
):
    model = model or tiny_model()
    train_ds, val_ds = tiny_data()
    fitting = loop.Fitting(
        train, workdir, config_key="segmentation", callbacks=list(callbacks), verbose=0
    )
    result = loop.fit(model, train_ds, val_ds, fitting)
    return model, result


class OptimizerProbe(keras.callbacks.Callback):
    """What the optimizer holds when training (re)starts, after BackupAndRestore has run."""

    def on_train_begin(self, logs=None):
        self.iterations = int(self.model.optimizer.iterations.numpy())
        self.variables = [np.array(v.numpy()) for v in self.model.optimizer.variables]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run: its history, and the optimizer state after epoch 2."""
    captured = {}

    def after_epoch(epoch, logs):
        if epoch == 1:
            captured["variables"] = [np.array(v.numpy()) for v in model.optimizer.variables]

    with time_bound(300, "the uninterrupted reference fit"):
        model = tiny_model()
        _, result = tiny_fit(
            Workdir(tmp_path_factory.mktemp("reference")),
            model=model,
            callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=after_epoch)],
        )
    return result.history, captured["variables"]


def kill_at(monkeypatch, point: str, epoch: int = 1):
    """Make the end of ``epoch`` (0-based) die at ``point``; returns callbacks to pass to fit."""

    def dying(original):
        def method(self, current, logs=None):
            if current == epoch:
                raise Killed(point)
            return original(self, current, logs)

        return method

    if point == "before_backup":  # the best model is saved, the backup and the commit are not
        monkeypatch.setattr(loop._Backup, "on_epoch_end", dying(loop._Backup.on_epoch_end))
    elif point == "before_commit":  # best model and backup saved, history.json not
        monkeypatch.setattr(
            loop.EpochHistory, "on_epoch_end", dying(loop.EpochHistory.on_epoch_end)
        )
    elif point == "after_commit":  # committed, not yet logged to MLflow (the last callback)
        return [
            keras.callbacks.LambdaCallback(
                on_epoch_end=lambda e, logs: e == epoch and _raise(point)
            )
        ]
    return []


def _raise(what: str):
    raise Killed(what)


def die_in_next_backup(model: keras.Model, torn: bool) -> None:
    """Die in the backup after the next epoch: half-way through writing its weights (``torn``), or
    once they are written but not yet the epoch count that goes with them."""
    save_weights = model.save_weights

    def dying(filepath, overwrite=True, **kwargs):
        if torn:
            Path(filepath).write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
        else:
            save_weights(filepath, overwrite=overwrite, **kwargs)
        raise Killed("in the backup")

    model.save_weights = dying


@pytest.mark.parametrize(
    "point",
    [
        "before_backup",
        "before_commit",
        "after_commit",
        "mid_backup_write",
        "before_backup_epoch_count",
        "backup_lost",
    ],
)
def test_a_killed_fit_resumes_as_if_never_interrupted(tmp_path, monkeypatch, reference, point):
    history, optimizer_after_2 = reference
    workdir = Workdir(tmp_path / "state")
    killed_model = tiny_model()
    with monkeypatch.context() as patch, pytest.raises(Killed):
        if point in ("mid_backup_write", "before_backup_epoch_count"):
            torn = point == "mid_backup_write"
            kill = [
                keras.callbacks.LambdaCallback(
                    on_epoch_end=lambda e, logs: e == 1 and die_in_next_backup(killed_model, torn)
                )
            ]
        else:
            kill = kill_at(patch, "after_commit" if point == "backup_lost" else point)
        tiny_fit(workdir, callbacks=kill, model=killed_model)
    if point == "backup_lost":
        shutil.rmtree(workdir.backup)
    committed = {
        "before_backup": 1,
        "before_commit": 1,
        "after_commit": 2,
        "mid_backup_write": 2,
        "before_backup_epoch_count": 2,
        "backup_lost": 0,
    }[point]

    probe = OptimizerProbe()
    model, result = tiny_fit(workdir, callbacks=[probe])

    assert result.resumed_from == committed
    assert probe.iterations == committed * STEPS  # the optimizer's step count was restored
    # rtol: room for a GPU's non-deterministic reductions; a lost optimizer state or an epoch
    # trained twice moves these numbers by percents.
    if committed == 2:  # and its slots (Adam's moments), not only the count
        for restored, saved in zip(probe.variables[1:], optimizer_after_2[1:]):
            np.testing.assert_allclose(restored, saved, rtol=1e-4)
    assert int(model.optimizer.iterations.numpy()) == TRAIN.epochs * STEPS
    assert sorted(result.history) == sorted(history)
    for key in history:  # the same 4 epochs, the same numbers as the uninterrupted run
        np.testing.assert_allclose(result.history[key], history[key], rtol=1e-4, err_msg=key)
    values = history["val_loss"]
    assert result.best_epoch == values.index(min(values)) + 1
    assert set(workdir.best_files()) == {result.best_epoch}
    best = keras.saving.load_model(result.best_model, safe_mode=True)
    assert int(best.optimizer.iterations.numpy()) == result.best_epoch * STEPS


def test_a_finished_fit_is_not_trained_again(tmp_path):
    """Killed after training, while writing the outputs: the rerun takes the result from disk."""
    workdir = Workdir(tmp_path / "state")
    _, first = tiny_fit(workdir)
    model, again = tiny_fit(workdir)
    assert int(model.optimizer.iterations.numpy()) == 0  # no step taken
    assert (again.history, again.best_epoch, again.resumed_from) == (
        first.history,
        first.best_epoch,
        TRAIN.epochs,
    )


def test_a_different_model_does_not_resume_state_it_did_not_make(tmp_path, monkeypatch):
    workdir = Workdir(tmp_path / "state")
    with pytest.raises(Killed):
        tiny_fit(workdir, callbacks=kill_at(monkeypatch, "after_commit", epoch=0))
    with pytest.raises(TrainingError, match=r"different model.*trainer\.resume=false"):
        tiny_fit(workdir, model=tiny_model(filters=5))


def keras_stop_epoch(values: list[float], patience: int) -> int | None:
    """Where Keras's own EarlyStopping stops on these values (1-based), fed one epoch at a time."""
    stopper = keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, mode="min")
    stopper.set_model(types.SimpleNamespace(stop_training=False, metrics=[]))
    stopper.on_train_begin()
    for epoch, value in enumerate(values):
        stopper.on_epoch_end(epoch, {"val_loss": value})
        if stopper.model.stop_training:
            return epoch + 1
    return None


@pytest.mark.parametrize(
    "values, patience",
    [
        ([1.0, 0.9, 0.95, 0.97, 0.8, 0.85], 2),
        ([1.0, 0.9, 0.95, 0.97, 0.8, 0.85], 3),
        ([1.0, 1.0, 1.0], 1),
        ([1.0, math.nan, 0.5, 0.6], 1),
        ([0.5, 0.4, 0.3], 1),
    ],
)
def test_early_stopping_counts_the_epochs_before_a_resume(values, patience):
    expected = keras_stop_epoch(values, patience)
    assert loop.early_stop_epoch(values, patience) == expected
    for resumed_after in range(expected or len(values)):  # a kill after any epoch before the stop
        guard = loop.StopOnNonFinite()
        stopper = loop.ResumableEarlyStopping("val_loss", patience, values[:resumed_after], guard)
        stopper.set_model(types.SimpleNamespace(stop_training=False))
        stopped = None
        for epoch in range(resumed_after, len(values)):
            stopper.on_epoch_end(epoch, {"val_loss": values[epoch]})
            if stopper.model.stop_training:
                stopped = epoch + 1
                break
        assert stopped == expected, resumed_after


def test_early_stopping_stops_a_resumed_fit_where_it_stops_an_uninterrupted_one(
    tmp_path, monkeypatch
):
    """A real resume of ``fit`` after every epoch before the stop. The validation targets are the
    opposite of what training teaches, so val_loss rises after epoch 1 and patience 2 stops at
    epoch 3; Keras's own EarlyStopping, counting again from the resume, would stop later."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (40, 8, 8, 3), dtype=np.uint8)
    y = rng.integers(0, 3, (40, 8, 8, 1), dtype=np.uint8)
    y[:, :4] = x[:, :4, :, :1] > 127
    y[32:, :4] = 1 - y[32:, :4]

    def fit(workdir: Workdir, callbacks=()):
        train = TrainConfig(
            optimizer="adam", learning_rate=0.01, batch_size=8, epochs=8, early_stopping_patience=2
        )
        return loop.fit(
            tiny_model(),
            inputs.batches(x[:32], y[:32], 8, shuffle=False, seed=0),
            inputs.batches(x[32:], y[32:], 8, shuffle=False, seed=0),
            loop.Fitting(
                train, workdir, config_key="segmentation", callbacks=list(callbacks), verbose=0
            ),
        )

    whole = fit(Workdir(tmp_path / "whole"))
    stop = len(whole.history["loss"])
    assert whole.stopped_early and stop == loop.early_stop_epoch(whole.history["val_loss"], 2) < 8
    for killed_after in range(1, stop):
        workdir = Workdir(tmp_path / f"killed-{killed_after}")
        with monkeypatch.context() as patch, pytest.raises(Killed):
            fit(workdir, kill_at(patch, "after_commit", epoch=killed_after - 1))
        resumed = fit(workdir)
        assert resumed.resumed_from == killed_after
        assert resumed.stopped_early and len(resumed.history["loss"]) == stop, killed_after
        assert resumed.best_epoch == whole.best_epoch
        np.testing.assert_allclose(
            resumed.history["val_loss"], whole.history["val_loss"], rtol=1e-4
        )


# --------------------------------------------------------------------------- training faults


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_best_model(tmp_path):
    workdir = Workdir(tmp_path / "state")
    model = tiny_model()
    best_after_1 = {}

    def diverge(epoch, logs):  # a learning rate of 1e30 after one good epoch
        if epoch == 1:
            best_after_1["bytes"] = workdir.best_file(1).read_bytes()
            model.optimizer.learning_rate.assign(1e30)

    with pytest.raises(
        TrainingError, match=r"loss became nan at epoch 2.*segmentation\.train\.learning_rate=0\.01"
    ):
        tiny_fit(
            workdir, model=model, callbacks=[keras.callbacks.LambdaCallback(on_epoch_begin=diverge)]
        )
    assert list(workdir.best_files()) == [1]
    assert workdir.best_file(1).read_bytes() == best_after_1["bytes"]  # never overwritten
    assert workdir.epochs_done() == 1  # the NaN epoch is not committed...
    assert _backup_epoch(workdir.backup / "training_metadata.json") == 1  # ...nor backed up
    best = keras.saving.load_model(workdir.best_model(), safe_mode=True)
    assert all(np.isfinite(w).all() for w in best.get_weights())


def test_out_of_memory_names_the_key_to_change(tmp_path):
    """Injected: TensorFlow's out-of-memory error raised from a training step (no real OOM)."""
    import tensorflow as tf

    class OutOfMemory(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            raise tf.errors.ResourceExhaustedError(
                None, None, "OOM when allocating tensor with shape[8,32,200,200]"
            )

    with pytest.raises(
        TrainingError,
        match=r"out of memory with segmentation\.train\.batch_size=8.*"
        r"segmentation\.train\.batch_size=4",
    ):
        tiny_fit(Workdir(tmp_path / "state"), callbacks=[OutOfMemory()])


# --------------------------------------------------------------------------- atomic outputs

STAGES = {
    "segmentation": (run_train_segmentation, SEG, "segmentation_samples"),
    "classification": (run_train_xception, CLS, "image_grid"),
}


class Tmpfs:
    """``paths.models`` on a real 64 MiB tmpfs mounted for the test (as root: CI containers, this
    project's machines), and :meth:`fill`, which takes all but 64 KiB of it with a filler file, so
    that the model copy (the stage's last and largest write) gets a real ENOSPC from the kernel,
    half-written. :attr:`cannot_mount` says why there is none (not root, or mount refused)."""

    def __init__(self, root: Path):
        self.root, self.models, self.filler = root, root / "models", root / "filler"
        root.mkdir(parents=True)
        self.cannot_mount = "" if os.geteuid() == 0 else "not root"
        if not self.cannot_mount:
            done = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(root)],
                capture_output=True,
                text=True,
            )
            if done.returncode:
                self.cannot_mount = f"mount -t tmpfs failed: {(done.stderr or done.stdout).strip()}"
        self.mounted = not self.cannot_mount

    def fill(self, patch=None) -> None:
        stats = os.statvfs(self.root)
        with self.filler.open("wb") as fh:
            fh.write(bytes(stats.f_bavail * stats.f_frsize - 64 * 1024))

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.root)], check=True)


@pytest.fixture
def tmpfs(tmp_path):
    made = Tmpfs(tmp_path / "disk")
    if made.cannot_mount:
        pytest.skip(f"a real ENOSPC needs a tmpfs of our own: {made.cannot_mount}")
    yield made
    made.unmount()


def simulated_enospc(patch) -> None:
    """**Simulated**: the model copy replaced by one that writes 100 bytes and raises ENOSPC
    (what the kernel does, without a full disk)."""

    def copyfile(source, target):
        Path(target).write_bytes(Path(source).read_bytes()[:100])
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    patch.setattr(session, "shutil", types.SimpleNamespace(copyfile=copyfile, rmtree=shutil.rmtree))


def picture_fails(patch, name: str):
    """**Simulated**: drawing the stage's last picture raises (before any output is written)."""

    def fail(*args, **kwargs):
        raise RuntimeError("injected: drawing the last picture failed")

    patch.setattr(plots, name, fail)


def check_failures_at_the_end(
    task, make_config, shared_store, monkeypatch, tmp_path, models, faults, after_each=None
):
    """Each of ``faults`` (``(name, inject)``) at the end of a training stage run, first with no
    outputs, then with a previous run's: no output at all, or every previous one byte-identical,
    no temporary file or staging folder, and no epoch trained again after a failure at the end."""
    run, overrides, _ = STAGES[task]
    store_uri = f"tracking.uri=sqlite:///{shared_store}/mlflow.db"
    trainings, fits = [], []
    real_train, real_fit = loop._train, loop.fit
    monkeypatch.setattr(loop, "_train", lambda *a, **k: trainings.append(1) or real_train(*a, **k))
    monkeypatch.setattr(loop, "fit", lambda *a, **k: fits.append(real_fit(*a, **k)) or fits[-1])
    outputs = [
        (models if name.startswith("models/") else tmp_path) / name.removeprefix("models/")
        for name in STAGE_OUTPUTS[task]
    ]
    folders = (models, tmp_path / "reports")
    overrides = (*overrides, store_uri, f"paths.models={models}")

    def attempt(name, inject, epochs: int):
        cfg = make_config(*overrides, f"{task}.train.epochs={epochs}")
        with monkeypatch.context() as patch:
            inject(patch)
            with pytest.raises((OSError, RuntimeError), match="No space|injected") as err:
                run(cfg)
            if name.endswith("enospc"):
                assert isinstance(err.value, OSError) and err.value.errno == errno.ENOSPC, name
        if after_each:
            after_each()
        leftovers = [
            p for p in files_under(*folders) if Path(p).name.startswith(".") or ".partial" in p
        ]
        assert leftovers == [], name  # no temporary file, no staging folder

    # No old outputs: a failure while writing them, or just before, leaves none.
    for name, inject in faults:
        attempt(name, inject, epochs=1)
        assert files_under(*folders) == {}, name
    # Training had finished at the first failure: not done again, by the failures or the success.
    summary = run(make_config(*overrides, f"{task}.train.epochs=1"))
    assert len(trainings) == 1 and fits[-1].resumed_from == 1 and summary["epochs_run"] == 1
    before = files_under(*folders)
    assert set(before) == {str(p) for p in outputs}

    # Old outputs: a failure while writing new ones (two epochs now), or just before, leaves them all.
    for name, inject in faults:
        attempt(name, inject, epochs=2)
        assert len(trainings) == 2, name
        assert files_under(*folders) == before, name


@pytest.mark.parametrize("task", ["segmentation", "classification"])
def test_a_real_enospc_at_the_end_leaves_the_old_outputs_or_none(
    task, tmp_path, make_config, shared_store, stage_data, monkeypatch, tmpfs
):
    """**Real**: the kernel's "No space left on device" on a full tmpfs, while the stage copies its
    model into ``paths.models`` (skipped, with the reason, where no tmpfs can be mounted)."""
    check_failures_at_the_end(
        task,
        make_config,
        shared_store,
        monkeypatch,
        tmp_path,
        tmpfs.models,
        [("enospc", tmpfs.fill)],
        after_each=tmpfs.free,
    )


@pytest.mark.parametrize("task", ["segmentation", "classification"])
def test_simulated_failures_at_the_end_leave_the_old_outputs_or_none(
    task, tmp_path, make_config, shared_store, stage_data, monkeypatch
):
    """**Simulated**: the model copy raising ENOSPC, and the last picture failing to draw."""
    last_picture = STAGES[task][2]
    check_failures_at_the_end(
        task,
        make_config,
        shared_store,
        monkeypatch,
        tmp_path,
        tmp_path / "models",
        [
            ("simulated enospc", simulated_enospc),
            ("picture fails", lambda patch: picture_fails(patch, last_picture)),
        ],
    )


# Every trainer.* key but resume, with a value other than the default: each changes what training
# computes (device and precision the arithmetic, xla the kernels, strategy the reductions, seed the
# initial weights and shuffles, deterministic the op order).
TRAINER_CHANGES = {
    "device": "cpu",
    "precision": "mixed_bfloat16",
    "xla": "true",
    "strategy": "mirrored",
    "seed": "1",
    "deterministic": "true",
}


# Every segmentation.train.* key, with a value other than the tiny settings' (SEG on the quick
# preset): each changes what training computes or how long it runs.
TRAIN_CHANGES = {
    "optimizer": "rmsprop",
    "learning_rate": "0.5",
    "batch_size": "4",
    "epochs": "2",
    "early_stopping_patience": "1",
    "schedule": "constant",
    "warmup_epochs": "0.1",
}


def test_saved_state_is_resumed_only_with_the_same_settings_and_data(
    tmp_path, make_config, monkeypatch
):
    import dataclasses

    from petvision.config import TrainerConfig

    npy = tmp_path / "npy"
    write_npy(npy, "segmentation", 16, {"train": 8, "val": 4})
    rt = types.SimpleNamespace()  # the fingerprint reads no runtime choice

    def fingerprint(*overrides):
        """The fingerprint a stage run with these overrides would save, over the real .npy files."""
        cfg = make_config(*SEG, f"paths.npy={npy}", *overrides)
        splits = [npy_dataset.load_split(npy, "segmentation", name) for name in ("train", "val")]
        made = session.TrainingSession(cfg, task_config(cfg, Task.segmentation), rt, splits)
        return made._fingerprint(made._data_digests())

    same = fingerprint()
    assert fingerprint() == same  # the digests are of the bytes, which have not changed
    # What the trained model does not depend on may change between a kill and the rerun...
    assert (
        fingerprint(
            "trainer.resume=false",
            "trainer.steps_per_execution=4",  # the same updates, fewer calls
            "trainer.compile_cache=false",  # the same programs, compiled again
            "trainer.xla_flags='--xla_gpu_autotune_level=0'",  # how XLA compiles them
            "tracking.log_model=true",
            "classification.train.epochs=7",
        )
        == same
    )
    # ...what it depends on may not (dvc.yaml's params of the stage, and the data).
    assert set(TRAINER_CHANGES) == {f.name for f in dataclasses.fields(TrainerConfig)} - {
        "resume",
        "steps_per_execution",
        "compile_cache",
        "xla_flags",
    }
    default_trainer = make_config(*SEG).trainer
    for key, value in TRAINER_CHANGES.items():
        assert str(getattr(default_trainer, key)).lower() != value, key  # really a change
        assert fingerprint(f"trainer.{key}={value}") != same, key
    assert set(TRAIN_CHANGES) == {f.name for f in dataclasses.fields(TrainConfig)}
    default_train = make_config(*SEG).segmentation.train
    for key, value in TRAIN_CHANGES.items():
        assert str(getattr(default_train, key)).lower() != value, key  # really a change
        assert fingerprint(f"segmentation.train.{key}={value}") != same, key
    for override in ["segmentation/model=unet", "data.segmentation.image_size=40"]:
        assert fingerprint(override) != same, override

    # One pixel of one training image, changed and put back: the data digest follows the bytes.
    images = npy_dataset.array_path(npy, "segmentation", "train", "images")
    original = np.load(images)
    changed = original.copy()
    changed[3, 5, 5, 1] ^= 1
    np.save(images, changed)
    assert fingerprint() != same
    np.save(images, original)
    assert fingerprint() == same

    workdir = Workdir(tmp_path / "state")
    with pytest.raises(Killed):
        tiny_fit(workdir, callbacks=kill_at(monkeypatch, "after_commit", epoch=0))
    workdir.save_fingerprint(same)
    assert workdir.adopt(same) == 1
    assert (
        workdir.adopt(fingerprint("segmentation.train.epochs=2")) == 0 and not workdir.root.exists()
    )


# A rerun of a killed stage with each of these must start afresh (the first is the kill's): one
# setting of each kind the fingerprint reads, the training's, the trainer's and the model's
# (test_saved_state_is_resumed_only_with_the_same_settings_and_data maps every setting to a new
# fingerprint; this test shows what the stage does when the fingerprint differs).
RERUN_SETTINGS = [
    [],
    ["segmentation.train.batch_size=4"],
    ["trainer.seed=7"],
    ["segmentation/model=unet"],
]


def test_a_killed_stage_rerun_with_other_settings_or_data_starts_afresh_and_says_so(
    tmp_path, make_config, monkeypatch, caplog
):
    """The stage itself (``run_train_segmentation``), killed after committing epoch 1 and run
    again with one setting changed each time, then with one pixel of the data changed:
    each rerun starts afresh (it trains epoch 1 again, with an optimizer that counted only this
    run's steps, in a new MLflow run) and its log says so; the same settings and data again
    resume. **Simulated kill**: ``PETVISION_KILL_AT=after_commit:1`` with the SIGKILL replaced
    by an exception no handler catches (test_kill_points.py kills for real; here the subject is
    what the rerun keeps)."""
    npy = tmp_path / "npy"
    write_npy(npy, "segmentation", 16, {"train": 8, "val": 4})
    base = (
        f"paths.npy={npy}",
        "data.segmentation.image_size=16",
        "segmentation.train.epochs=2",
        "segmentation.train.batch_size=8",
        "tracking.log_model=false",
    )
    state = Workdir(tmp_path / "state" / "segmentation")
    monkeypatch.setenv(faults.ENV, "after_commit:1")
    monkeypatch.setattr(faults, "_die", lambda: _raise("SIGKILL after the commit of epoch 1"))

    def killed_after_epoch_1(settings: list[str], what: str) -> str:
        """Run the stage until the kill; returns the MLflow run id its state names."""
        caplog.clear()
        with caplog.at_level("INFO"):
            try:
                run_train_segmentation(make_config(*base, *settings))
            except Killed:
                pass
            else:
                pytest.fail(f"{what}: the rerun never trained epoch 1: it resumed the old state")
        assert "resuming" not in caplog.text, what
        assert state.epochs_done() == 1, what
        batch = next((int(s.split("=", 1)[1]) for s in settings if "batch_size" in s), 8)
        best = keras.saving.load_model(state.best_file(1), safe_mode=True)
        # One epoch of this run's steps: an optimizer restored from the killed run counts more.
        assert int(best.optimizer.iterations.numpy()) == 8 // batch, what
        return state.run_id()

    run_ids = [killed_after_epoch_1(RERUN_SETTINGS[0], "the first run")]
    for settings in RERUN_SETTINGS[1:]:
        run_ids.append(killed_after_epoch_1(settings, str(settings)))
        assert "interrupted run with other settings or data; starting afresh" in caplog.text, (
            settings
        )
    # The same settings, one pixel of one training image changed.
    images = npy_dataset.array_path(npy, "segmentation", "train", "images")
    changed = np.load(images)
    changed[3, 5, 5, 1] ^= 1
    np.save(images, changed)
    run_ids.append(killed_after_epoch_1(RERUN_SETTINGS[-1], "one pixel changed"))
    assert "interrupted run with other settings or data; starting afresh" in caplog.text
    assert len(set(run_ids)) == len(run_ids)  # each fresh start is a new MLflow run

    # Nothing changed: the rerun resumes after epoch 1, in the same MLflow run.
    monkeypatch.delenv(faults.ENV)
    caplog.clear()
    with caplog.at_level("INFO"):
        summary = run_train_segmentation(make_config(*base, *RERUN_SETTINGS[-1]))
    assert "resuming segmentation training after epoch 1 of 2" in caplog.text
    assert "starting afresh" not in caplog.text
    assert summary["epochs_run"] == 2
    ran = json.loads((tmp_path / "reports" / "segmentation" / "mlflow_run.json").read_text())
    assert ran["run_id"] == run_ids[-1]


# --------------------------------------------------------------------------- tracking faults


@pytest.mark.timeout(60)
def test_unreachable_tracking_server_stops_the_stage_before_any_training(
    tmp_path, make_config, stage_data
):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    cfg = make_config(*SEG, f"tracking.uri={uri}", "tracking.connect_timeout_s=3")
    with pytest.raises(TrackingError, match=re.escape(uri) + ".*not reachable"):
        run_train_segmentation(cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["npy"]  # no state, no model, no reports


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_tracking_server_dying_mid_run_loses_logs_not_outputs(
    tmp_path, make_config, stage_data, mlflow_server, monkeypatch, caplog
):
    uri, kill_server = mlflow_server
    cfg = make_config(
        *SEG,
        "segmentation.train.epochs=3",
        f"tracking.uri={uri}",
        "tracking.connect_timeout_s=5",
        "tracking.log_model=true",
    )
    workdir = Workdir(tmp_path / "state" / "segmentation")
    seen_by_server = {}
    begin = loop.StopOnNonFinite.on_epoch_begin

    def kill_after_first_epoch(self, epoch, logs=None):
        if epoch == 1:
            run_id = workdir.run_id()
            seen_by_server["loss"] = [
                m.step for m in MlflowClient(uri).get_metric_history(run_id, "loss")
            ]
            kill_server()
        return begin(self, epoch, logs)

    monkeypatch.setattr(loop.StopOnNonFinite, "on_epoch_begin", kill_after_first_epoch)
    with caplog.at_level("WARNING"):
        summary = run_train_segmentation(cfg)

    assert seen_by_server["loss"] == [0]  # logging worked until the server died
    lost = "\n".join(summary["tracking_lost"])
    assert "at step 1" in lost and "at step 2" in lost, lost
    assert "artifact metrics.json" in lost and "model model" in lost, lost
    assert "log call(s) were lost" in caplog.text and "end of run (FINISHED)" in caplog.text
    # The DVC outputs do not depend on MLflow.
    reports = tmp_path / "reports" / "segmentation"
    assert json.loads((reports / "metrics.json").read_text())["epochs_run"] == 3
    assert len((reports / "history.csv").read_text().splitlines()) == 4
    keras.saving.load_model(tmp_path / "models" / "segmentation.keras", safe_mode=True)
    assert not workdir.root.exists()


# --------------------------------------------------------------------------- data faults


@pytest.mark.parametrize("cut", ["first", "second", "middle", "last"])
def test_a_download_cut_at_any_byte_resumes(served, tmp_path, cut):
    from petvision.data import fetch

    server, archive, data = served
    at = {"first": 0, "second": 1, "middle": len(data) // 2, "last": len(data) - 1}[cut]
    server.drop_after_once["/pets/images.tar.gz"] = at
    path = fetch.fetch_archive(archive, [server.url()], tmp_path, FAST)
    assert path.read_bytes() == data
    ranges = [r for _, r in server.requests]
    assert ranges[0] is None and ranges[-1] == (f"bytes={at}-" if at else None)


@pytest.mark.parametrize("fault", ["wrong_shape", "wrong_dtype", "pickled_objects", "not_npy"])
def test_bad_npy_files_are_refused_naming_the_file(tmp_path, fault):
    npy = tmp_path / "npy"
    write_npy(npy, "segmentation", 16, {"train": 4, "val": 2})
    path = npy_dataset.array_path(npy, "segmentation", "train", "masks")
    marker = tmp_path / "unpickled"
    if fault == "wrong_shape":
        np.save(path, np.zeros((4, 16, 8, 1), np.uint8))
    elif fault == "wrong_dtype":
        np.save(path, np.zeros((4, 16, 16, 1), np.float32))
    elif (
        fault == "pickled_objects"
    ):  # loading it with pickle would run code: it must never be unpickled
        np.save(path, np.array([Payload(marker)], dtype=object), allow_pickle=True)
    else:
        path.write_bytes(b"\x93NUMPY junk")
    with pytest.raises(DataError, match=re.escape(str(path))) as err:
        npy_dataset.load_split(npy, "segmentation", "train")
    assert "rerun preprocess" in str(err.value)
    assert not marker.exists()


class Payload:
    """An object whose unpickling creates a file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_models_with_code_in_them_are_refused(tmp_path):
    """A .keras file whose Lambda layer would run Python code on loading: refused by the training
    stages' load path (session.load_best) and by visualize's (models.loading.load_trained)."""
    marker = str(tmp_path / "ran")
    x_in = keras.Input((4,))
    out = keras.layers.Lambda(lambda x: (open(marker, "w").close(), x * 2)[1], output_shape=(4,))(
        x_in
    )
    keras.Model(x_in, out).save(tmp_path / "lambda.keras")
    Path(marker).unlink(missing_ok=True)

    workdir = Workdir(tmp_path / "state")
    workdir.root.mkdir()
    shutil.copyfile(tmp_path / "lambda.keras", workdir.best_file(1))
    atomic.write_json(workdir.history_file, {"loss": [1.0], "val_loss": [1.0]})
    with pytest.raises(ValueError, match="unsafe|safe_mode"):
        session.TrainingSession.load_best(types.SimpleNamespace(workdir=workdir))
    with pytest.raises(
        DataError, match=re.escape(str(tmp_path / "lambda.keras")) + ".*(unsafe|safe_mode)"
    ):
        loading.load_trained(tmp_path / "lambda.keras", "train_xception")
    assert not os.path.exists(marker)
    unsafe = keras.saving.load_model(tmp_path / "lambda.keras", safe_mode=False)
    unsafe(np.zeros((1, 4), np.float32))
    assert os.path.exists(marker)  # the payload is real: without safe mode it runs


# --------------------------------------------------------------------------- config faults through the CLI


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_contradictory_settings_fail_at_start_through_the_cli(tmp_path):
    import tensorflow as tf

    cases = {
        "multi_worker": (
            ["trainer.strategy=multi_worker"],  # removed: the error names what to use instead
            ["trainer.strategy='multi_worker'", "was removed", "trainer.strategy=mirrored"],
            {},
        ),
        # The kill switch of the reliability tests, misspelt: refused at once, not after an epoch.
        "kill_switch": (
            [],
            [f"{faults.ENV}='after_comit:2'", "after_commit"],
            {faults.ENV: "after_comit:2"},
        ),
    }
    if not tf.config.list_physical_devices("GPU"):
        cases["float16"] = (
            ["trainer.precision=mixed_float16"],
            ["trainer.precision='mixed_float16'", "CPU"],
            {},
        )
    env = {k: v for k, v in os.environ.items() if k != faults.ENV}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env['PATH']}"
    running = {}
    for name, (overrides, _, extra_env) in cases.items():  # at once: each costs a TensorFlow import
        base = tmp_path / name
        running[name] = (
            base,
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "petvision.train_segmentation",
                    *path_overrides(base),
                    f"tracking.uri=sqlite:///{base}/mlflow.db",
                    *overrides,
                    f"hydra.run.dir={tmp_path / 'hydra' / name}",
                ],
                cwd=ROOT,
                env={**env, **extra_env},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
        )
    for name, (base, process) in running.items():
        _, stderr = process.communicate(timeout=240)
        assert process.returncode == 2, stderr[-3000:]
        errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1, stderr[-3000:]
        for named in cases[name][1]:
            assert named in errors[0]
        assert "Traceback" not in stderr
        assert not base.exists()  # nothing written: no state, no store, no outputs


# --------------------------------------------------------------------------- a real kill


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_stage_killed_mid_run_resumes_in_the_same_mlflow_run(tmp_path):
    write_npy(tmp_path / "npy", "segmentation", 32, {"train": 96, "val": 16})
    steps = 96 // 8
    args = [
        *path_overrides(tmp_path),
        f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
        "data.segmentation.image_size=32",
        "segmentation.train.epochs=4",
        "segmentation.train.batch_size=8",
        "tracking.log_model=false",
    ]
    state = Workdir(tmp_path / "state" / "segmentation")

    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    with (tmp_path / "first.log").open("w") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "petvision.train_segmentation",
                *args,
                f"hydra.run.dir={tmp_path / 'hydra1'}",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=log,
        )
        try:
            while state.epochs_done() < 2 and process.poll() is None:
                time.sleep(0.01)
            process.send_signal(signal.SIGKILL)
        finally:
            process.kill()
            process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, (tmp_path / "first.log").read_text()[-3000:]
    at_kill = state.history()
    done = len(at_kill["loss"])
    assert 2 <= done < 4  # killed mid-run (epochs take about a second here)
    assert not (tmp_path / "models" / "segmentation.keras").exists()

    rerun = run_module("petvision.train_segmentation", *args, hydra_dir=tmp_path / "hydra2")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"resuming segmentation training after epoch {done} of 4" in rerun.stdout + rerun.stderr

    with (tmp_path / "reports" / "segmentation" / "history.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    for key, values in at_kill.items():  # the epochs before the kill are kept as they were
        np.testing.assert_allclose(
            [float(r[key]) for r in rows[:done]], values, rtol=1e-5, err_msg=key
        )

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("petvision-segmentation")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags["resumed"] == "true"
    assert (
        json.loads((tmp_path / "reports" / "segmentation" / "mlflow_run.json").read_text())[
            "run_id"
        ]
        == run.info.run_id
    )
    for key in at_kill:
        metric = client.get_metric_history(run.info.run_id, key)
        assert sorted(m.step for m in metric) == [0, 1, 2, 3], key  # each epoch once
        by_step = {m.step: m.value for m in metric}
        np.testing.assert_allclose(
            [by_step[s] for s in range(4)], [float(r[key]) for r in rows], rtol=1e-5
        )

    metrics = json.loads((tmp_path / "reports" / "segmentation" / "metrics.json").read_text())
    assert metrics["epochs_run"] == 4
    values = [float(r["val_loss"]) for r in rows]
    assert metrics["best_epoch"] == values.index(min(values)) + 1  # the best across the whole run
    model = keras.saving.load_model(tmp_path / "models" / "segmentation.keras", safe_mode=True)
    # The optimizer went on counting from where the kill left it (a restart at 0 would hold fewer).
    assert int(model.optimizer.iterations.numpy()) == metrics["best_epoch"] * steps
    assert not state.root.exists()
