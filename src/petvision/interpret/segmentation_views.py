"""What the segmentation model gets right and wrong: predicted masks, per-image pet IoU, worst cases."""

from __future__ import annotations

import keras
import numpy as np
from tqdm import tqdm

from petvision.evaluation.metrics import PET, per_image_iou

# Overlay colours per mask value: pet, background (left as it is), border.
MASK_COLOURS = {0: (255, 140, 0), 2: (255, 255, 0)}


def predict_masks(model: keras.Model, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """The most likely class per pixel, ``(N, H, W)`` uint8, in inference mode."""
    out = []
    starts = range(0, len(images), batch_size)
    for start in tqdm(starts, desc="segmenting", leave=False, disable=len(starts) < 4):
        batch = np.asarray(images[start : start + batch_size], dtype=np.float32)
        probs = keras.ops.convert_to_numpy(model(batch, training=False))
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


def mask_overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The image with the pet in orange and the border in yellow, blended at ``alpha``."""
    image = np.asarray(image, dtype=np.float32)
    mask = np.asarray(mask)
    mask = mask[..., 0] if mask.ndim == 3 else mask
    out = image.copy()
    for value, colour in MASK_COLOURS.items():
        where = mask == value
        out[where] = (1 - alpha) * image[where] + alpha * np.asarray(colour, np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


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
