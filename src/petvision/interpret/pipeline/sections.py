"""The four parts of the visualize stage, each from models and arrays to pictures (and metrics).

Every function writes into a folder it is given (the stage hands it a temporary folder that
replaces ``reports/visualize/`` only once everything is drawn) and returns what it wrote.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
from tqdm import tqdm

from petvision.interpret.methods import activations, filters, gradcam, localization, segmentation
from petvision.render import images as pixels
from petvision.render import pictures
from petvision.render.pictures import Panel, Row

log = logging.getLogger(__name__)


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


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


# --------------------------------------------------------------------------- filters


def draw_filters(
    model: keras.Model,
    layer_names: Sequence[str],
    folder: Path,
    prefix: str,
    num_filters: int,
    steps: int,
    learning_rate: float,
    input_scale: float,
    crop: int,
    margin: int,
    seed: int = 0,
) -> list[Path]:
    """One grid of filter patterns per layer: the first ``num_filters`` filters of each."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in layer_names:
        extractor = filters.feature_extractor(model, name)
        count = min(num_filters, int(extractor.outputs[0].shape[-1]))
        images = filters.filter_patterns(
            extractor,
            list(range(count)),
            steps=steps,
            learning_rate=learning_rate,
            input_scale=input_scale,
            seed=seed,
            progress=f"filters of {name}",
        )
        grid = pixels.stitch([pixels.deprocess(im, crop) for im in images], margin)
        written.append(pictures.save_image(grid, folder / f"{prefix}_{_safe_name(name)}.jpg"))
    return written


# --------------------------------------------------------------------------- Grad-CAM


def explain_classifier(
    cam: gradcam.GradCamModel,
    images: np.ndarray,
    masks: np.ndarray,
    labels: np.ndarray | None,
    class_names: Sequence[str],
    stems: Sequence[str],
    folder: Path,
    num_images: int,
    localization_images: int,
    alpha: float,
    other_class: bool,
) -> dict:
    """Grad-CAM pictures for the first ``num_images`` images and localization metrics over the
    first ``localization_images`` (0 = all). ``labels`` (0/1) give the accuracy when known."""
    folder.mkdir(parents=True, exist_ok=True)
    n = len(images) if localization_images == 0 else min(localization_images, len(images))
    k = min(num_images, len(images))
    used = max(n, k)
    result = gradcam.heatmaps(cam, images[:used])
    metrics = localization.measures(result.heatmaps[:n], np.asarray(masks[:n]))
    metrics["layer"] = cam.layer_name
    if labels is not None:
        metrics["accuracy"] = (
            float((result.predicted[:n] == np.asarray(labels[:n])).mean()) if n else float("nan")
        )
    log.info(
        "Grad-CAM on %d images: %.2f of the heat on the pet (pets cover %.2f), peak on the pet in %.2f",
        n,
        metrics["heat_on_pet"],
        metrics["pet_area"],
        metrics["pointing_game"],
    )

    others = gradcam.heatmaps(cam, images[:k], classes="other") if other_class and k else None
    rows = []
    for i in range(k):
        region = localization.pet_region(masks[i])
        up = localization.upsample(result.heatmaps[i], region.shape)
        truth = f", true {class_names[int(labels[i])]}" if labels is not None else ""
        row = Row(
            [
                Panel(np.asarray(images[i]), f"{stems[i]}{truth}", outline=region),
                Panel(
                    result.heatmaps[i],
                    f"heatmap {result.heatmaps.shape[1]}x{result.heatmaps.shape[2]}",
                    cmap="jet",
                    vmin=0.0,
                    vmax=1.0,
                ),
                Panel(
                    pixels.jet_overlay(images[i], result.heatmaps[i], alpha),
                    f"{_class_label(result, i, class_names)}\n{_where(up, region)}",
                ),
            ]
        )
        if others is not None:
            other_up = localization.upsample(others.heatmaps[i], region.shape)
            row.panels.append(
                Panel(
                    pixels.jet_overlay(images[i], others.heatmaps[i], alpha),
                    f"evidence for {class_names[int(others.classes[i])]}\n{_where(other_up, region)}",
                )
            )
        rows.append(row)
    pictures.panel_grid(
        rows,
        folder / "gradcam.jpg",
        title=f"Grad-CAM at {cam.layer_name} (white: the pet's outline)",
    )
    metrics["heat_ratio"] = localization.heat_ratio(metrics)
    return metrics


def _where(heat: np.ndarray, region: np.ndarray) -> str:
    share = localization.heat_on_pet(heat, region)
    if np.isnan(share):
        return "no positive evidence anywhere"
    peak = "on" if localization.pointing_hit(heat, region) == 1 else "off"
    return f"{share:.0%} of heat on pet, peak {peak} pet"


def _class_label(result: gradcam.GradCamResult, i: int, class_names: Sequence[str]) -> str:
    name = class_names[int(result.classes[i])]
    if len(class_names) == 2:
        return f"evidence for {name} (P(dog)={result.probabilities[i]:.2f})"
    return f"evidence for {name} (p={result.probabilities[i]:.2f})"


# --------------------------------------------------------------------------- segmentation


def explain_segmentation(
    model: keras.Model,
    images: np.ndarray,
    masks: np.ndarray,
    stems: Sequence[str],
    folder: Path,
    num_images: int,
    worst: int,
) -> dict:
    """Overlays of the predicted masks on the first ``num_images`` images and on the ``worst``
    images by pet IoU; the IoU summary over all of them."""
    folder.mkdir(parents=True, exist_ok=True)
    predicted = segmentation.predict_masks(model, images)
    ious = segmentation.pet_ious(masks, predicted)

    def rows(indices: Sequence[int]) -> list[Row]:
        return [
            Row(
                [
                    Panel(np.asarray(images[i]), stems[i]),
                    Panel(pixels.mask_overlay(images[i], masks[i]), "true mask"),
                    Panel(
                        pixels.mask_overlay(images[i], predicted[i]),
                        f"predicted: pet IoU {ious[i]:.2f}",
                    ),
                ]
            )
            for i in indices
        ]

    pictures.panel_grid(
        rows(range(min(num_images, len(images)))),
        folder / "samples.jpg",
        title="segmentation of validation images (orange: pet, yellow: border)",
    )
    if worst:
        pictures.panel_grid(
            rows([int(i) for i in segmentation.worst_cases(ious, worst)]),
            folder / "worst.jpg",
            title=f"the {min(worst, len(images))} validation images with the lowest pet IoU",
        )
    metrics = segmentation.summary(ious)
    log.info(
        "segmentation: mean pet IoU %.3f over %d validation images, worst %.3f",
        metrics.get("mean_pet_iou", float("nan")),
        len(ious),
        metrics.get("worst_pet_iou", float("nan")),
    )
    return metrics
