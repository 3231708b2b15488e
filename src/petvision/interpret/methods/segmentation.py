"""What the segmentation model gets right and wrong: predicted masks, per-image pet IoU and the
worst cases; IoU per class and by pet size, and its errors by kind.

Mask values are the trimap minus one: 0 = pet, 1 = background, 2 = border. The border is a thin
band around the pet, so it is the hardest class; small pets are mostly border and outline, so
they are the hardest images. The errors fall into three kinds (each drawn in its own colour by
:func:`petvision.render.images.error_picture`):

- pet missed: a pet pixel called background;
- pet invented: a background pixel called pet or border;
- border confused: every other error, each of which involves the border class.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import keras
import numpy as np
from tqdm import tqdm

from petvision.evaluation import batched
from petvision.evaluation.metrics import (
    PET,
    SEGMENTATION_CLASSES,
    confusion,
    iou_from_confusion,
    per_image_iou,
)

BACKGROUND, BORDER = 1, 2

# --------------------------------------------------------------------------- per image


def predict_masks(model: keras.Model, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """The most likely class per pixel, ``(N, H, W)`` uint8, in inference mode."""
    out = []
    count = -(-len(images) // batch_size)
    # batched.batches: compiled once per batch shape on JAX (not op by op), as before on TensorFlow.
    outputs = batched.batches(model, images, batch_size)
    for probs in tqdm(outputs, total=count, desc="segmenting", leave=False, disable=count < 4):
        out.append(np.argmax(probs, axis=-1).astype(np.uint8))
    return np.concatenate(out) if out else np.zeros((0, *images.shape[1:3]), np.uint8)


def pet_ious(true_masks: np.ndarray, pred_masks: np.ndarray) -> np.ndarray:
    """Per-image IoU of the pet class (1.0 where neither truth nor prediction has any pet)."""
    true = np.asarray(true_masks)
    true = true[..., 0] if true.ndim == 4 else true
    return per_image_iou(true, np.asarray(pred_masks), cls=PET).astype(np.float64)


def worst_cases(ious: np.ndarray, count: int) -> np.ndarray:
    """Indices of the ``count`` lowest IoUs, the worst first (ties in index order)."""
    return np.argsort(np.asarray(ious), kind="stable")[:count]


def summary(ious: np.ndarray) -> dict:
    ious = np.asarray(ious, dtype=np.float64)
    if not len(ious):
        return {"images": 0}
    return {
        "images": int(len(ious)),
        "mean_pet_iou": float(ious.mean()),
        "median_pet_iou": float(np.median(ious)),
        "worst_pet_iou": float(ious.min()),
    }


# --------------------------------------------------------------------------- breakdown


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
