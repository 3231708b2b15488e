"""What both training stages do around their model: the MLflow run, resume, and the outputs.

A :class:`TrainingSession` opens (or, after an interruption, reopens) the task's MLflow run,
trains through :func:`petvision.training.fit` with per-epoch logging, and at the end writes the
stage's DVC outputs — the best model, ``metrics.json``, ``history.csv`` and the pictures —
and logs the same to MLflow, model included. Only the chief of a multi-worker job writes
outputs and logs; the other workers train and keep their state in a private folder.
"""

from __future__ import annotations

import csv
import io
import logging
import shutil
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import keras
import numpy as np

from petvision import atomic, npy_dataset, tracking, training
from petvision.config import Config, TrainConfig
from petvision.runtime import Runtime

log = logging.getLogger(__name__)

MODEL_FILES = {"segmentation": "segmentation.keras", "classification": "classifier.keras"}
SPLIT_CONTEXT = {"train": "training", "val": "validation", "test": "testing"}


def model_path(cfg: Config, task: str) -> Path:
    return cfg.paths.resolve("models") / MODEL_FILES[task]


def reports_dir(cfg: Config, task: str) -> Path:
    return cfg.paths.resolve("reports") / task


def history_csv(history: dict[str, list[float]]) -> str:
    """One row per epoch (1-based), one column per logged value: the file ``dvc plots`` draws."""
    keys = sorted(history)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["epoch", *keys])
    for i in range(len(history.get("loss", []))):
        writer.writerow([i + 1, *(f"{history[k][i]:.6g}" if i < len(history[k]) else "" for k in keys)])
    return out.getvalue()


def best_epoch_summary(history: dict[str, list[float]], best_epoch: int) -> dict:
    """The values of the best epoch, split into train and val."""
    at = best_epoch - 1
    train = {k: history[k][at] for k in sorted(history) if not k.startswith("val_") and k != "learning_rate"}
    val = {k[4:]: history[k][at] for k in sorted(history) if k.startswith("val_")}
    return {"train": train, "val": val}


class TrainingSession:
    def __init__(self, cfg: Config, task: str, stage_name: str, model_name: str, rt: Runtime,
                 splits: Sequence[npy_dataset.Split]):
        self.cfg, self.task, self.stage_name, self.model_name, self.rt = cfg, task, stage_name, model_name, rt
        self.splits = splits
        state = cfg.paths.resolve("state") / task
        self.workdir = training.Workdir(state if rt.is_chief else state / f"worker-{rt.worker_index}")
        if not cfg.trainer.resume:
            self.workdir.clear()
        self.reports_dir = reports_dir(cfg, task)
        self.run: tracking.Run | tracking.NoRun = tracking.NoRun()

    # ------------------------------------------------------------------ run
    def __enter__(self) -> "TrainingSession":
        if self.rt.is_chief:
            resume_id = self.workdir.run_id() if self.workdir.has_progress() else None
            name = f"{self.model_name} {self.cfg.preset} {datetime.now():%m-%d %H:%M}"
            self.run = tracking.Run(self.cfg, self.task, self.stage_name, run_name=name,
                                    resume_run_id=resume_id, tags={"model": self.model_name, **self.rt.describe()})
        self.run.__enter__()
        if self.rt.is_chief:
            self.workdir.save_run_id(self.run.run_id)
            self._log_inputs()
        return self

    def __exit__(self, *exc_info):
        return self.run.__exit__(*exc_info)

    def _log_inputs(self) -> None:
        npy = self.cfg.paths.resolve("npy")
        digests = {}
        for split in self.splits:
            files = npy_dataset.split_files(npy, split)
            digest = tracking.data_digest(files)
            digests[split.name] = digest
            self.run.log_input_dataset(
                name=f"{self.task}-{split.name}", digest=digest, source=str(npy / self.task),
                context=SPLIT_CONTEXT[split.name],
                shape_info={"count": len(split), "image_shape": list(split.images.shape[1:])},
            )
        self.run.set_tags({f"data_digest.{name}": d for name, d in digests.items()})

    # ------------------------------------------------------------------ training
    def fit(self, model: keras.Model, train_ds, val_ds, train_cfg: TrainConfig) -> training.FitResult:
        self.run.log_params({"model.parameters": model.count_params()})
        return training.fit(model, train_ds, val_ds, train_cfg, self.workdir, config_key=self.task,
                            callbacks=[self.run.keras_callback()], verbose=training.verbosity())

    def load_best(self) -> keras.Model:
        return keras.saving.load_model(self.workdir.best_model, safe_mode=True)

    # ------------------------------------------------------------------ outputs
    def finish(self, best: keras.Model, result: training.FitResult, pictures: Sequence[Path],
               example: np.ndarray, extra: dict | None = None) -> dict:
        """Write the DVC outputs, log them to MLflow, clear the work folder; return the metrics."""
        summary = {
            "best_epoch": result.best_epoch,
            "epochs_run": len(result.history.get("loss", [])),
            "stopped_early": result.stopped_early,
            **best_epoch_summary(result.history, result.best_epoch),
            **(extra or {}),
        }
        if not self.rt.is_chief:
            self.workdir.clear()
            return summary

        metrics_file = self.reports_dir / "metrics.json"
        history_file = self.reports_dir / "history.csv"
        atomic.write_json(metrics_file, summary)
        # Lets the visualize stage link its pictures to this run in the MLflow UI.
        atomic.write_json(self.reports_dir / "mlflow_run.json",
                          {"run_id": self.run.run_id, "experiment_id": self.run.experiment_id,
                           "tracking_uri": self.run.uri})
        atomic.write_text(history_file, history_csv(result.history))
        final_model = model_path(self.cfg, self.task)
        final_model.parent.mkdir(parents=True, exist_ok=True)
        with atomic.atomic_file(final_model) as tmp:
            shutil.copyfile(result.best_model, tmp)

        flat = {f"best.{split}.{k}": v for split in ("train", "val", "test") for k, v in summary.get(split, {}).items()
                if isinstance(v, (int, float))}
        self.run.log_metrics({"best_epoch": result.best_epoch, **flat})
        for path in [metrics_file, history_file, *pictures]:
            self.run.log_artifact(path, artifact_path="reports")
        if self.cfg.tracking.log_model:
            self.run.log_keras_model(best, example, name="model")
        self.run.set_tags({"best_epoch": str(result.best_epoch), "dvc.output.model": str(final_model)})
        if self.run.lost:
            summary["tracking_lost"] = list(self.run.lost)
            log.warning("MLflow lost %d log call(s); the DVC outputs are complete: %s",
                        len(self.run.lost), "; ".join(self.run.lost))
        self.workdir.clear()
        log.info("%s: best epoch %d of %d, model %s", self.task, result.best_epoch, summary["epochs_run"], final_model)
        return summary
