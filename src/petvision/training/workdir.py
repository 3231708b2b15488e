"""The stage-private work folder of one task's training, and how it is brought back in step
with ``history.json`` after a kill (the commit protocol is described in
:mod:`petvision.training.loop`)."""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import keras

from petvision.core.atomic import write_json, write_text
from petvision.core.errors import TrainingError

log = logging.getLogger(__name__)


_BEST_FILE = re.compile(r"best-(\d+)\.keras")


@dataclass(frozen=True)
class Workdir:
    """The stage-private state of one task's training."""

    root: Path

    @property
    def backup(self) -> Path:
        return self.root / "backup"

    @property
    def history_file(self) -> Path:
        return self.root / "history.json"

    @property
    def run_id_file(self) -> Path:
        return self.root / "mlflow_run_id"

    @property
    def fingerprint_file(self) -> Path:
        return self.root / "fingerprint"

    @property
    def model_signature_file(self) -> Path:
        return self.root / "model_signature.json"

    def best_file(self, epoch: int) -> Path:
        """Where the model of ``epoch`` (1-based) is kept if it is the best so far."""
        return self.root / f"best-{epoch:04d}.keras"

    def best_files(self) -> dict[int, Path]:
        found = {}
        for path in self.root.glob("best-*.keras"):
            match = _BEST_FILE.fullmatch(path.name)
            if match:
                found[int(match.group(1))] = path
        return found

    def best_model(self) -> Path | None:
        """The best model of the committed epochs: a best file is only written on improvement,
        so it is the newest one of a committed epoch."""
        done = self.epochs_done()
        committed = [epoch for epoch in self.best_files() if epoch <= done]
        return self.best_file(max(committed)) if committed else None

    def history(self) -> dict[str, list[float]]:
        if not self.history_file.is_file():
            return {}
        return json.loads(self.history_file.read_text(encoding="utf-8"))

    def epochs_done(self) -> int:
        return len(self.history().get("loss", []))

    def has_progress(self) -> bool:
        return self.epochs_done() > 0

    def run_id(self) -> str | None:
        return self.run_id_file.read_text().strip() if self.run_id_file.is_file() else None

    def save_run_id(self, run_id: str) -> None:
        write_text(self.run_id_file, run_id)

    def fingerprint(self) -> str | None:
        return (
            self.fingerprint_file.read_text().strip() if self.fingerprint_file.is_file() else None
        )

    def save_fingerprint(self, fingerprint: str) -> None:
        write_text(self.fingerprint_file, fingerprint)

    def adopt(self, fingerprint: str) -> int:
        """Keep the saved state only if the same settings and data made it (``fingerprint``),
        else clear it: resuming someone else's half-trained model would give an output that
        matches neither configuration. Returns the committed epochs kept (see :meth:`recover`).
        Writes nothing: the caller saves the fingerprint once the run has really started."""
        saved = self.fingerprint()
        # Judge by its own files, not by the folder: an empty or foreign folder holds no state.
        own_state = saved is not None or self.history_file.exists() or self.backup.exists()
        if own_state and saved != fingerprint:
            if self.has_progress():
                log.warning(
                    "%s holds %d epoch(s) of an interrupted run with other settings or data; "
                    "starting afresh",
                    self.root,
                    self.epochs_done(),
                )
            self.clear()
        return self.recover()

    def recover(self) -> int:
        """Bring the backup and the best models in step with ``history.json`` after a kill;
        return the number of committed epochs to resume after (0: start afresh)."""
        if not self.root.exists():
            return 0
        done = self.epochs_done()
        if done and not _align_backup(self.backup, done):
            log.warning(
                "%s: no training backup holds the %d epoch(s) in %s; starting afresh",
                self.backup,
                done,
                self.history_file.name,
            )
            self.clear()
            return 0
        if not done:
            # Nothing committed: whatever a first epoch cut short left behind is of no use.
            shutil.rmtree(self.backup, ignore_errors=True)
        self.prune_best()
        return done

    def prune_best(self) -> None:
        keep = self.best_model()
        for path in self.best_files().values():
            if path != keep:
                path.unlink(missing_ok=True)

    def check_model(self, model: keras.Model) -> None:
        """The model must be the one the saved state was made with (same layers and weight
        shapes): a code change between a kill and the rerun is not covered by the fingerprint."""
        signature = _model_signature(model)
        if self.has_progress() and self.model_signature_file.is_file():
            saved = json.loads(self.model_signature_file.read_text(encoding="utf-8"))
            if saved != signature:
                raise TrainingError(
                    f"{self.root} holds an interrupted run of a different model (the code changed since?); "
                    "run again with trainer.resume=false to start afresh, or delete that folder"
                )
        write_json(self.model_signature_file, signature)

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _backup_epoch(metadata: Path) -> int | None:
    """The epoch count in a BackupAndRestore metadata file; None if missing or cut off."""
    try:
        return int(json.loads(metadata.read_text(encoding="utf-8"))["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _align_backup(folder: Path, epochs: int) -> bool:
    """Make Keras's backup in ``folder`` hold the state after ``epochs`` epochs; False if
    neither of its two copies does.

    Saving epoch n+1, Keras copies the latest pair (weights, then epoch count) over the previous
    pair, then writes the new weights, then the new epoch count. An epoch count is therefore only
    ever written after its weights are complete, and if the previous pair already says ``epochs``
    a save of a later epoch had begun, so the latest weights may be new or half-written."""
    names = keras.callbacks.BackupAndRestore(str(folder), double_checkpoint=True)
    latest = (Path(names._weights_path), Path(names._training_metadata_path))
    previous = (Path(names._prev_weights_path), Path(names._prev_training_metadata_path))
    if _backup_epoch(previous[1]) == epochs and previous[0].is_file():
        for source, target in zip(previous, latest):
            shutil.copyfile(source, target)
        return True
    return _backup_epoch(latest[1]) == epochs and latest[0].is_file()


def _model_signature(model: keras.Model) -> list:
    """Layer classes and weight shapes, independent of Keras's generated layer names."""
    layers = [
        [type(layer).__name__, [list(w.shape) for w in layer.weights]] for layer in model.layers
    ]
    return [type(model.optimizer).__name__ if model.optimizer else None, layers]
