"""Models saved where the pipeline saves its own, for the tests of what uses trained models
(predict, serving, export, visualize): untrained, since what those do with a model does not depend
on its training; and the trust files a training stage writes beside them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from petvision.config import task_config
from petvision.config.schema import TrustConfig
from petvision.core.tasks import Task

SIZE = 32  # the tiny preset's image size, both tasks


def save_untrained_models(
    cfg, size: int = SIZE, classifier_size: int | None = None
) -> dict[Task, object]:
    """A model of each task's configured architecture at ``size`` (the classifier at
    ``classifier_size`` if given), untrained, saved at the file the task view names
    (``models/classifier.keras``, ``models/segmentation.keras``)."""
    from petvision.models.classification import build_classifier
    from petvision.models.segmentation import build_segmentation_model

    models = {
        Task.classification: build_classifier(cfg.classification.model, classifier_size or size),
        Task.segmentation: build_segmentation_model(cfg.segmentation.model, size),
    }
    for task, model in models.items():
        model_file: Path = task_config(cfg, task).model_file
        model_file.parent.mkdir(parents=True, exist_ok=True)
        model.save(model_file)
    return models


def generated_pets(cfg, count: int) -> list[np.ndarray]:
    """Pets drawn by the default data source, at their own sizes (uint8 RGB)."""
    import dataclasses

    from petvision.data.synthetic import plan
    from petvision.data.synthetic.picture import render

    synthetic = dataclasses.replace(cfg.data.synthetic, num_images=count)
    return [render(synthetic, i, breed, stem).image for i, breed, stem in plan(synthetic)]


def write_trust_files(cfg, pets: list[np.ndarray]) -> None:
    """Beside each saved model, the trust file a training stage would write: provenance of the
    generated data, a temperature and a detector fitted on the first pets (the first 100 its
    bank, the next 40 its threshold), as petvision.evaluation.trust.measure fits them."""
    import keras

    from petvision.data import images
    from petvision.evaluation import trust

    rng = np.random.default_rng(0)
    for task in (Task.classification, Task.segmentation):
        t = task_config(cfg, task)
        model = keras.saving.load_model(t.model_file)
        x = np.stack([images.resize_image(p, SIZE, t.data.interpolation) for p in pets[:140]])
        labels = (
            rng.integers(0, 2, 40)
            if task is Task.classification
            else rng.integers(0, 3, (40, SIZE, SIZE))
        )
        prov = trust.provenance(
            source="synthetic",
            digests={"train": "t", "val": "v"},
            preset="quick",
            image_size=SIZE,
            model="tiny",
        )
        layers = t.architecture.trust_layers or t.architecture.block_outputs
        measured = trust.measure(
            model,
            tuple(layers),
            trust.Inputs(
                train_images=x[:100],
                fit=trust.Labelled(x[100:140], labels),
                held=trust.Labelled(x[100:140], labels),
                unlike_photos=np.zeros((0, SIZE, SIZE, 3), np.uint8),
            ),
            TrustConfig(
                temperature_scaling=True, detector=True, k=3, quantile=0.95, unlike_photos=""
            ),
            prov=prov,
            task=str(task),
        )
        measured.trust.save(trust.trust_file(t.model_file))
