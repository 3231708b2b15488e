"""The four parts of the visualize stage, each from models and arrays to pictures (and metrics).

Every function writes into a folder it is given (the stage hands it a temporary folder that
replaces ``reports/visualize/`` only once everything is drawn) and returns what it wrote. The
grids themselves are :mod:`petvision.render.figures`'; here is what goes in them, with the
measures of their captions (:func:`overlays`, :func:`shown`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from tqdm import tqdm

from petvision.config import FiltersConfig, GradcamConfig, VisualizeConfig
from petvision.data.npy_dataset import Split
from petvision.interpret.methods import activations, filters, gradcam, localization, segmentation
from petvision.render import figures, pictures
from petvision.render import images as pixels

log = logging.getLogger(__name__)


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


# --------------------------------------------------------------------------- what a grid shows


def shown(images: np.ndarray, names: Sequence[str], masks: np.ndarray) -> figures.Shown:
    """Images for a grid, with the pets' regions (from the trimaps) to outline."""
    return figures.Shown(images, names, [localization.pet_region(mask) for mask in masks])


def overlays(maps: np.ndarray, titles: Sequence[str], masks: np.ndarray) -> figures.Overlays:
    """Maps to lay over their images, with where each puts its heat (for the captions)."""
    found = localization.per_image(maps, masks)
    return figures.Overlays(maps, titles, found.heat_on_pet, found.pointing)


# --------------------------------------------------------------------------- activations


def draw_activations(
    model: keras.Model,
    layer_names: Sequence[str],
    image: np.ndarray,
    folder: Path,
    prefix: str,
    images_per_row: int = 16,
) -> list[Path]:
    """``<prefix>_00_input.png``, then one activation grid per layer, numbered in model order."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [pictures.save_image(image, folder / f"{prefix}_00_input.png")]
    maps = activations.layer_activations(model, layer_names, image)
    for i, name in enumerate(tqdm(layer_names, desc=f"{prefix} activations", leave=False), start=1):
        act = maps[name]
        grid = pixels.activation_grid(act, images_per_row, cell=pictures.ACTIVATION_CELL_PX)
        title = f"{model.name} / {name}: {act.shape[0]}x{act.shape[1]}, {act.shape[2]} channels"
        written.append(
            pictures.activation_picture(
                grid, title, folder / f"{prefix}_{i:02d}_{_safe_name(name)}.png"
            )
        )
    return written


# --------------------------------------------------------------------------- the classifier


@dataclass(frozen=True)
class Subject:
    """The classifier whose filters and Grad-CAM are drawn: the trained one, or the book's
    ImageNet Xception (``visualize.model=imagenet_xception``)."""

    name: str  # its architecture: in the pictures' names and the metrics
    probed: keras.Model  # the model whose filter patterns are found
    input_scale: float  # the book's numbers in the probed model's input units (filter_patterns)
    cam: gradcam.GradCamModel
    class_names: Sequence[str]
    labels: np.ndarray | None  # the test images' classes, where the model's classes are ours


def draw_filters(subject: Subject, folder: Path, f: FiltersConfig, seed: int = 0) -> list[Path]:
    """One grid of filter patterns per configured layer: the first ``f.num_filters`` filters."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in filters.choose_layers(f.layers, subject.name, subject.probed):
        extractor = filters.feature_extractor(subject.probed, name)
        count = min(f.num_filters, int(extractor.outputs[0].shape[-1]))
        images = filters.filter_patterns(
            extractor,
            list(range(count)),
            steps=f.steps,
            learning_rate=f.learning_rate,
            input_scale=subject.input_scale,
            seed=seed,
            progress=f"filters of {name}",
        )
        grid = pixels.stitch([pixels.deprocess(im, f.crop) for im in images], f.margin)
        written.append(pictures.save_image(grid, folder / f"{subject.name}_{_safe_name(name)}.jpg"))
    return written


def explain_classifier(subject: Subject, test: Split, folder: Path, vis: VisualizeConfig) -> dict:
    """Grad-CAM pictures for the first ``vis.num_images`` test images and localization metrics
    over the first ``vis.gradcam.localization_images`` (0 = all); the accuracy where the
    subject's classes are the labels'."""
    folder.mkdir(parents=True, exist_ok=True)
    images, masks, count = test.images, test.require("masks"), vis.gradcam.localization_images
    n = len(images) if count == 0 else min(count, len(images))
    k = min(vis.num_images, len(images))
    result = gradcam.heatmaps(subject.cam, images[: max(n, k)])
    metrics = localization.measures(result.heatmaps[:n], np.asarray(masks[:n]))
    metrics["layer"] = subject.cam.layer_name
    if subject.labels is not None:
        metrics["accuracy"] = (
            float((result.predicted[:n] == subject.labels[:n]).mean()) if n else float("nan")
        )
    log.info(
        "Grad-CAM on %d images: %.2f of the heat on the pet (pets cover %.2f), peak on the pet in %.2f",
        n,
        metrics["heat_on_pet"],
        metrics["pet_area"],
        metrics["pointing_game"],
    )
    _draw_gradcam(subject, test, result, k, folder / "gradcam.jpg", vis.gradcam)
    metrics["heat_ratio"] = localization.heat_ratio(metrics)
    return metrics


def _draw_gradcam(
    subject: Subject,
    test: Split,
    result: gradcam.GradCamResult,
    k: int,
    path: Path,
    g: GradcamConfig,
) -> Path:
    """The first ``k`` images: each with its heatmap, the evidence for the predicted class laid
    over it, and (``g.other_class``) the evidence for the other."""
    images, masks, names = test.images[:k], test.require("masks")[:k], subject.class_names
    labels = subject.labels
    truths = [f", true {names[int(labels[i])]}" if labels is not None else "" for i in range(k)]
    columns = [
        overlays(result.heatmaps[:k], [_class_label(result, i, names) for i in range(k)], masks)
    ]
    if g.other_class and k:
        others = gradcam.heatmaps(subject.cam, images, classes="other")
        titles = [f"evidence for {names[int(c)]}" for c in others.classes]
        columns.append(overlays(others.heatmaps, titles, masks))
    return figures.gradcam_grid(
        shown(images, [f"{test.stems[i]}{truths[i]}" for i in range(k)], masks),
        result.heatmaps[:k],
        columns,
        path,
        f"Grad-CAM at {subject.cam.layer_name} (white: the pet's outline)",
        g.alpha,
    )


def _class_label(result: gradcam.GradCamResult, i: int, class_names: Sequence[str]) -> str:
    name = class_names[int(result.classes[i])]
    if len(class_names) == 2:
        return f"evidence for {name} (P(dog)={result.probabilities[i]:.2f})"
    return f"evidence for {name} (p={result.probabilities[i]:.2f})"


# --------------------------------------------------------------------------- segmentation


def segment(model: keras.Model, val: Split) -> figures.Segmented:
    """The segmentation model's masks of the validation images, and each one's pet IoU."""
    predicted = segmentation.predict_masks(model, val.images)
    masks = val.require("masks")
    return figures.Segmented(
        val.images, val.stems, masks, predicted, segmentation.pet_ious(masks, predicted)
    )


def explain_segmentation(seg: figures.Segmented, folder: Path, vis: VisualizeConfig) -> dict:
    """Overlays of the predicted masks on the first ``vis.num_images`` images and on the
    ``vis.segmentation.worst`` images by pet IoU; the IoU summary over all of them."""
    folder.mkdir(parents=True, exist_ok=True)
    figures.segmentation_grid(
        seg,
        range(min(vis.num_images, len(seg.images))),
        folder / "samples.jpg",
        title="segmentation of validation images (orange: pet, yellow: border)",
    )
    worst = vis.segmentation.worst
    if worst:
        figures.segmentation_grid(
            seg,
            [int(i) for i in segmentation.worst_cases(seg.ious, worst)],
            folder / "worst.jpg",
            title=f"the {min(worst, len(seg.images))} validation images with the lowest pet IoU",
        )
    metrics = segmentation.summary(seg.ious)
    log.info(
        "segmentation: mean pet IoU %.3f over %d validation images, worst %.3f",
        metrics.get("mean_pet_iou", float("nan")),
        len(seg.ious),
        metrics.get("worst_pet_iou", float("nan")),
    )
    return metrics
