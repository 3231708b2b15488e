"""Training shared by both training stages: optimizer, callbacks, resume, and failure handling.

A stage-private work folder (``<paths.state>/<task>/``, never a DVC output) holds what an
interrupted run needs to go on. Every epoch ends with the same steps, in this order:

1. if the epoch improved the monitored value, the model is saved as ``best-<epoch>.keras``;
2. Keras's ``BackupAndRestore`` saves the weights, the optimizer state and the epoch count;
3. ``history.json`` (every epoch's logs) is replaced atomically. This is the *commit*: an epoch
   counts as done when, and only when, it is in ``history.json``;
4. best models older than the newest committed one are removed; early stopping decides; the
   epoch's logs go to MLflow.

A kill can land anywhere in there. :meth:`Workdir.recover` brings the folder back in step with
``history.json`` before training resumes: a backup that ran ahead (or was cut off) is replaced by
Keras's previous copy (``double_checkpoint``), and best models of uncommitted epochs are removed.
An epoch whose loss became NaN or infinite is never committed, so neither the backup nor the
best model ever holds its weights. Running the stage again resumes after the last committed
epoch with the same optimizer state; a completed run clears the folder.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras

from petvision.config import TrainConfig
from petvision.core.atomic import atomic_file
from petvision.core.errors import TrainingError
from petvision.models import xla
from petvision.training import faults, schedules
from petvision.training.runtime import Runtime
from petvision.training.workdir import Workdir

log = logging.getLogger(__name__)


def make_optimizer(
    train: TrainConfig, steps_per_epoch: int | None = None
) -> keras.optimizers.Optimizer:
    """The configured optimizer by its Keras name (``config.Optimizer`` lists the allowed ones);
    ``steps_per_epoch`` is needed by a learning-rate schedule (``train.schedule``)."""
    rate = schedules.learning_rate(train, steps_per_epoch)
    spec = {"class_name": str(train.optimizer), "config": {"learning_rate": rate}}
    return keras.optimizers.get(spec)


def compile_model(
    model: keras.Model,
    rt: Runtime,
    train: TrainConfig,
    steps_per_epoch: int,
    *,
    loss: str,
    metrics: list,
    config_key: str,
) -> keras.Model:
    """Compile ``model`` as both training stages do: the configured optimizer and schedule, XLA
    as :func:`petvision.training.runtime.setup` chose (always on JAX), ``trainer.steps_per_execution``
    steps per call. Where the backend cannot compile the model's layers the step runs without
    XLA, and the log says which layers and why (TensorFlow and the book's augmentation)."""
    xla.allow(model)
    blockers = xla.blockers(model) if rt.xla else []
    with xla.loading():  # Keras's own warning names no layer; the one below does
        model.compile(
            optimizer=make_optimizer(train, steps_per_epoch),
            loss=loss,
            metrics=metrics,
            jit_compile=rt.xla,
            steps_per_execution=rt.steps_per_execution,
        )
    if blockers:
        log.warning(
            "%s: trainer.xla=true, but %s trains without XLA: %s cannot be compiled on the %s "
            "backend (%s). Training goes on uncompiled; %s.model.augmentation.enabled=false or "
            "KERAS_BACKEND=jax would compile it",
            config_key,
            model.name,
            ", ".join(blockers),
            keras.backend.backend(),
            xla.WHY_NOT_ON_TENSORFLOW
            if keras.backend.backend() == "tensorflow"
            else "Keras marks them so",
            config_key,
        )
    return model


class StopOnNonFinite(keras.callbacks.Callback):
    """Stop at the first NaN or infinite loss. The epoch it happens in is not committed (the
    callbacks below check :attr:`failed`) and the stage then fails with a clear error."""

    def __init__(self):
        super().__init__()
        self.where: tuple[int, int, float] | None = None
        self._epoch = 0

    @property
    def failed(self) -> bool:
        return self.where is not None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.where = (self._epoch + 1, batch + 1, float(loss))
            self.model.stop_training = True


class BestCheckpoint(keras.callbacks.Callback):
    """Save the model of each epoch that lowers the finite ``monitor`` value (strictly) as
    ``best-<epoch>.keras``, atomically; older ones are removed once the epoch is committed."""

    def __init__(self, workdir: Workdir, monitor: str, best: float | None, guard: StopOnNonFinite):
        super().__init__()
        self.workdir, self.monitor, self.guard = workdir, monitor, guard
        self.best = math.inf if best is None else best

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if self.guard.failed or value is None or not math.isfinite(value) or value >= self.best:
            return
        self.best = float(value)
        path = self.workdir.best_file(epoch + 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as tmp:
            self.model.save(tmp)
        log.info("epoch %d: %s improved to %.4f, saved %s", epoch + 1, self.monitor, value, path)
        faults.point("after_best_saved", epoch + 1)


class _Backup(keras.callbacks.BackupAndRestore):
    """Keras's backup (weights, optimizer state, epoch), skipped for an epoch that went NaN."""

    def __init__(self, workdir: Workdir, guard: StopOnNonFinite):
        # delete_checkpoint=False: the stage clears the whole work folder once its outputs are written.
        super().__init__(str(workdir.backup), double_checkpoint=True, delete_checkpoint=False)
        self.guard = guard

    def on_epoch_end(self, epoch, logs=None):
        if not self.guard.failed:
            super().on_epoch_end(epoch, logs)
            faults.point("after_backup", epoch + 1)

    def _save_model(self):
        epoch = self._current_epoch
        if faults.armed("mid_backup", epoch):  # tests: die between the weights and the epoch count
            self.model.save_weights = faults.after(self.model.save_weights, "mid_backup", epoch)
        super()._save_model()


class EpochHistory(keras.callbacks.Callback):
    """Every epoch's logs, kept on disk so that a resumed run continues the same history.
    Writing them is the epoch's commit (see the module docstring)."""

    def __init__(self, workdir: Workdir, guard: StopOnNonFinite):
        super().__init__()
        self.workdir, self.guard = workdir, guard
        self.history: dict[str, list[float]] = {}

    def on_train_begin(self, logs=None):
        self.history = self.workdir.history()
        # BackupAndRestore (earlier in the list) has restored the epoch count; Workdir.recover made
        # it agree with history.json, so a disagreement means the folder was tampered with.
        start = getattr(self.model, "_initial_epoch", 0) or 0
        done = len(self.history.get("loss", []))
        if start != done:
            raise TrainingError(
                f"{self.workdir.root}: the training backup is after epoch {start} but "
                f"history.json after epoch {done}; delete that folder to start afresh"
            )

    def on_epoch_end(self, epoch, logs=None):
        if self.guard.failed:
            return
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        with atomic_file(self.workdir.history_file) as tmp:
            tmp.write_text(json.dumps(self.history, indent=2) + "\n", encoding="utf-8")
            # Reliability tests: die with the new history whole under its temporary name.
            faults.point("mid_commit", epoch + 1)
        self.workdir.prune_best()
        faults.point("after_commit", epoch + 1)


def early_stop_epoch(values: list[float], patience: int) -> int | None:
    """Keras's ``EarlyStopping`` rule (mode min, min_delta 0) applied to a whole run's values:
    the 1-based epoch after which training stops, or None."""
    if patience <= 0:
        return None
    best, wait = None, 0
    for epoch, value in enumerate(values):
        wait += 1
        if best is None or value < best:  # a NaN never improves
            best, wait = value, 0
        elif wait >= patience and epoch > 0:
            return epoch + 1
    return None


class ResumableEarlyStopping(keras.callbacks.Callback):
    """Early stopping counted over the whole run, the epochs before a resume included (Keras's
    own callback starts counting again at every ``fit``)."""

    def __init__(self, monitor: str, patience: int, prior: list[float], guard: StopOnNonFinite):
        super().__init__()
        self.monitor, self.patience, self.guard = monitor, patience, guard
        self.values = list(prior)

    def on_epoch_end(self, epoch, logs=None):
        if self.guard.failed:
            return
        self.values.append(float((logs or {}).get(self.monitor, math.nan)))
        if early_stop_epoch(self.values, self.patience):
            self.model.stop_training = True


@dataclass
class FitResult:
    history: dict[str, list[float]]  # every epoch of the run, resumed parts included
    best_epoch: int  # 1-based
    best_model: Path
    resumed_from: int  # completed epochs found on disk at start (0 for a fresh run)
    stopped_early: bool


@dataclass(frozen=True)
class Fitting:
    """How :func:`fit` trains, besides the model and its batches."""

    train: TrainConfig  # <task>.train: epochs, batch size, early stopping, learning rate...
    workdir: Workdir  # the task's work folder: resume, the best checkpoint
    config_key: str  # "segmentation" or "classification": names the settings in error messages
    callbacks: Sequence[keras.callbacks.Callback] = ()  # after the commit protocol's own
    monitor: str = "val_loss"
    verbose: str | int = "auto"


def fit(model: keras.Model, train_ds, val_ds, fitting: Fitting) -> FitResult:
    """``model.fit`` with resume, the best checkpoint, early stopping and clear failures.
    A run that had already finished training (killed while writing its outputs) is not trained
    again: the result comes from the work folder."""
    train, workdir, monitor = fitting.train, fitting.workdir, fitting.monitor
    resumed_from = workdir.recover()
    prior = workdir.history()
    prior_values = prior.get(monitor, [])
    patience = train.early_stopping_patience
    finished = resumed_from >= train.epochs or early_stop_epoch(prior_values, patience) is not None
    if resumed_from:
        log.info(
            "resuming %s training after epoch %d of %d%s",
            fitting.config_key,
            resumed_from,
            train.epochs,
            " (training had finished)" if finished else "",
        )

    record = prior
    if not finished:
        workdir.check_model(model)
        record = _train(model, train_ds, val_ds, fitting, prior_values)

    values = record.get(monitor, [])
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        raise TrainingError(f"no epoch produced a finite {monitor}; nothing to keep")
    best_epoch = values.index(min(finite)) + 1
    best_model = workdir.best_model()
    if best_model != workdir.best_file(best_epoch):
        raise TrainingError(
            f"{workdir.root}: the best model of epoch {best_epoch} is missing; "
            "run again with trainer.resume=false"
        )
    return FitResult(
        record,
        best_epoch,
        best_model,
        resumed_from,
        stopped_early=early_stop_epoch(values, patience) is not None,
    )


def _train(
    model, train_ds, val_ds, fitting: Fitting, prior_values: list[float]
) -> dict[str, list[float]]:
    """One ``model.fit`` from the last committed epoch; returns the whole run's history."""
    train, workdir, monitor = fitting.train, fitting.workdir, fitting.monitor
    guard = StopOnNonFinite()
    history = EpochHistory(workdir, guard)
    prior_best = min((v for v in prior_values if math.isfinite(v)), default=None)
    # The order is the commit protocol of the module docstring; MLflow (in `callbacks`) comes last.
    stack = [
        guard,
        BestCheckpoint(workdir, monitor, prior_best, guard),
        _Backup(workdir, guard),
        history,
    ]
    if train.early_stopping_patience > 0:
        stack.append(
            ResumableEarlyStopping(monitor, train.early_stopping_patience, prior_values, guard)
        )
    stack.extend(fitting.callbacks)

    workdir.root.mkdir(parents=True, exist_ok=True)
    key = fitting.config_key
    try:
        # shuffle=False: the input pipeline shuffles (Keras cannot shuffle a tf.data.Dataset).
        model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=train.epochs,
            callbacks=stack,
            verbose=fitting.verbose,
            shuffle=False,
        )
    except Exception as exc:
        if _is_out_of_memory(exc):
            raise TrainingError(
                f"out of memory with {key}.train.batch_size={train.batch_size}: try a smaller batch, "
                f"e.g. {key}.train.batch_size={max(1, train.batch_size // 2)} "
                f"(or a smaller data.{key}.image_size)"
            ) from exc
        raise
    if guard.where:
        epoch, batch, value = guard.where
        raise TrainingError(
            f"the loss became {value} at epoch {epoch}, batch {batch}; the best model so far is kept in "
            f"{workdir.root} and epoch {epoch} was not saved. Lower {key}.train.learning_rate="
            f"{train.learning_rate} or change {key}.train.optimizer={train.optimizer!r}"
        )
    return history.history


def _is_out_of_memory(exc: BaseException) -> bool:
    name = type(exc).__name__
    text = str(exc)
    return (
        name in {"ResourceExhaustedError", "OutOfMemoryError", "MemoryError"}
        or "RESOURCE_EXHAUSTED" in text
        or "out of memory" in text.lower()
    )


def verbosity() -> str | int:
    """Keras progress bars on a terminal; one line per epoch in logs (CI, DVC queues)."""
    return "auto" if os.isatty(2) else 2
