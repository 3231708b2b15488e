"""The visualize stage's account of where the classifier looks, and whether that is true.

For the trained classifier on the test images, it measures and draws:

- every block output's maps by each recipe of :mod:`~petvision.interpret.methods.gradcam`,
  scored against the pet masks, and the default method (``visualize.localization``: a recipe
  at the block outputs of a given stride), which the stage reports beside the book's Grad-CAM
  on the last block;
- the faithfulness of the default and the book's maps (deletion and insertion against a random
  order), and the classifier's accuracy with parts of the image greyed out by the trimaps;
- the sanity check: how the maps change as the weights are randomized, top block first;

and, for the segmentation model, its IoU per class and by pet size and its errors by kind.

Every count is capped by the configuration, so the stage stays a small part of the pipeline.
The curves also go to CSV files next to ``metrics.json``, for ``dvc plots``.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import keras
import numpy as np

from petvision.config import FaithfulnessConfig, LocalizationConfig, SanityConfig
from petvision.core.atomic import write_text
from petvision.interpret.methods import faithfulness, gradcam, localization, sanity, segmentation
from petvision.interpret.pipeline import panels
from petvision.render import figures

log = logging.getLogger(__name__)
PICTURE_IMAGES = 4  # images in the per-layer grid; 3 in the randomization cascade's
CASCADE_IMAGES = 3


def write_csv(path: Path, rows: Sequence[Mapping]) -> Path:
    """Rows of one shape as CSV, written atomically (numbers as they are, None as empty)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else [], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, out.getvalue())
    return path


def explain_where(
    model: keras.Model,
    blocks: Sequence[str],
    book_layer: str,
    images: np.ndarray,
    masks: np.ndarray,
    labels: np.ndarray,
    stems: Sequence[str],
    folder: Path,
    count: int,
    loc: LocalizationConfig,
    faith: FaithfulnessConfig,
    check: SanityConfig,
    alpha: float,
    seed: int,
) -> dict:
    """Measure and draw all of the above into ``folder``; return the metrics. ``count`` test
    images (0 = all) are scored for localization; faithfulness and sanity use the first few."""
    n = len(images) if count == 0 else min(count, len(images))
    images, masks = np.asarray(images), np.asarray(masks)
    size = images.shape[1:3]
    methods = list(dict.fromkeys(["gradcam", loc.method, *gradcam.METHODS]))
    fused = localization.layers_by_stride(model, blocks, loc.min_stride, loc.max_stride)
    needed = list(dict.fromkeys([*fused, book_layer]))
    head = gradcam.layer_maps(
        model, needed, images[:n], methods=list(dict.fromkeys(["gradcam", loc.method]))
    )
    default = localization.default_maps(head, fused, loc.method, size)
    book = localization.upsampled(head.maps[book_layer]["gradcam"], size)
    summary = localization.scores(default, masks[:n])
    # Every block by every recipe costs a pass per block: on fewer images than the headline.
    m = n if loc.layer_images == 0 else min(loc.layer_images, n)
    summary.update(method=loc.method, layers="+".join(fused), per_layer_images=m)
    summary["outline"] = localization.by_outline_distance(default, masks[:n])
    log.info(
        "%s at %s on %d images: %.2f of the heat on the pet (%.2fx its area %.2f), "
        "peak on the pet in %.2f",
        loc.method,
        "+".join(fused),
        n,
        summary["heat_on_pet"],
        summary["heat_ratio"],
        summary["pet_area"],
        summary["pointing_game"],
    )
    outline = summary["outline"]
    shares = [f"{name} {b['heat']:.2f}" for name, b in outline["bands"].items()]
    log.info(
        "the same maps' heat by distance to the pet's outline: %s; a map that were only the "
        "outline (%d px either side) would put %.2fx the pet's area on the pet",
        ", ".join(shares),
        outline["outline_band_px"],
        outline["outline_band_ratio"],
    )

    found = gradcam.layer_maps(model, blocks, images[:m], methods=methods, classes=head.classes[:m])
    table = localization.per_layer(found, model, masks[:m])
    rows = localization.layer_rows(table, methods)
    write_csv(folder / "localization_by_layer.csv", rows)
    (folder / "layers").mkdir(parents=True, exist_ok=True)
    figures.localization_by_depth(
        rows, methods, summary["pet_area"], folder / "layers" / "localization_by_depth.png"
    )
    figures.heat_by_outline_distance(summary["outline"], folder / "layers" / "outline.png")
    k = min(PICTURE_IMAGES, m)
    columns: dict[str, dict[str, np.ndarray]] = {}
    for method in dict.fromkeys(["gradcam", loc.method]):
        columns[method] = {}
        for layer in blocks:
            maps = found.maps[layer][method][:k]
            columns[method][f"{layer} {maps.shape[1]}x{maps.shape[2]}"] = localization.upsampled(
                maps, size
            )
    columns[loc.method]["default (fused)"] = default[:k]
    panels.map_grid(
        images[:k],
        masks[:k],
        stems[:k],
        columns,
        folder / "layers" / "per_layer.jpg",
        f"Maps of every block's output; the default fuses {' + '.join(fused)}",
        alpha,
    )

    result = {"localization": summary, "layers": table}
    result["faithfulness"] = _faithfulness(
        model,
        images,
        masks,
        labels,
        {"default": default, "book": book},
        head.classes,
        faith,
        folder,
        seed,
    )
    result["sanity"] = _sanity(
        model,
        blocks,
        book_layer,
        fused,
        loc.method,
        images,
        masks,
        head.classes,
        check,
        folder,
        alpha,
        seed,
    )
    return result


def _faithfulness(
    model: keras.Model,
    images: np.ndarray,
    masks: np.ndarray,
    labels: np.ndarray,
    maps: Mapping[str, np.ndarray],
    classes: np.ndarray,
    faith: FaithfulnessConfig,
    folder: Path,
    seed: int,
) -> dict:
    score = faithfulness.classifier_scores(model)
    f = min(faith.images, len(classes))
    metrics, curves = faithfulness.deletion_insertion(
        score,
        images[:f],
        {k: v[:f] for k, v in maps.items()},
        classes[:f],
        faith.steps,
        faith.fill,
        seed,
    )
    (folder / "faithfulness").mkdir(parents=True, exist_ok=True)
    if f:
        write_csv(
            folder / "deletion_insertion.csv",
            [
                {key: float(values[i]) for key, values in curves.items()}
                for i in range(faith.steps + 1)
            ],
        )
        figures.deletion_insertion(
            curves, metrics, folder / "faithfulness" / "deletion_insertion.png"
        )
    o = len(images) if faith.occlusion_images == 0 else min(faith.occlusion_images, len(images))
    metrics["occlusion"] = faithfulness.occlusion_accuracy(
        score, images[:o], masks[:o], labels[:o], faith.fill
    )
    log.info(
        "faithfulness on %d images: deletion AUC %s, insertion AUC %s; "
        "accuracy with greyed-out parts %s",
        f,
        _fmt(metrics["deletion_auc"]),
        _fmt(metrics["insertion_auc"]),
        _fmt(metrics["occlusion"]),
    )
    return metrics


def _sanity(
    model: keras.Model,
    blocks: Sequence[str],
    book_layer: str,
    fused: Sequence[str],
    method: str,
    images: np.ndarray,
    masks: np.ndarray,
    classes: np.ndarray,
    check: SanityConfig,
    folder: Path,
    alpha: float,
    seed: int,
) -> dict:
    s = min(check.images, len(classes))
    if not s:
        return {"images": 0}
    size = images.shape[1:3]
    needed = list(dict.fromkeys([*fused, book_layer]))

    def maps_fn(candidate: keras.Model) -> dict[str, np.ndarray]:
        found = gradcam.layer_maps(
            candidate,
            needed,
            images[:s],
            methods=list(dict.fromkeys([method, "gradcam"])),
            classes=classes[:s],
        )
        return {
            "default": localization.default_maps(found, fused, method, size),
            "book": localization.upsampled(found.maps[book_layer]["gradcam"], size),
        }

    keep = min(CASCADE_IMAGES, s)
    # Not the training's own seed: that would redraw the very weights training started from, and
    # the layers that moved little in training (the output layer) would look unrandomized.
    result, kept = sanity.cascade(model, blocks, maps_fn, seed + 1, keep=keep)
    survivors = sanity.survivors(result, check.max_correlation)
    result["max_correlation"] = check.max_correlation
    result["survives_randomization"] = {
        name: int(name in survivors) for name in result["rank_correlation"]
    }
    for name in survivors:
        log.warning(
            "sanity check: the %s maps keep a rank correlation of at least %.2f with the "
            "trained model's "
            "once every weight is random: they show the image, not what the classifier learned",
            name,
            check.max_correlation,
        )
    steps = list(next(iter(result["rank_correlation"].values())))
    write_csv(
        folder / "sanity_cascade.csv",
        [
            {
                "step": i,
                "randomized_down_to": step.split("_", 1)[1],
                **{name: by_step[step] for name, by_step in result["rank_correlation"].items()},
            }
            for i, step in enumerate(steps, start=1)
        ],
    )
    (folder / "sanity").mkdir(parents=True, exist_ok=True)
    panels.cascade_grid(
        images[:keep],
        masks[:keep],
        kept,
        [st.split("_", 1)[1] for st in steps],
        folder / "sanity" / "cascade.jpg",
        alpha,
    )
    log.info(
        "sanity check on %d images: rank correlation with the trained maps per step %s",
        s,
        _fmt(result["rank_correlation"]),
    )
    return result


def _fmt(tree: Mapping) -> str:
    return (
        "{"
        + ", ".join(
            f"{k}: {_fmt(v) if isinstance(v, Mapping) else f'{v:.3f}'}" for k, v in tree.items()
        )
        + "}"
    )


def explain_segmentation_failures(
    model: keras.Model,
    images: np.ndarray,
    masks: np.ndarray,
    stems: Sequence[str],
    folder: Path,
    worst: int,
    edges: Sequence[float],
) -> dict:
    """IoU per class and by pet size over the validation images, the errors' shares by kind, and
    two pictures beside the worst cases: those images' errors by kind, and the IoU bars."""
    folder.mkdir(parents=True, exist_ok=True)
    predicted = segmentation.predict_masks(model, images)
    ious = segmentation.pet_ious(masks, predicted)
    by_class = segmentation.class_ious(masks, predicted)
    by_size = segmentation.by_pet_size(masks, predicted, edges)
    errors = segmentation.error_shares(masks, predicted)
    if worst:
        worst_first = [int(i) for i in segmentation.worst_cases(ious, worst)]
        panels.failure_modes(
            images, masks, predicted, ious, stems, worst_first, folder / "failure_modes.jpg"
        )
    figures.iou_breakdown(by_class, by_size, folder / "iou_breakdown.png")
    log.info("segmentation: IoU per class %s; errors by kind %s", _fmt(by_class), _fmt(errors))
    result = {"iou_by_class": by_class, "by_pet_size": by_size, "error_share": errors}
    return result
