"""The visualize stage's work between its inputs and its outputs: check that the arrays and the
configuration fit the models, then draw and measure everything into one folder.

:func:`everything` runs the parts of :mod:`.sections` and :mod:`.evidence` in order and returns
the stage's metrics; the stage (:mod:`petvision.visualize`) loads the models, opens the MLflow
run and puts the folder in place.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from petvision.config import Config, Task, architectures, task_config
from petvision.core.errors import ConfigError, DataError
from petvision.data import layout, npy_dataset
from petvision.interpret.methods import activations, filters, gradcam
from petvision.interpret.pipeline import evidence, sections
from petvision.models import imagenet, loading


def check_inputs(
    cfg: Config, classifier, segmenter, test: npy_dataset.Split, val: npy_dataset.Split
) -> None:
    """The arrays must fit the models, and the configured image must exist, before any work."""
    for split, model in ((test, classifier), (val, segmenter)):
        size, expected = split.images.shape[1], loading.input_size(model)
        if size != expected:
            t = task_config(cfg, split.task)
            raise DataError(
                f"{npy_dataset.array_path(cfg.paths.resolve('npy'), t.task, split.name, 'images')} holds "
                f"{size}x{size} images but {t.model_file} takes {expected}x{expected}; "
                f"rerun preprocess and {t.stage} with the same data.{t.task}.image_size"
            )
    index = cfg.visualize.activations.image_index
    smallest = min(len(test), len(val))
    if index >= smallest:
        raise ConfigError(
            f"visualize.activations.image_index={index}: the classification test split has "
            f"{len(test)} images and the segmentation validation split {len(val)}"
        )
    classification = task_config(cfg, Task.classification)
    architecture = classification.model.name
    blocks = classification.architecture.block_outputs
    names = {lay.name for lay in classifier.layers}
    missing = [n for n in (architectures.last_conv_layer(architecture), *blocks) if n not in names]
    if missing:
        raise DataError(
            f"{classification.model_file} has no layer {missing[0]!r}, a Grad-CAM layer of "
            f"classification.model.name={architecture}: it was trained with another "
            f"architecture ({classifier.name}); rerun train_xception"
        )
    if cfg.visualize.model == "trained":
        filters.choose_layers(
            cfg.visualize.filters.layers, architecture, classifier
        )  # raises on a bad name


def everything(
    cfg: Config,
    classifier,
    segmenter,
    imagenet_xception,
    test: npy_dataset.Split,
    val: npy_dataset.Split,
    folder: Path,
) -> dict:
    """Every picture and measure into ``folder``; the metrics. ``imagenet_xception`` is None or the
    book's ImageNet Xception and its class names, whose filters and Grad-CAM are then drawn
    instead of the trained classifier's (and without the localization evidence)."""
    vis = cfg.visualize
    index, per_row = vis.activations.image_index, vis.activations.images_per_row
    for model, layers, image, prefix in (
        (classifier, activations.classifier_layers(classifier), test.images[index], "classifier"),
        (segmenter, activations.encoder_layers(segmenter), val.images[index], Task.segmentation),
    ):
        sections.draw_activations(model, layers, image, folder / "activations", prefix, per_row)

    if imagenet_xception is None:
        subject = _trained(cfg.classification.model.name, classifier, test)
    else:
        xception, class_names = imagenet_xception
        subject = _imagenet(xception, class_names, vis.filters.image_size)
    sections.draw_filters(subject, folder / "filters", vis.filters, seed=cfg.trainer.seed)
    explained = sections.explain_classifier(subject, test, folder / "gradcam", vis)
    segmented = sections.segment(segmenter, val)
    seg = sections.explain_segmentation(segmented, folder / Task.segmentation, vis)
    seg.update(
        evidence.explain_segmentation_failures(
            segmented, folder / Task.segmentation, vis.segmentation
        )
    )
    if imagenet_xception is not None:
        return {"model": subject.name, "gradcam": explained, Task.segmentation: seg}
    where = evidence.explain_where(classifier, subject.name, test, vis, cfg.trainer.seed, folder)
    return {"model": subject.name, **where, "gradcam": explained, Task.segmentation: seg}


def _trained(architecture: str, classifier, test: npy_dataset.Split) -> sections.Subject:
    return sections.Subject(
        name=architecture,
        probed=classifier,
        input_scale=255.0,  # the model divides by 255 inside: see filters.filter_patterns
        cam=gradcam.split_model(
            classifier, architectures.last_conv_layer(architecture), "dog_probability"
        ),
        class_names=layout.SPECIES_NAMES,
        labels=np.asarray(test.require("labels")),
    )


def _imagenet(xception, class_names: Sequence[str], image_size: int) -> sections.Subject:
    return sections.Subject(
        name="imagenet_xception",
        probed=imagenet.xception_conv_base(xception, image_size),
        # The book feeds its start image in [0.4, 0.6] to Xception as it is.
        input_scale=1.0,
        cam=gradcam.split_model(
            xception,
            imagenet.XCEPTION_GRADCAM_LAYER,
            "predictions",
            preprocess=imagenet.xception_inputs,
        ),
        class_names=class_names,
        labels=None,
    )
