"""Training shared by both training stages: optimizer, callbacks, resume, and failure handling.

A stage-private work folder (``<paths.state>/<task>/``, never a DVC output) holds what an
interrupted run needs to go on: Keras's ``BackupAndRestore`` state (weights, optimizer, epoch),
the best checkpoint so far, the per-epoch history and the MLflow run id. Running the stage
again resumes from the last completed epoch; a completed run clears the folder.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import keras

from petvision.atomic import atomic_file, write_json
from petvision.config import TrainConfig
from petvision.errors import TrainingError

log = logging.getLogger(__name__)

OPTIMIZERS = {"rmsprop": keras.optimizers.RMSprop, "adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD}


def make_optimizer(train: TrainConfig) -> keras.optimizers.Optimizer:
    return OPTIMIZERS[train.optimizer](learning_rate=train.learning_rate)


@dataclass(frozen=True)
class Workdir:
    """The stage-private state of one task's training."""

    root: Path

    @property
    def backup(self) -> Path:
        return self.root / "backup"

    @property
    def best_model(self) -> Path:
        return self.root / "best.keras"

    @property
    def history_file(self) -> Path:
        return self.root / "history.json"

    @property
    def run_id_file(self) -> Path:
        return self.root / "mlflow_run_id"

    def history(self) -> dict[str, list[float]]:
        if not self.history_file.is_file():
            return {}
        return json.loads(self.history_file.read_text(encoding="utf-8"))

    def run_id(self) -> str | None:
        return self.run_id_file.read_text().strip() if self.run_id_file.is_file() else None

    def save_run_id(self, run_id: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.run_id_file.write_text(run_id)

    def has_progress(self) -> bool:
        return bool(self.history().get("loss"))

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


class EpochHistory(keras.callbacks.Callback):
    """Every epoch's logs, kept on disk so that a resumed run continues the same history."""

    def __init__(self, workdir: Workdir):
        super().__init__()
        self.workdir = workdir
        self.history: dict[str, list[float]] = {}

    def on_train_begin(self, logs=None):
        # BackupAndRestore (earlier in the callback list) has set the epoch to resume from; a kill
        # between our write and its backup can leave us one epoch ahead, so cut back to it.
        start = getattr(self.model, "_initial_epoch", 0) or 0
        self.history = {k: v[:start] for k, v in self.workdir.history().items()}

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        write_json(self.workdir.history_file, self.history)


class BestCheckpoint(keras.callbacks.Callback):
    """Keep the model of the best finite ``monitor`` value; the file is replaced atomically, so a
    kill mid-save or a NaN epoch never damages the best model so far."""

    def __init__(self, path: Path, monitor: str, best: float | None):
        super().__init__()
        self.path, self.monitor = Path(path), monitor
        self.best = math.inf if best is None else best

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not math.isfinite(value) or value >= self.best:
            return
        self.best = float(value)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(self.path) as tmp:
            self.model.save(tmp)
        log.info("epoch %d: %s improved to %.4f, saved %s", epoch + 1, self.monitor, value, self.path)


class StopOnNonFinite(keras.callbacks.Callback):
    """Stop at the first NaN or infinite loss; the stage then fails with a clear error."""

    def __init__(self):
        super().__init__()
        self.where: tuple[int, int, float] | None = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.where = (self._epoch + 1, batch + 1, float(loss))
            self.model.stop_training = True


@dataclass
class FitResult:
    history: dict[str, list[float]]  # every epoch of the run, resumed parts included
    best_epoch: int  # 1-based
    best_model: Path
    resumed_from: int  # completed epochs found on disk at start (0 for a fresh run)
    stopped_early: bool


def fit(
    model: keras.Model,
    train_ds,
    val_ds,
    train: TrainConfig,
    workdir: Workdir,
    *,
    config_key: str,
    callbacks: list[keras.callbacks.Callback] = (),
    monitor: str = "val_loss",
    verbose: str | int = "auto",
) -> FitResult:
    """``model.fit`` with resume, the best checkpoint, early stopping and clear failures.
    ``config_key`` (``segmentation`` or ``classification``) names the settings in error messages."""
    prior = workdir.history()
    resumed_from = len(prior.get("loss", []))
    prior_best = min((v for v in prior.get(monitor, []) if math.isfinite(v)), default=None)
    if resumed_from:
        log.info("resuming %s training after epoch %d of %d", config_key, resumed_from, train.epochs)

    nonfinite = StopOnNonFinite()
    history = EpochHistory(workdir)
    stack = [
        # delete_checkpoint=False: the stage clears the whole work folder once its outputs are written.
        keras.callbacks.BackupAndRestore(str(workdir.backup), double_checkpoint=True, delete_checkpoint=False),
        history,
        BestCheckpoint(workdir.best_model, monitor, prior_best),
        nonfinite,
    ]
    early = None
    if train.early_stopping_patience > 0:
        early = keras.callbacks.EarlyStopping(monitor=monitor, patience=train.early_stopping_patience)
        stack.append(early)
    stack.extend(callbacks)

    try:
        # shuffle=False: the input pipeline shuffles (Keras cannot shuffle a tf.data.Dataset).
        model.fit(train_ds, validation_data=val_ds, epochs=train.epochs, callbacks=stack, verbose=verbose,
                  shuffle=False)
    except Exception as exc:  # noqa: BLE001 - only out-of-memory is translated
        if _is_out_of_memory(exc):
            raise TrainingError(
                f"out of memory with {config_key}.train.batch_size={train.batch_size}: try a smaller batch, "
                f"e.g. {config_key}.train.batch_size={max(1, train.batch_size // 2)} "
                f"(or a smaller data.{config_key}.image_size)"
            ) from exc
        raise
    if nonfinite.where:
        epoch, batch, value = nonfinite.where
        raise TrainingError(
            f"the loss became {value} at epoch {epoch}, batch {batch}; the best checkpoint so far is kept "
            f"({workdir.best_model}). Lower {config_key}.train.learning_rate={train.learning_rate} "
            f"or change {config_key}.train.optimizer={train.optimizer!r}"
        )
    if not workdir.best_model.is_file():
        raise TrainingError(f"no epoch produced a finite {monitor}; nothing to keep")

    record = history.history
    values = record.get(monitor, [])
    finite = [(v, i) for i, v in enumerate(values) if math.isfinite(v)]
    best_epoch = min(finite)[1] + 1
    stopped_early = bool(early and early.stopped_epoch)
    return FitResult(record, best_epoch, workdir.best_model, resumed_from, stopped_early)


def _is_out_of_memory(exc: BaseException) -> bool:
    name = type(exc).__name__
    text = str(exc)
    return name in {"ResourceExhaustedError", "OutOfMemoryError", "MemoryError"} or "RESOURCE_EXHAUSTED" in text \
        or "out of memory" in text.lower()


def verbosity() -> str | int:
    """Keras progress bars on a terminal; one line per epoch in logs (CI, DVC queues)."""
    return "auto" if os.isatty(2) else 2
