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
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from petvision.config import (
    FaithfulnessConfig,
    LocalizationConfig,
    SegmentationVisualizeConfig,
    Task,
    VisualizeConfig,
    architectures,
)
from petvision.core.atomic import write_text
from petvision.data.npy_dataset import Split
from petvision.interpret.methods import faithfulness, gradcam, localization, sanity, segmentation
from petvision.interpret.pipeline.sections import overlays, shown
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


@dataclass(frozen=True)
class Explained:
    """The trained classifier, where it is explained, and the test images it is explained on."""

    model: keras.Model
    blocks: Sequence[str]  # its block outputs, shallow to deep
    book_layer: str  # the book's Grad-CAM layer, the last block's output
    images: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    stems: Sequence[str]

    @property
    def size(self) -> tuple[int, int]:
        return self.images.shape[1:3]


@dataclass(frozen=True)
class Localized:
    """The headline maps at the image size, on the first test images: the default method's and
    the book's Grad-CAM, both explaining ``classes`` (the predicted ones); and their summary."""

    fused: list[str]  # the default method's layers
    classes: np.ndarray
    default: np.ndarray
    book: np.ndarray
    summary: dict


def explain_where(
    model: keras.Model,
    architecture: str,
    test: Split,
    vis: VisualizeConfig,
    seed: int,
    folder: Path,
) -> dict:
    """Measure and draw all of the above into ``folder``; return the metrics. The first
    ``vis.gradcam.localization_images`` test images (0 = all) are scored for localization;
    the per-layer table, faithfulness and sanity use the first few, as configured."""
    where = Explained(
        model,
        architectures.lookup(Task.classification, architecture).block_outputs,
        architectures.last_conv_layer(architecture),
        np.asarray(test.images),
        np.asarray(test.require("masks")),
        np.asarray(test.require("labels")),
        test.stems,
    )
    found = _localize(where, vis.localization, vis.gradcam.localization_images)
    result = {"localization": found.summary, "layers": _per_layer(where, found, vis, folder)}
    result["faithfulness"] = _faithfulness(where, found, vis.faithfulness, seed, folder)
    result["sanity"] = _sanity(where, found, vis, seed, folder)
    return result


def _localize(where: Explained, loc: LocalizationConfig, count: int) -> Localized:
    """The default and the book's maps on ``count`` test images (0 = all), scored."""
    n = len(where.images) if count == 0 else min(count, len(where.images))
    fused = localization.layers_by_stride(where.model, where.blocks, loc.min_stride, loc.max_stride)
    needed = list(dict.fromkeys([*fused, where.book_layer]))
    head = gradcam.layer_maps(
        where.model, needed, where.images[:n], methods=list(dict.fromkeys(["gradcam", loc.method]))
    )
    default = localization.default_maps(head, fused, loc.method, where.size)
    book = localization.upsampled(head.maps[where.book_layer]["gradcam"], where.size)
    summary = localization.scores(default, where.masks[:n])
    # Every block by every recipe costs a pass per block: on fewer images than the headline.
    m = n if loc.layer_images == 0 else min(loc.layer_images, n)
    summary.update(method=loc.method, layers="+".join(fused), per_layer_images=m)
    summary["outline"] = localization.by_outline_distance(default, where.masks[:n])
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
    return Localized(fused, head.classes, default, book, summary)


def _per_layer(where: Explained, found: Localized, vis: VisualizeConfig, folder: Path) -> dict:
    """Every block by every recipe on the first ``per_layer_images``: the table (also as CSV),
    its chart, the heat by distance to the outline, and the maps of the first few images."""
    m = found.summary["per_layer_images"]
    methods = list(dict.fromkeys(["gradcam", vis.localization.method, *gradcam.METHODS]))
    maps = gradcam.layer_maps(
        where.model, where.blocks, where.images[:m], methods=methods, classes=found.classes[:m]
    )
    table = localization.per_layer(maps, where.model, where.masks[:m])
    rows = localization.layer_rows(table, methods)
    write_csv(folder / "localization_by_layer.csv", rows)
    (folder / "layers").mkdir(parents=True, exist_ok=True)
    figures.localization_by_depth(
        rows, methods, found.summary["pet_area"], folder / "layers" / "localization_by_depth.png"
    )
    figures.heat_by_outline_distance(found.summary["outline"], folder / "layers" / "outline.png")
    _draw_per_layer(where, found, maps, vis, folder / "layers" / "per_layer.jpg")
    return table


def _draw_per_layer(
    where: Explained, found: Localized, maps: gradcam.LayerMaps, vis: VisualizeConfig, path: Path
) -> Path:
    """The first few images' maps, block by block, by Grad-CAM and the default method, and the
    default method's fused map."""
    k = min(PICTURE_IMAGES, len(maps.classes))
    masks = where.masks[:k]
    columns: dict[str, list[figures.Overlays]] = {}
    for method in dict.fromkeys(["gradcam", vis.localization.method]):
        columns[method] = []
        for layer in where.blocks:
            small = maps.maps[layer][method][:k]
            title = f"{layer} {small.shape[1]}x{small.shape[2]}"
            up = localization.upsampled(small, where.size)
            columns[method].append(overlays(up, [title] * k, masks))
    columns[vis.localization.method].append(
        overlays(found.default[:k], ["default (fused)"] * k, masks)
    )
    return figures.map_grid(
        shown(where.images[:k], where.stems[:k], masks),
        columns,
        path,
        f"Maps of every block's output; the default fuses {' + '.join(found.fused)}",
        vis.gradcam.alpha,
    )


def _faithfulness(
    where: Explained, found: Localized, faith: FaithfulnessConfig, seed: int, folder: Path
) -> dict:
    score = faithfulness.classifier_scores(where.model)
    f = min(faith.images, len(found.classes))
    metrics, curves = faithfulness.deletion_insertion(
        score,
        where.images[:f],
        {"default": found.default[:f], "book": found.book[:f]},
        found.classes[:f],
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
    total = len(where.images)
    o = total if faith.occlusion_images == 0 else min(faith.occlusion_images, total)
    metrics["occlusion"] = faithfulness.occlusion_accuracy(
        score, where.images[:o], where.masks[:o], where.labels[:o], faith.fill
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
    where: Explained, found: Localized, vis: VisualizeConfig, seed: int, folder: Path
) -> dict:
    check = vis.sanity
    s = min(check.images, len(found.classes))
    if not s:
        return {"images": 0}
    keep = min(CASCADE_IMAGES, s)
    maps_fn = _headline_maps(where, found, vis.localization.method, s)
    # Not the training's own seed: that would redraw the very weights training started from, and
    # the layers that moved little in training (the output layer) would look unrandomized.
    result, kept = sanity.cascade(where.model, where.blocks, maps_fn, seed + 1, keep=keep)
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
    figures.cascade_grid(
        shown(where.images[:keep], where.stems[:keep], where.masks[:keep]),
        kept,
        [st.split("_", 1)[1] for st in steps],
        folder / "sanity" / "cascade.jpg",
        vis.gradcam.alpha,
    )
    log.info(
        "sanity check on %d images: rank correlation with the trained maps per step %s",
        s,
        _fmt(result["rank_correlation"]),
    )
    return result


def _headline_maps(where: Explained, found: Localized, method: str, count: int) -> sanity.MapsFn:
    """The default and the book's maps of a (randomized) copy of the classifier, on the first
    ``count`` images, for the classes the trained one explained. The copy is cut once: its
    compiled pass takes the weights as they are at each step of the cascade."""
    needed = list(dict.fromkeys([*found.fused, where.book_layer]))
    cut: list[gradcam.GradCamModel] = []

    def maps_fn(candidate: keras.Model) -> dict[str, np.ndarray]:
        if not cut or cut[0].model is not candidate:
            cut[:] = [gradcam.split_model(candidate, needed, "dog_probability")]
        maps = gradcam.cut_maps(
            cut[0],
            where.images[:count],
            methods=list(dict.fromkeys([method, "gradcam"])),
            classes=found.classes[:count],
        )
        return {
            "default": localization.default_maps(maps, found.fused, method, where.size),
            "book": localization.upsampled(maps.maps[where.book_layer]["gradcam"], where.size),
        }

    return maps_fn


def _fmt(tree: Mapping) -> str:
    return (
        "{"
        + ", ".join(
            f"{k}: {_fmt(v) if isinstance(v, Mapping) else f'{v:.3f}'}" for k, v in tree.items()
        )
        + "}"
    )


def explain_segmentation_failures(
    seg: figures.Segmented, folder: Path, cfg: SegmentationVisualizeConfig
) -> dict:
    """IoU per class and by pet size over the validation images, the errors' shares by kind, and
    two pictures beside the worst cases: those images' errors by kind, and the IoU bars."""
    folder.mkdir(parents=True, exist_ok=True)
    by_class = segmentation.class_ious(seg.true_masks, seg.predicted)
    by_size = segmentation.by_pet_size(seg.true_masks, seg.predicted, cfg.pet_size_edges)
    errors = segmentation.error_shares(seg.true_masks, seg.predicted)
    if cfg.worst:
        worst_first = [int(i) for i in segmentation.worst_cases(seg.ious, cfg.worst)]
        pairs = [(seg.true_masks[i], seg.predicted[i]) for i in worst_first]
        figures.failure_modes(
            seg,
            worst_first,
            [segmentation.error_kinds(*pair) for pair in pairs],
            [segmentation.error_shares(*pair) for pair in pairs],
            folder / "failure_modes.jpg",
        )
    figures.iou_breakdown(by_class, by_size, folder / "iou_breakdown.png")
    log.info("segmentation: IoU per class %s; errors by kind %s", _fmt(by_class), _fmt(errors))
    result = {"iou_by_class": by_class, "by_pet_size": by_size, "error_share": errors}
    return result
