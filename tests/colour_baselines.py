"""What colour alone achieves on the generated pets: a per-image colour-histogram species
classifier and a per-pixel colour rule for the pet mask. test_synthetic.py checks that both stay
poor on the generator's output; test_learning.py that the trained models beat them by a margin."""

from __future__ import annotations

import numpy as np

from petvision.data import layout


def _colour_bins(images: np.ndarray, levels: int) -> np.ndarray:
    q = images.astype(np.int64) * levels // 256
    return (q[..., 0] * levels + q[..., 1]) * levels + q[..., 2]


def colour_histogram_accuracy(images: np.ndarray, species: np.ndarray, n_train: int) -> float:
    """Species accuracy on images[n_train:] of nearest-centroid on per-image colour histograms
    (centroids from the first n_train images)."""
    bins = _colour_bins(images, 8).reshape(len(images), -1)
    hist = np.stack([np.bincount(b, minlength=8**3) for b in bins]).astype(float) / bins.shape[1]
    centroids = np.stack(
        [hist[:n_train][species[:n_train] == s].mean(axis=0) for s in (layout.CAT, layout.DOG)]
    )
    distance = ((hist[n_train:, None, :] - centroids[None]) ** 2).sum(axis=-1)
    return float((distance.argmin(axis=1) == species[n_train:]).mean())


def pixel_colour_iou(images: np.ndarray, trimaps: np.ndarray, n_train: int) -> float:
    """Pet IoU on images[n_train:] (border pixels left out) of the best per-colour rule learned on
    the first n_train images."""
    levels = 16
    bins = _colour_bins(images, levels)
    known = trimaps != layout.TRIMAP_BORDER  # the band is "not classified" in the real set
    train_bins, train_pet = (
        bins[:n_train][known[:n_train]],
        (trimaps[:n_train] == layout.TRIMAP_PET)[known[:n_train]],
    )
    pet = np.bincount(train_bins[train_pet], minlength=levels**3).astype(float)
    total = np.bincount(train_bins, minlength=levels**3).astype(float)
    order = np.argsort(-pet / np.maximum(total, 1))
    chosen_pet, chosen_all = np.cumsum(pet[order]), np.cumsum(total[order])
    train_iou = chosen_pet / (pet.sum() + chosen_all - chosen_pet)
    chosen = np.zeros(levels**3, bool)
    chosen[order[: int(train_iou.argmax()) + 1]] = True

    test_known = known[n_train:]
    predicted = chosen[bins[n_train:][test_known]]
    truth = (trimaps[n_train:] == layout.TRIMAP_PET)[test_known]
    return float((predicted & truth).sum() / (predicted | truth).sum())
