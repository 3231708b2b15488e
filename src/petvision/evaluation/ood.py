"""Is this photo unlike the training data? A deep nearest-neighbour detector on the model's own
features, fitted on the training and validation splits only.

The method is Sun et al. 2022, "Out-of-distribution detection with deep nearest neighbors"
(ICML): each image is a feature vector scaled to unit length, and its score is the distance to
its k-th nearest neighbour among the training images' vectors; far from every training image
means unlike them. Two changes, both measured (docs/trust.md, "Why not better"):

* the vector of a layer is the mean and the standard deviation of each of its channels over the
  image (Lee et al. 2018, "A simple unified framework for detecting out-of-distribution samples
  and adversarial attacks", pool the same way), so that intermediate layers count, not only the
  penultimate one;
* several layers are scored and their distances summed, each divided by its median on the
  validation split (Lee et al.'s feature ensemble, with equal weights: there is no unlike data
  at training time to fit weights on).

The threshold is a quantile of the validation split's scores (``quantile``, e.g. 0.95: about 5 %
of images like the training data are flagged). The validation images are never in the bank,
so their distances are those of new images. A score says how unlike the *training images* a
photo is, as the model's features see them; it says nothing about whether the answer is right.

Compared on the quick preset's models (docs/trust.md, "Why not better"): the Mahalanobis
distance on pooled features (Lee et al. 2018), the energy score on the logits (Liu et al. 2020),
Gram-matrix deviations (Sastry & Oore 2020) and patch nearest neighbours separated real photos
from the generated test split worse than this.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from petvision.evaluation.metrics import roc_auc

METHOD = "deep k-NN on pooled features (Sun et al. 2022), layers summed (Lee et al. 2018)"


def pool_mean_std(activations: np.ndarray) -> np.ndarray:
    """``(N, H, W, C)`` feature maps -> ``(N, 2C)``: each channel's mean and standard deviation
    over the image; ``(N, C)`` vectors pass through."""
    a = np.asarray(activations, dtype=np.float32)
    if a.ndim == 2:
        return a
    if a.ndim != 4:
        raise ValueError(f"expected (N, H, W, C) feature maps or (N, C) vectors, got {a.shape}")
    return np.concatenate([a.mean(axis=(1, 2)), a.std(axis=(1, 2))], axis=-1)


def unit(vectors: np.ndarray) -> np.ndarray:
    v = np.asarray(vectors, dtype=np.float32)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def kth_distance(queries: np.ndarray, bank: np.ndarray, k: int, chunk: int = 512) -> np.ndarray:
    """Euclidean distance from each unit-length query to its k-th nearest vector of ``bank``."""
    q = unit(queries)
    b = np.asarray(bank, dtype=np.float32)
    if not 1 <= k <= len(b):
        raise ValueError(f"k={k}: must be between 1 and the bank's {len(b)} vectors")
    b2 = (b * b).sum(1)
    out = np.empty(len(q), dtype=np.float64)
    for start in range(0, len(q), chunk):
        part = q[start : start + chunk]
        d2 = (part * part).sum(1)[:, None] - 2.0 * part @ b.T + b2[None, :]
        kth = np.partition(d2, k - 1, axis=1)[:, k - 1]
        out[start : start + chunk] = np.sqrt(np.maximum(kth, 0.0))
    return out


def threshold_at_quantile(scores: np.ndarray, quantile: float) -> float:
    """The validation quantile above which a score is flagged (NumPy's linear interpolation)."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    if not len(s):
        raise ValueError("no validation scores to set the threshold on")
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile={quantile}: must lie strictly between 0 and 1")
    return float(np.quantile(s, quantile))


@dataclass
class Detector:
    """The fitted detector: per layer a bank of unit vectors and the validation median that
    scales its distances; the threshold on the summed score."""

    layers: list[str]
    k: int
    banks: list[np.ndarray]  # per layer, (N_train, D) float16 unit vectors
    scales: list[float]  # per layer, the median validation distance
    threshold: float
    quantile: float

    def layer_scores(self, features: Sequence[np.ndarray]) -> np.ndarray:
        """``(N, layers)`` scaled distances; ``features`` per layer, pooled (:func:`pool_mean_std`)."""
        if len(features) != len(self.layers):
            raise ValueError(f"{len(features)} feature sets for {len(self.layers)} layers")
        return np.stack(
            [
                kth_distance(f, bank, self.k) / scale
                for f, bank, scale in zip(features, self.banks, self.scales)
            ],
            axis=1,
        )

    def score(self, features: Sequence[np.ndarray]) -> np.ndarray:
        return self.layer_scores(features).sum(axis=1)

    def flag(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores) > self.threshold


def fit(
    layers: Sequence[str],
    train_features: Sequence[np.ndarray],
    val_features: Sequence[np.ndarray],
    k: int,
    quantile: float,
) -> tuple[Detector, np.ndarray]:
    """The detector from pooled features per layer of the training split (the banks) and the
    validation split (the scales and the threshold); also the validation scores."""
    banks = [unit(f).astype(np.float16) for f in train_features]
    raw = [kth_distance(v, b, k) for v, b in zip(val_features, banks)]
    scales = [float(max(np.median(r), 1e-12)) for r in raw]
    val_scores = np.sum([r / s for r, s in zip(raw, scales)], axis=0)
    detector = Detector(
        list(layers), k, banks, scales, threshold_at_quantile(val_scores, quantile), quantile
    )
    return detector, val_scores


def detection_report(
    in_scores: np.ndarray, unlike: Mapping[str, np.ndarray], threshold: float
) -> dict[str, Any]:
    """How well the scores tell held-out images of the training kind (``in_scores``) from each
    set of unlike images: AUROC (unlike = positive), the share of each flagged, and the false
    alarms (held-out images flagged)."""
    in_scores = np.asarray(in_scores, dtype=np.float64)
    report: dict[str, Any] = {
        "threshold": float(threshold),
        "false_alarm_rate": float(np.mean(in_scores > threshold)),
        "held_out_images": len(in_scores),
    }
    for name, scores in unlike.items():
        s = np.asarray(scores, dtype=np.float64)
        labels = np.r_[np.zeros(len(in_scores)), np.ones(len(s))]
        report[name] = {
            "images": len(s),
            "auroc": roc_auc(labels, np.r_[in_scores, s]),
            "flagged": float(np.mean(s > threshold)),
        }
    return report


def shuffled_patches(images: np.ndarray, grid: int = 4, seed: int = 0) -> np.ndarray:
    """Each image cut into ``grid`` x ``grid`` tiles put back in a random order: the colours and
    textures stay, the pet's shape does not (the transformation of the measured unlike set)."""
    x = np.asarray(images)
    n, h, w = x.shape[:3]
    th, tw = h // grid, w // grid
    rng = np.random.default_rng(seed)
    out = x.copy()
    for i in range(n):
        tiles = [
            x[i, r * th : (r + 1) * th, c * tw : (c + 1) * tw]
            for r in range(grid)
            for c in range(grid)
        ]
        for slot, source in enumerate(rng.permutation(len(tiles))):
            r, c = divmod(slot, grid)
            out[i, r * th : (r + 1) * th, c * tw : (c + 1) * tw] = tiles[source]
    return out
