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

SCORE_BATCH = 64  # images per compiled forward pass of the classifier


class Variants:
    """Images made on demand from their indices, ``make(indices) -> uint8 (k, H, W, C)``: a
    sequence (``len``, slices, ``np.asarray``) of many variants of a few images, of which a scorer
    holds one batch at a time."""

    def __init__(self, count: int, make: Callable[[np.ndarray], np.ndarray]):
        self.count, self.make = count, make

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, where: slice) -> np.ndarray:
        return self.make(np.arange(self.count)[where])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return np.asarray(self[:], dtype=dtype)


ScoreFn = Callable[[np.ndarray | Variants], np.ndarray]  # uint8 (N, H, W, 3) -> P(dog), (N,)


def classifier_scores(model: keras.Model, batch_size: int = SCORE_BATCH) -> ScoreFn:
    """P(dog) of a sigmoid classifier, in inference mode, ``batch_size`` images at a time.
    ``predict_on_batch`` runs Keras's compiled predict step instead of the model eagerly, op by
    op; a short last batch is padded to the others' size, so that the step is compiled for one
    shape however many images each call scores (each image's score depends on it alone). The
    images may be :class:`Variants`: only one batch of them is ever in memory."""

    def score(images: np.ndarray | Variants) -> np.ndarray:
        size = min(batch_size, len(images))
        out = []
        for start in range(0, len(images), batch_size):
            batch = np.asarray(images[start : start + batch_size], np.float32)
            count = len(batch)
            if count < size:
                batch = np.concatenate(
                    [batch, np.zeros((size - count, *batch.shape[1:]), np.float32)]
                )
            out.append(keras.ops.convert_to_numpy(model.predict_on_batch(batch))[:count])
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
    p = all_curves(score, images, np.asarray(orders)[None], classes, steps, fill)
    return p[0, :, 0], p[0, :, 1]


def all_curves(
    score: ScoreFn,
    images: np.ndarray,
    orders: np.ndarray,
    classes: np.ndarray,
    steps: int,
    fill: int,
) -> np.ndarray:
    """:func:`curves` for several orders of the same images (``orders``: ``(K, N, H * W)``), all
    scored in one call: ``(K, N, 2, steps + 1)``, deletion then insertion."""
    images = np.asarray(images, dtype=np.uint8)
    n, h, w, c = images.shape
    k = len(orders)
    source = images.reshape(n, h * w, c)
    # rank[o, i, pixel]: the position of the pixel in order o of image i.
    rank = np.empty((k, n, h * w), np.int64)
    for o in range(k):
        for i in range(n):
            rank[o, i, orders[o][i]] = np.arange(h * w)
    done = counts(h * w, steps)
    points = 2 * (steps + 1)

    def make(indices: np.ndarray) -> np.ndarray:
        order, rest = np.divmod(indices, n * points)
        image, rest = np.divmod(rest, points)
        insertion, step = np.divmod(rest, steps + 1)
        taken = rank[order, image] < done[step][:, None]  # greyed out, or put back
        keep = taken == (insertion == 1)[:, None]
        return np.where(keep[..., None], source[image], np.uint8(fill)).reshape(-1, h, w, c)

    p_dog = score(Variants(k * n * points, make)).reshape(k, n, 2, steps + 1)
    return class_probability(p_dog, np.asarray(classes).reshape(1, n, 1, 1))


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
    ``<name>_insertion``). Every curve is scored in one call."""
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
    found = all_curves(score, images, np.stack(list(orders.values())), classes, steps, fill)
    metrics: dict = {"images": int(n), "steps": int(steps), "deletion_auc": {}, "insertion_auc": {}}
    mean_curves: dict[str, np.ndarray] = {"fraction": np.linspace(0, 1, steps + 1)}
    for name, (deletion, insertion) in zip(orders, found.transpose(0, 2, 1, 3), strict=True):
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


OCCLUSIONS = ("background", "pet", "pet_box")


def hidden(mask: np.ndarray, what: str) -> np.ndarray:
    """The pixels greyed out to hide ``what``: ``background`` (pet and border kept), ``pet`` (pet
    and border) or ``pet_box`` (the pet's bounding box)."""
    region = pet_region(mask)
    if what == "background":
        return ~region  # the trimap's background class: pet_region is every other class
    if what == "pet":
        return region
    if what == "pet_box":
        return pet_box(region)
    raise ValueError(f"cannot grey out {what!r}: expected background, pet or pet_box")


def occluded(images: np.ndarray, masks: np.ndarray, what: str, fill: int) -> np.ndarray:
    """``images`` with ``what`` greyed out (:func:`hidden`)."""
    out = np.array(images, dtype=np.uint8, copy=True)
    for i, mask in enumerate(masks):
        out[i][hidden(mask, what)] = fill
    return out


def occlusion_accuracy(
    score: ScoreFn, images: np.ndarray, masks: np.ndarray, labels: np.ndarray, fill: int
) -> dict:
    """Accuracy (P(dog) >= 0.5 is dog) on the images as they are and with each part greyed out,
    every variant scored in one call."""
    labels = np.asarray(labels).astype(np.int64)
    n = len(labels)

    def make(indices: np.ndarray) -> np.ndarray:
        out = np.array(images[indices % n], dtype=np.uint8, copy=True)
        for j, (kind, i) in enumerate(zip(indices // n, indices % n, strict=True)):
            if kind:
                out[j][hidden(masks[i], OCCLUSIONS[kind - 1])] = fill
        return out

    predicted = (score(Variants((1 + len(OCCLUSIONS)) * n, make)) >= 0.5).astype(np.int64)
    result: dict = {"images": n}
    for kind, name in enumerate(["nothing", *OCCLUSIONS]):
        right = predicted[kind * n : (kind + 1) * n] == labels
        result[f"{name}_greyed"] = float(right.mean()) if n else float("nan")
    return result
