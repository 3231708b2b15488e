"""Stage train_xception: the mini-Xception cats-vs-dogs classifier (or the book's baselines).

    python -m petvision.train_xception [overrides]    e.g. classification/model=simple_convnet

Trains on the classification split, keeps the best model by validation loss, then evaluates it
on the held-out test split: accuracy, ROC AUC, precision and recall per class, a confusion
matrix and the most confidently misclassified test images.
"""

from __future__ import annotations

import logging

import numpy as np

from petvision.cli import stage
from petvision.config import Config, Task, task_config
from petvision.data import inputs, layout, npy_dataset
from petvision.evaluation import metrics
from petvision.models.classification import build_classifier
from petvision.render import plots
from petvision.training import runtime
from petvision.training.session import TrainingSession

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

    model_name = task.model.name
    with TrainingSession(cfg, task, rt, [train, val, test]) as session:
        trained = session.train(
            lambda: build_classifier(task.model, task.data.image_size),
            train_ds,
            val_ds,
            loss="binary_crossentropy",
            metrics=metrics.classification_metrics(),
        )
        model, result, best = trained.model, trained.result, trained.best

        probabilities = best.predict(test_ds, verbose=0).ravel()
        labels = np.asarray(test.require("labels"))
        report = metrics.binary_report(labels, probabilities, layout.SPECIES_NAMES)
        log.info(
            "%s test accuracy %.3f, ROC AUC %.3f", model_name, report["accuracy"], report["roc_auc"]
        )

        reports = session.reports_dir
        mistakes = most_confident_mistakes(labels, probabilities, NUM_MISCLASSIFIED)
        pictures = [
            plots.learning_curves(
                result.history,
                reports / "learning_curves.png",
                "accuracy",
                f"{model.name}: loss and accuracy per epoch",
            ),
            plots.confusion_matrix(
                np.array(report["confusion_matrix"]),
                layout.SPECIES_NAMES,
                reports / "confusion_matrix.png",
                f"{model.name} on the test split (accuracy {report['accuracy']:.3f})",
            ),
            plots.image_grid(
                [test.images[i] for i in mistakes],
                [f"{test.stems[i]}: P(dog)={probabilities[i]:.2f}" for i in mistakes],
                reports / "misclassified.png",
                title="most confidently misclassified test images",
            ),
        ]
        test_summary = {k: v for k, v in report.items() if k != "confusion_matrix"}
        trust = session.measure_trust(
            best,
            np.asarray(train.images),
            (np.asarray(val.images), np.asarray(val.require("labels"))),
            (np.asarray(test.images), labels),
            f"the test split ({len(test)} images)",
        )
        return session.finish(
            best,
            result,
            [*pictures, trust.picture],
            example=np.asarray(test.images[:2]),
            extra={"test": test_summary, "trust": trust.summary},
            beside_model=[trust.file],
            tags=trust.tags,
        )


if __name__ == "__main__":
    stage.main(run_train_xception, writes=["models", "reports", "state"])
