"""Stage train_xception: the mini-Xception cats-vs-dogs classifier (or the book's baselines).

    python -m petvision.train_xception [overrides]    e.g. classification/model=simple_convnet

Trains on the classification split, keeps the best model by validation loss, then evaluates it
on the held-out test split: accuracy, ROC AUC, precision and recall per class, a confusion
matrix and the most confidently misclassified test images.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

import keras
import numpy as np

from petvision.cli import stage
from petvision.config import Config, Task, task_config
from petvision.data import inputs, layout, npy_dataset
from petvision.evaluation import metrics, trust
from petvision.models.classification import build_classifier
from petvision.render import plots
from petvision.training import runtime
from petvision.training.session import Trained, TrainingSession

log = logging.getLogger("petvision.train_xception")  # not __name__: that is "__main__" under -m

NUM_MISCLASSIFIED = 8


def most_confident_mistakes(
    labels: np.ndarray, probabilities: np.ndarray, count: int
) -> np.ndarray:
    """Indices of wrong predictions, the most confident first."""
    predicted = (probabilities >= 0.5).astype(labels.dtype)
    wrong = np.flatnonzero(predicted != labels)
    confidence = np.abs(probabilities[wrong] - 0.5)
    return wrong[np.argsort(-confidence, kind="stable")][:count]


class TestResult(NamedTuple):
    labels: np.ndarray
    probabilities: np.ndarray  # P(dog) of each test image
    report: dict  # metrics.binary_report


def run_train_xception(cfg: Config) -> dict:
    rt = runtime.setup(cfg.trainer, cfg.paths.resolve("compile_cache"))
    task = task_config(cfg, Task.classification)
    npy = cfg.paths.resolve("npy")
    train, val, test = (npy_dataset.load_split(npy, task.task, s) for s in ("train", "val", "test"))
    npy_dataset.check_image_size(train, task.data.image_size, f"data.{task.task}.image_size")

    train_ds, val_ds, test_ds = (
        inputs.split_batches(
            split, "labels", task.train.batch_size, seed=cfg.trainer.seed, shuffle=split is train
        )
        for split in (train, val, test)
    )

    with TrainingSession(cfg, task, rt, [train, val, test]) as session:
        trained = session.train(
            lambda: build_classifier(task.model, task.data.image_size),
            train_ds,
            val_ds,
            loss="binary_crossentropy",
            metrics=metrics.classification_metrics(),
        )
        tested = evaluate(trained.best, test_ds, test, task.model.name)
        pictures = draw_pictures(trained, test, tested, session.reports_dir)
        trust_step = session.measure_trust(
            trained.best,
            np.asarray(train.images),
            fit=trust.Labelled(np.asarray(val.images), np.asarray(val.require("labels"))),
            held=trust.Labelled(np.asarray(test.images), tested.labels),
            held_name=f"the test split ({len(test)} images)",
        )
        test_summary = {k: v for k, v in tested.report.items() if k != "confusion_matrix"}
        return session.finish(
            trained,
            pictures,
            example=np.asarray(test.images[:2]),
            trust_step=trust_step,
            extra={"test": test_summary},
        )


def evaluate(best: keras.Model, test_ds, test: npy_dataset.Split, model_name: str) -> TestResult:
    """The kept model on the held-out test split."""
    probabilities = best.predict(test_ds, verbose=0).ravel()
    labels = np.asarray(test.require("labels"))
    report = metrics.binary_report(labels, probabilities, layout.SPECIES_NAMES)
    log.info(
        "%s test accuracy %.3f, ROC AUC %.3f", model_name, report["accuracy"], report["roc_auc"]
    )
    return TestResult(labels, probabilities, report)


def draw_pictures(
    trained: Trained, test: npy_dataset.Split, tested: TestResult, reports: Path
) -> list[Path]:
    """The learning curves, the confusion matrix on the test split and its most confidently
    misclassified images."""
    name, report = trained.model.name, tested.report
    mistakes = most_confident_mistakes(tested.labels, tested.probabilities, NUM_MISCLASSIFIED)
    return [
        plots.learning_curves(
            trained.result.history,
            reports / "learning_curves.png",
            "accuracy",
            f"{name}: loss and accuracy per epoch",
        ),
        plots.confusion_matrix(
            np.array(report["confusion_matrix"]),
            layout.SPECIES_NAMES,
            reports / "confusion_matrix.png",
            f"{name} on the test split (accuracy {report['accuracy']:.3f})",
        ),
        plots.image_grid(
            [test.images[i] for i in mistakes],
            [f"{test.stems[i]}: P(dog)={tested.probabilities[i]:.2f}" for i in mistakes],
            reports / "misclassified.png",
            title="most confidently misclassified test images",
        ),
    ]


if __name__ == "__main__":
    stage.main(run_train_xception, writes=["models", "reports", "state"])
