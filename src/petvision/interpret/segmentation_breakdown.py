"""Where the segmentation model fails: IoU per class and by pet size, and its errors by kind.

Mask values are the trimap minus one: 0 = pet, 1 = background, 2 = border. The border is a thin
band around the pet, so it is the hardest class; small pets are mostly border and outline, so
they are the hardest images. The errors fall into three kinds, each drawn in its own colour:

- pet missed: a pet pixel called background (red);
- pet invented: a background pixel called pet or border (blue);
- border confused: every other error, each of which involves the border class (yellow).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from petvision.evaluation.metrics import (
    PET,
    SEGMENTATION_CLASSES,
    confusion,
    iou_from_confusion,
    per_image_iou,
)

BACKGROUND, BORDER = 1, 2
ERROR_COLOURS = {
    "pet_missed": (230, 30, 30),
    "pet_invented": (40, 90, 255),
    "border_confused": (255, 230, 0),
}


def _plain(masks: np.ndarray) -> np.ndarray:
    """Masks without their channel axis: ``(N, H, W, 1)`` or one ``(H, W, 1)``."""
    masks = np.asarray(masks)
    return masks[..., 0] if masks.ndim == 4 or (masks.ndim == 3 and masks.shape[-1] == 1) else masks


def class_ious(true_masks: np.ndarray, pred_masks: np.ndarray) -> dict[str, float]:
    """IoU of each class over all pixels of all images (NaN for a class absent from both)."""
    cm = confusion(_plain(true_masks), _plain(pred_masks), len(SEGMENTATION_CLASSES))
    return {
        name: float(v) for name, v in zip(SEGMENTATION_CLASSES, iou_from_confusion(cm), strict=True)
    }


def pet_areas(true_masks: np.ndarray) -> np.ndarray:
    """Each image's share of pet pixels (pet and border, the classifier's notion of the pet)."""
    true = _plain(true_masks)
    return (true != BACKGROUND).reshape(len(true), -1).mean(axis=1) if len(true) else np.zeros(0)


def bucket_names(edges: Sequence[float]) -> list[str]:
    """Names of the pet-size buckets cut at ``edges`` (shares of the image, increasing)."""
    pct = [f"{round(100 * e):d}" for e in edges]
    if not pct:
        return ["all_sizes"]
    return [
        f"under_{pct[0]}pct",
        *(f"{a}_to_{b}pct" for a, b in itertools.pairwise(pct)),
        f"{pct[-1]}pct_up",
    ]


def by_pet_size(
    true_masks: np.ndarray, pred_masks: np.ndarray, edges: Sequence[float]
) -> dict[str, dict]:
    """Per pet-size bucket: the images in it, their mean pet share, mean pet IoU per image, and
    the border IoU over the bucket's pixels."""
    true, pred = _plain(true_masks), _plain(pred_masks)
    areas = pet_areas(true)
    bucket = np.searchsorted(np.asarray(edges, dtype=np.float64), areas, side="right")
    ious = per_image_iou(true, pred, cls=PET) if len(true) else np.zeros(0)
    out: dict[str, dict] = {}
    for b, name in enumerate(bucket_names(edges)):
        chosen = bucket == b
        n = int(chosen.sum())
        out[name] = {
            "images": n,
            "pet_area": float(areas[chosen].mean()) if n else float("nan"),
            "mean_pet_iou": float(ious[chosen].mean()) if n else float("nan"),
            "border_iou": class_ious(true[chosen], pred[chosen])["border"] if n else float("nan"),
        }
    return out


def error_kinds(true_mask: np.ndarray, pred_mask: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean maps of the three kinds of error (disjoint; together, every wrong pixel)."""
    t, p = _plain(true_mask), _plain(pred_mask)
    missed = (t == PET) & (p == BACKGROUND)
    invented = (t == BACKGROUND) & (p != BACKGROUND)
    return {
        "pet_missed": missed,
        "pet_invented": invented,
        "border_confused": (t != p) & ~missed & ~invented,
    }


def error_shares(true_masks: np.ndarray, pred_masks: np.ndarray) -> dict[str, float]:
    """Each kind of error's share of all pixels."""
    kinds = error_kinds(true_masks, pred_masks)
    return {name: float(hit.mean()) if hit.size else float("nan") for name, hit in kinds.items()}


def error_picture(image: np.ndarray, true_mask: np.ndarray, pred_mask: np.ndarray) -> np.ndarray:
    """The image dimmed to grey where the prediction is right, each error in its colour."""
    image = np.asarray(image, dtype=np.float32)
    grey = image.mean(axis=-1, keepdims=True) * 0.6 + 40
    out = np.repeat(grey, 3, axis=-1)
    for name, where in error_kinds(true_mask, pred_mask).items():
        out[where] = ERROR_COLOURS[name]
    return np.clip(out, 0, 255).astype(np.uint8)
