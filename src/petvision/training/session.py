"""What both training stages do around their model: the MLflow run, resume, and the outputs.

A :class:`TrainingSession` opens (or, after an interruption, reopens) the task's MLflow run;
:meth:`TrainingSession.train` is the block both stages share: the model built and compiled in the
distribution strategy's scope, trained through :func:`petvision.training.loop.fit` with per-epoch
logging, and its best epoch loaded back. At the end :meth:`TrainingSession.finish` writes the
stage's DVC outputs — the best model, ``metrics.json``, ``history.csv`` and the pictures —
and logs the same to MLflow, model included.

The outputs are replaced together: the stage draws its pictures in a staging folder
(:attr:`TrainingSession.reports_dir`), :meth:`TrainingSession.finish` writes the rest next to
them and only then renames them all into place, so a failure at any point before leaves every
previous output as it was. Saved training state is resumed only if the same settings and data
made it (a fingerprint of the stage's params and the data's digests); otherwise training
starts afresh.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import keras
import numpy as np

from petvision import search, tracking
from petvision.config import Config, TaskConfig
from petvision.core import atomic, paths
from petvision.core.errors import TrainingError
from petvision.data import digest, npy_dataset
from petvision.evaluation import trust
from petvision.models import xla
from petvision.tracking import registry
from petvision.training import faults, loop, schedules, workdir
from petvision.training.runtime import Runtime
from petvision.util.hashing import json_digest
from petvision.util.nested import flatten, numbers

log = logging.getLogger(__name__)

SPLIT_CONTEXT = {"train": "training", "val": "validation", "test": "testing"}


def staging_dir(task: TaskConfig) -> Path:
    """Where a run's report files are written before they replace the old ones together (beside
    the final folder, so the renames stay on one file system; not a DVC output)."""
    return task.reports.parent / f".{task.task}.partial"


def history_csv(history: dict[str, list[float]]) -> str:
    """One row per epoch (1-based), one column per logged value: the file ``dvc plots`` draws."""
    keys = sorted(history)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["epoch", *keys])
    for i in range(len(history.get("loss", []))):
        writer.writerow(
            [i + 1, *(f"{history[k][i]:.6g}" if i < len(history[k]) else "" for k in keys)]
        )
    return out.getvalue()


def best_epoch_summary(history: dict[str, list[float]], best_epoch: int) -> dict:
    """The values of the best epoch, split into train and val."""
    at = best_epoch - 1
    train = {
        k: history[k][at]
        for k in sorted(history)
        if not k.startswith("val_") and k != "learning_rate"
    }
    val = {k[4:]: history[k][at] for k in sorted(history) if k.startswith("val_")}
    return {"train": train, "val": val}


@dataclass
class Trained:
    """What :meth:`TrainingSession.train` gives back."""

    model: keras.Model  # as built and compiled (its name titles the pictures)
    result: loop.FitResult
    best: keras.Model  # the best epoch's model, loaded back from the work folder


def read_unlike_photos(folder: Path, size: int, interpolation: str) -> tuple[list[str], np.ndarray]:
    """The photos of ``folder`` (``trust.unlike_photos``) resized as the training images were;
    none if the folder is missing."""
    from petvision.data import images

    folder = Path(folder)
    empty = np.zeros((0, size, size, 3), np.uint8)
    if not folder.is_dir():
        log.warning(
            "trust.unlike_photos=%s: no such folder; the detector is measured without real photos",
            folder,
        )
        return [], empty
    names, photos = [], []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in (
            ".png",
            ".jpg",
            ".jpeg",
            ".gif",
        ):
            continue
        rgb, _ = images.load_rgb(path)
        names.append(path.name)
        photos.append(images.resize_image(rgb, size, interpolation))
    return names, (np.stack(photos) if photos else empty)


class Reports(NamedTuple):
    """The report files of a run, in the staging folder or, once published, in reports/<task>/."""

    metrics: Path  # metrics.json
    mlflow_run: Path  # mlflow_run.json
    history: Path  # history.csv
    pictures: tuple[Path, ...]

    def files(self) -> list[Path]:
        return [self.metrics, self.mlflow_run, self.history, *self.pictures]

    def moved_to(self, folder: Path) -> Reports:
        return Reports(
            folder / self.metrics.name,
            folder / self.mlflow_run.name,
            folder / self.history.name,
            tuple(folder / p.name for p in self.pictures),
        )


class Published(NamedTuple):
    """Where :meth:`TrainingSession.finish` put the outputs."""

    model: Path
    companions: tuple[Path, ...]  # the files beside the model (its trust file)
    reports: Reports


@dataclass(frozen=True)
class TrustStep:
    """What :meth:`TrainingSession.measure_trust` hands to :meth:`TrainingSession.finish`."""

    summary: dict  # metrics.json's "trust"
    picture: Path  # the reliability diagram, staged
    file: Path  # the trust file, staged: it goes beside the model
    tags: dict[str, str]  # trained_on.*, for the run and the registered version


class TrainingSession:
    def __init__(
        self,
        cfg: Config,
        task: TaskConfig,
        rt: Runtime,
        splits: Sequence[npy_dataset.Split],
    ):
        """One run of ``task``'s training stage on ``splits`` (the train split first).
        ``cfg`` gives what is not the task's: trainer, paths, tracking, the preset."""
        self.cfg, self.task, self.rt = cfg, task, rt
        self.splits = splits
        self.workdir = workdir.Workdir(cfg.paths.resolve("state") / str(task.task))
        if not cfg.trainer.resume:
            self.workdir.clear()
        # Not reports/<task>/ itself: finish() moves the files there once all of them are written.
        self.reports_dir = staging_dir(task)
        self.run: tracking.Run  # opened by __enter__
        self.digests: dict[str, str] = {}

    # ------------------------------------------------------------------ run
    def __enter__(self) -> TrainingSession:
        digests = self.digests = self._data_digests()
        fingerprint = self._fingerprint(digests)
        # Clears state that other settings or data made, and repairs what a kill left (workdir.Workdir).
        self.workdir.adopt(fingerprint)
        # The run of the saved state, progress or not: a run killed in its first epoch is reused
        # rather than left behind as a second, empty run.
        model_name = self.task.model.name
        self.run = tracking.Run(
            self.cfg,
            self.task.stage,
            task=self.task,
            run_name=f"{model_name} {self.cfg.preset} {datetime.now():%m-%d %H:%M}",
            resume_run_id=self.workdir.run_id(),
            tags={"model": model_name, **self.rt.describe()},
        )
        self.run.__enter__()
        # Only now that the run has started (tracking can fail at start): nothing is written before.
        self.workdir.save_fingerprint(fingerprint)
        shutil.rmtree(self.reports_dir, ignore_errors=True)  # what a killed run left half-staged
        for final in (self.task.model_file, trust.trust_file(self.task.model_file)):
            atomic.remove_stale_tmp(final)  # a SIGKILL leftover
        self.workdir.save_run_id(self.run.run_id)
        self._log_inputs(digests)
        if self.run.resumed:
            self._log_missed_epochs()
        return self

    def __exit__(self, *exc_info):
        shutil.rmtree(self.reports_dir, ignore_errors=True)
        return self.run.__exit__(*exc_info)

    def _data_digests(self) -> dict[str, str]:
        npy = self.cfg.paths.resolve("npy")
        return {
            split.name: digest.data_digest(npy_dataset.split_files(npy, split))
            for split in self.splits
        }

    def _fingerprint(self, digests: dict[str, str]) -> str:
        """What the saved training state depends on: the stage's params in dvc.yaml and the data.
        Not trainer.resume, nor trainer.steps_per_execution (how many of the same steps one call
        runs), nor trainer.compile_cache and trainer.xla_flags (how the same steps are compiled)."""
        unrelated = {"resume", "steps_per_execution", "compile_cache", "xla_flags"}
        trainer = {
            k: v for k, v in dataclasses.asdict(self.cfg.trainer).items() if k not in unrelated
        }
        t = self.task
        made_of = {
            "image_size": t.data.image_size,
            # params.yaml's <task> section whole (saved state from earlier versions still matches)
            t.task: {"model": dataclasses.asdict(t.model), "train": dataclasses.asdict(t.train)},
            "trainer": trainer,
            "data": digests,
        }
        return json_digest(made_of)

    def _log_inputs(self, digests: dict[str, str]) -> None:
        npy = self.cfg.paths.resolve("npy")
        for split in self.splits:
            self.run.log_input_dataset(
                name=f"{self.task.task}-{split.name}",
                digest=digests[split.name],
                source=str(npy / self.task.task),
                context=SPLIT_CONTEXT[split.name],
                shape_info={"count": len(split), "image_shape": list(split.images.shape[1:])},
            )
        self.run.set_tags({f"data_digest.{name}": d for name, d in digests.items()})

    def _log_missed_epochs(self) -> None:
        """MLflow logs an epoch after it is committed (training module docstring), so a kill in
        between, or a tracking server down before the interruption, leaves steps out of the
        resumed run: log them from the saved history."""
        history = self.workdir.history()
        logged = self.run.logged_steps("loss")
        if logged is None:  # cannot tell: better a gap than a step logged twice
            return
        for epoch in range(len(history.get("loss", []))):
            if epoch not in logged:
                self.run.log_metrics(
                    {k: v[epoch] for k, v in history.items() if epoch < len(v)}, step=epoch
                )

    # ------------------------------------------------------------------ training
    def train(
        self, build: Callable[[], keras.Model], train_ds, val_ds, *, loss: str, metrics: list
    ) -> Trained:
        """What both training stages do with their model: ``build()`` it and compile it in the
        distribution strategy's scope (:func:`petvision.training.loop.compile_model`), train it
        on the batches with resume and per-epoch logging, and load the best epoch back."""
        train = self.task.train
        steps = schedules.steps_per_epoch(len(self.splits[0]), train.batch_size)
        with self.rt.strategy.scope():
            model = loop.compile_model(
                build(),
                self.rt,
                train,
                steps,
                loss=loss,
                metrics=metrics,
                config_key=self.task.task,
            )
        result = self.fit(model, train_ds, val_ds)
        return Trained(model, result, self.load_best())

    def fit(self, model: keras.Model, train_ds, val_ds) -> loop.FitResult:
        self.run.log_params({"model.parameters": model.count_params()})
        fitting = loop.Fitting(
            self.task.train,
            self.workdir,
            config_key=self.task.task,
            callbacks=[self.run.keras_callback(), *search.keras_callbacks()],
            verbose=loop.verbosity(),
        )
        return loop.fit(model, train_ds, val_ds, fitting)

    def load_best(self) -> keras.Model:
        best = self.workdir.best_model()
        if best is None:
            raise TrainingError(f"{self.workdir.root}: no best model saved; train first")
        with xla.loading():
            return xla.allow(keras.saving.load_model(best, safe_mode=True))

    # ------------------------------------------------------------------ trust
    def measure_trust(
        self,
        best: keras.Model,
        train_images: np.ndarray,
        *,
        fit: trust.Labelled,
        held: trust.Labelled,
        held_name: str,
    ) -> TrustStep:
        """The kept model's trust file and measures (petvision.evaluation.trust): fitted on the
        training images and ``fit`` (validation images and labels), measured on ``held``
        (``held_name`` says which images, for the log and metrics.json)."""
        from petvision.models import loading
        from petvision.render import plots

        prov = trust.provenance(
            source=self.cfg.data.source,
            digests=self.digests,
            preset=self.cfg.preset,
            image_size=self.task.data.image_size,
            model=self.task.model.name,
        )
        layers = self.task.architecture.trust_layers or self.task.architecture.block_outputs
        _, photos = read_unlike_photos(
            paths.resolve(self.cfg.trust.unlike_photos),
            self.task.data.image_size,
            self.task.data.interpolation,
        )
        measured = trust.measure(
            loading.float32_copy(best),
            tuple(layers),
            trust.Inputs(train_images, fit, held, photos),
            self.cfg.trust,
            prov=prov,
            task=str(self.task.task),
        )
        summary = {"held_out": held_name, **measured.summary, "trained_on": prov}
        file = measured.trust.save(self.reports_dir / trust.trust_file(self.task.model_file).name)
        before, after = measured.reliability
        picture = plots.reliability_diagram(
            {"T = 1": before, f"T = {measured.trust.temperature:.3f}": after},
            self.reports_dir / "reliability.png",
            f"{self.task.model.name}: calibration on {held_name}",
        )
        self._log_trust(measured.summary, held_name)
        return TrustStep(summary, picture, file, trust.tags(prov))

    def _log_trust(self, measured: dict, held_name: str) -> None:
        cal = measured["calibration"]
        detector = measured.get("detector", {})
        log.info(
            "%s trust on %s: ECE %.4f (T = 1) -> %.4f (T = %.3f); unlike-the-training-data "
            "detector: false alarms %s, AUROC against real photos %s",
            self.task.task,
            held_name,
            cal["test_ece_before"],
            cal["test_ece"],
            cal["temperature"],
            f"{detector['false_alarm_rate']:.3f}" if detector else "off",
            f"{detector['real_photos']['auroc']:.3f}" if "real_photos" in detector else "n/a",
        )

    # ------------------------------------------------------------------ outputs
    def finish(
        self,
        trained: Trained,
        pictures: Sequence[Path],
        *,
        example: np.ndarray,
        trust_step: TrustStep,
        extra: dict | None = None,
    ) -> dict:
        """Write the DVC outputs, log them to MLflow, clear the work folder; return the metrics.
        ``pictures`` (the trust step's reliability diagram after them) must lie in
        :attr:`reports_dir` (the staging folder); so must the trust file, which goes into the
        models folder next to the model and into its logged MLflow model. ``extra`` goes into
        metrics.json before the trust measures; the trust tags go on the run and on the
        registered version."""
        result = trained.result
        summary = {
            "best_epoch": result.best_epoch,
            "epochs_run": len(result.history.get("loss", [])),
            "stopped_early": result.stopped_early,
            **best_epoch_summary(result.history, result.best_epoch),
            **(extra or {}),
            "trust": trust_step.summary,
        }
        staged = self._stage_reports(summary, result, [*pictures, trust_step.picture])
        published = self._publish(staged, result.best_model, [trust_step.file])
        self._log_outputs(trained, summary, published, example, trust_step.tags)
        if self.run.lost:
            summary["tracking_lost"] = list(self.run.lost)
            log.warning(
                "MLflow lost %d log call(s); the DVC outputs are complete: %s",
                len(self.run.lost),
                "; ".join(self.run.lost),
            )
        self.workdir.clear()
        log.info(
            "%s: best epoch %d of %d, model %s",
            self.task.task,
            result.best_epoch,
            summary["epochs_run"],
            published.model,
        )
        return summary

    def _stage_reports(
        self, summary: dict, result: loop.FitResult, pictures: Sequence[Path]
    ) -> Reports:
        """metrics.json, mlflow_run.json and history.csv written beside the pictures in the
        staging folder."""
        staging = self.reports_dir
        atomic.write_json(staging / "metrics.json", summary)
        # Lets the visualize stage link its pictures to this run in the MLflow UI.
        atomic.write_json(
            staging / "mlflow_run.json",
            {
                "run_id": self.run.run_id,
                "experiment_id": self.run.experiment_id,
                "tracking_uri": self.run.uri,
            },
        )
        atomic.write_text(staging / "history.csv", history_csv(result.history))
        return Reports(
            metrics=staging / "metrics.json",
            mlflow_run=staging / "mlflow_run.json",
            history=staging / "history.csv",
            pictures=tuple(Path(p) for p in pictures),
        )

    def _publish(
        self, staged: Reports, best_model: Path, beside_model: Sequence[Path]
    ) -> Published:
        """Every output into place: the model (from the work folder) and the files that go
        beside it copied next to their final names, the reports renamed into the task's report
        folder, and the model's renames last."""
        final_model, final_dir = self.task.model_file, self.task.reports
        companions = tuple(final_model.parent / Path(p).name for p in beside_model)
        with contextlib.ExitStack() as commits:
            # Each file beside the model is copied next to its final name first: the models folder
            # may be on another filesystem than the staging folder, where a rename cannot go.
            # The stack renames on leaving, last entered first: the companions, then the model.
            tmp = commits.enter_context(atomic.atomic_file(final_model))
            shutil.copyfile(best_model, tmp)
            for source, target in zip(beside_model, companions):
                shutil.copyfile(source, commits.enter_context(atomic.atomic_file(target)))
            # Every output is complete: from here on only renames, the model's last (on leaving).
            final_dir.mkdir(parents=True, exist_ok=True)
            for path in staged.files():
                os.replace(path, final_dir / path.name)
                faults.point("mid_outputs")
        return Published(final_model, companions, staged.moved_to(final_dir))

    def _log_outputs(
        self,
        trained: Trained,
        summary: dict,
        published: Published,
        example: np.ndarray,
        tags: dict[str, str],
    ) -> None:
        """The run's best-epoch and trust metrics, tags, report artifacts and (tracking.log_model)
        the model, logged and registered."""
        best_values = {split: summary.get(split, {}) for split in ("train", "val", "test")}
        flat = numbers(flatten(best_values, "best."))
        # The trust measures (calibration, the unlike-the-training-data detector) of the kept model.
        flat.update(numbers(flatten(summary.get("trust", {}), "trust.")))
        best_epoch = trained.result.best_epoch
        self.run.log_metrics({"best_epoch": best_epoch, **flat})
        self.run.set_tags(dict(tags))
        reports = published.reports
        for path in [reports.metrics, reports.history, *reports.pictures]:
            self.run.log_artifact(path, artifact_path="reports")
        if self.cfg.tracking.log_model:
            model_uri = self.run.log_keras_model(
                trained.best, example, name="model", extra_files=list(published.companions)
            )
            registry.register_trained_model(
                self.cfg.tracking, self.task, self.run, model_uri, summary, self.digests, tags
            )
        self.run.set_tags({"best_epoch": str(best_epoch), "dvc.output.model": str(published.model)})
