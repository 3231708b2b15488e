"""Do the maps point at what the classifier uses? Two tests that ask the classifier itself.

Deletion and insertion (Petsiuk et al. 2018, "RISE"): grey out the image's pixels in the order
of a map, hottest first, and follow the probability of the class the map explains (deletion);
or start from a grey image and put the pixels back in that order (insertion). A faithful map
makes the deletion curve fall fast (a low area under it) and the insertion curve rise fast (a
high area). A random order is the baseline every map must beat. Pixels of equal heat (a ReLU
leaves many zeros) are taken in random order, so that no map gains from the raster order.

Occlusion by the trimaps: the test accuracy with the background greyed out (pet and border
kept), with the pet greyed out, and with the pet's bounding box greyed out. If the classifier
looks at the pet, the first stays high and the last two fall.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import keras
import numpy as np

from petvision.interpret.methods.localization import pet_region

ScoreFn = Callable[[np.ndarray], np.ndarray]  # uint8 images (N, H, W, 3) -> P(dog), (N,)


def classifier_scores(model: keras.Model, batch_size: int = 64) -> ScoreFn:
    """P(dog) of a sigmoid classifier, in inference mode, batch by batch. ``predict_on_batch``
    runs Keras's compiled predict step instead of the model eagerly, op by op: the curves score
    thousands of variants."""

    def score(images: np.ndarray) -> np.ndarray:
        out = [
            keras.ops.convert_to_numpy(
                model.predict_on_batch(np.asarray(images[s : s + batch_size], np.float32))
            )
            for s in range(0, len(images), batch_size)
        ]
        return np.concatenate(out)[:, 0].astype(np.float64) if out else np.zeros(0)

    return score


def class_probability(p_dog: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """The probability of ``classes[i]`` (1 = dog, 0 = cat) from P(dog)."""
    p_dog, classes = np.asarray(p_dog, np.float64), np.asarray(classes)
    return np.where(classes == 1, p_dog, 1 - p_dog)


def pixel_order(heat: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Flat pixel indices of a map ``(H, W)``, hottest first, ties in random order."""
    flat = np.asarray(heat, dtype=np.float64).ravel()
    return np.lexsort((rng.random(flat.size), -flat))  # the last key sorts first


def counts(pixels: int, steps: int) -> np.ndarray:
    """How many pixels are removed (or inserted) at each of the ``steps + 1`` points."""
    return np.round(np.linspace(0, pixels, steps + 1)).astype(np.int64)


def curves(
    score: ScoreFn,
    images: np.ndarray,
    orders: np.ndarray,
    classes: np.ndarray,
    steps: int,
    fill: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Deletion and insertion curves ``(N, steps + 1)``: the probability of ``classes[i]`` as the
    pixels of image ``i`` are greyed out (to level ``fill``), or put back on a grey image, in the
    order ``orders[i]`` (flat pixel indices)."""
    images = np.asarray(images, dtype=np.uint8)
    n, h, w, c = images.shape
    done = counts(h * w, steps)
    # Every image's variants in one array, scored in the classifier's own batches: a call per
    # image would run batches of 2 * (steps + 1), several times slower on a CPU.
    variants = np.empty((n, 2, steps + 1, h * w, c), np.uint8)
    for i in range(n):
        source = images[i].reshape(h * w, c)
        removed, inserted = variants[i, 0], variants[i, 1]
        removed[:] = source
        inserted[:] = fill
        for k, m in enumerate(done):
            removed[k, orders[i][:m]] = fill
            inserted[k, orders[i][:m]] = source[orders[i][:m]]
    p_dog = score(variants.reshape(-1, h, w, c)).reshape(n, 2, steps + 1)
    p = class_probability(p_dog, np.asarray(classes).reshape(n, 1, 1))
    return p[:, 0], p[:, 1]


def auc(curve: np.ndarray) -> np.ndarray:
    """Area under curves sampled at evenly spaced fractions of 0..1 (trapezoids), per row."""
    curve = np.atleast_2d(np.asarray(curve, dtype=np.float64))
    return np.trapezoid(curve, dx=1.0 / (curve.shape[1] - 1), axis=1)


def deletion_insertion(
    score: ScoreFn,
    images: np.ndarray,
    maps: Mapping[str, np.ndarray],
    classes: np.ndarray,
    steps: int,
    fill: int,
    seed: int,
) -> tuple[dict, dict[str, np.ndarray]]:
    """For every named set of maps (at the image size) and a random order: the mean deletion and
    insertion AUC over ``images``, and the mean curves (``<name>_deletion``,
    ``<name>_insertion``)."""
    rng = np.random.default_rng(seed)
    n, h, w = np.asarray(images).shape[:3]
    orders = {
        name: np.stack([pixel_order(m, rng) for m in heat]) if n else np.zeros((0, h * w), np.int64)
        for name, heat in maps.items()
    }
    orders["random"] = (
        np.stack([rng.permutation(h * w) for _ in range(n)])
        if n
        else np.zeros((0, h * w), np.int64)
    )
    metrics: dict = {"images": int(n), "steps": int(steps), "deletion_auc": {}, "insertion_auc": {}}
    mean_curves: dict[str, np.ndarray] = {"fraction": np.linspace(0, 1, steps + 1)}
    for name, order in orders.items():
        deletion, insertion = curves(score, images, order, classes, steps, fill)
        metrics["deletion_auc"][name] = float(auc(deletion).mean()) if n else float("nan")
        metrics["insertion_auc"][name] = float(auc(insertion).mean()) if n else float("nan")
        mean_curves[f"{name}_deletion"] = deletion.mean(axis=0) if n else np.full(steps + 1, np.nan)
        mean_curves[f"{name}_insertion"] = (
            insertion.mean(axis=0) if n else np.full(steps + 1, np.nan)
        )
    return metrics, mean_curves


# ----------------------------------------------------------------- occlusion by the trimaps


def pet_box(region: np.ndarray) -> np.ndarray:
    """The pet region's bounding box as a mask (empty if there is no pet)."""
    box = np.zeros_like(region, dtype=bool)
    rows, cols = np.nonzero(region)
    if len(rows):
        box[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] = True
    return box


def occluded(images: np.ndarray, masks: np.ndarray, what: str, fill: int) -> np.ndarray:
    """``images`` with ``what`` greyed out: ``background`` (pet and border kept), ``pet`` (pet
    and border) or ``pet_box`` (the pet's bounding box)."""
    out = np.array(images, dtype=np.uint8, copy=True)
    for i, mask in enumerate(masks):
        region = pet_region(mask)
        if what == "background":
            hide = ~region  # the trimap's background class: pet_region is every other class
        elif what == "pet":
            hide = region
        elif what == "pet_box":
            hide = pet_box(region)
        else:
            raise ValueError(f"cannot grey out {what!r}: expected background, pet or pet_box")
        out[i][hide] = fill
    return out


def occlusion_accuracy(
    score: ScoreFn, images: np.ndarray, masks: np.ndarray, labels: np.ndarray, fill: int
) -> dict:
    """Accuracy (P(dog) >= 0.5 is dog) on the images as they are and with each part greyed out."""
    labels = np.asarray(labels).astype(np.int64)
    result: dict = {"images": len(labels)}
    variants = {"nothing_greyed": np.asarray(images)}
    for what in ("background", "pet", "pet_box"):
        variants[f"{what}_greyed"] = occluded(images, masks, what, fill)
    for name, batch in variants.items():
        predicted = (score(batch) >= 0.5).astype(np.int64)
        result[name] = float((predicted == labels).mean()) if len(labels) else float("nan")
    return result
