"""Stage train_segmentation: the book's encoder-decoder (or the U-Net option) on the pet trimaps.

    python -m petvision.train_segmentation [overrides]
    python -m petvision.train_segmentation segmentation/model=unet segmentation.train.epochs=5

Outputs (dvc.yaml): the best model by validation loss, a metrics JSON (the best epoch's values),
the per-epoch history for ``dvc plots``, learning curves and validation samples; the same, plus
the model through MLflow's Keras flavor, in an MLflow run of the segmentation experiment.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from petvision.cli import stage
from petvision.config import Config, Task, task_config
from petvision.data import inputs, npy_dataset
from petvision.evaluation import metrics, trust
from petvision.models.segmentation import build_segmentation_model
from petvision.render import plots
from petvision.training import runtime
from petvision.training.session import Trained, TrainingSession

log = logging.getLogger("petvision.train_segmentation")  # not __name__: that is "__main__" under -m

NUM_SAMPLES = 4


def run_train_segmentation(cfg: Config) -> dict:
    rt = runtime.setup(cfg.trainer, cfg.paths.resolve("compile_cache"))
    task = task_config(cfg, Task.segmentation)
    npy = cfg.paths.resolve("npy")
    train = npy_dataset.load_split(npy, task.task, "train")
    val = npy_dataset.load_split(npy, task.task, "val")
    npy_dataset.check_image_size(train, task.data.image_size, f"data.{task.task}.image_size")

    train_ds, val_ds = (
        inputs.split_batches(
            split, "masks", task.train.batch_size, seed=cfg.trainer.seed, shuffle=split is train
        )
        for split in (train, val)
    )

    with TrainingSession(cfg, task, rt, [train, val]) as session:
        trained = session.train(
            lambda: build_segmentation_model(task.model, task.data.image_size),
            train_ds,
            val_ds,
            loss="sparse_categorical_crossentropy",
            metrics=metrics.segmentation_metrics(task.model.num_classes),
        )
        pictures = draw_pictures(trained, val, session.reports_dir)
        # No test split: the validation split's even images fit the temperature and the
        # detector's threshold, its odd ones, which fitted nothing, measure them.
        images, masks = np.asarray(val.images), np.asarray(val.require("masks"))[..., 0]
        trust_step = session.measure_trust(
            trained.best,
            np.asarray(train.images),
            fit=trust.Labelled(images[0::2], masks[0::2]),
            held=trust.Labelled(images[1::2], masks[1::2]),
            held_name=(
                f"the odd half of the validation split ({len(images[1::2])} images, per pixel)"
            ),
        )
        summary = session.finish(
            trained, pictures, example=np.asarray(val.images[:2]), trust_step=trust_step
        )
    return summary


def draw_pictures(trained: Trained, val: npy_dataset.Split, reports: Path) -> list[Path]:
    """The learning curves, and the best model's masks of the first validation images beside
    the true ones."""
    sample = slice(0, min(NUM_SAMPLES, len(val)))
    predicted = np.argmax(trained.best.predict(np.asarray(val.images[sample]), verbose=0), axis=-1)[
        ..., None
    ]
    return [
        plots.learning_curves(
            trained.result.history,
            reports / "learning_curves.png",
            "pet_iou",
            f"{trained.model.name}: loss and pet IoU per epoch",
        ),
        plots.segmentation_samples(
            val.images[sample],
            val.require("masks")[sample],
            predicted,
            reports / "samples.png",
            titles=val.stems[sample],
        ),
    ]


if __name__ == "__main__":
    stage.main(run_train_segmentation, writes=["models", "reports", "state"])
