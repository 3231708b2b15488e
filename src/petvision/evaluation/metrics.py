"""Metrics: the Keras metrics tracked every epoch, and plain NumPy scores for final evaluation.

Segmentation classes are the trimap values minus one: 0 = pet (the foreground), 1 = background,
2 = border. The headline is the pet IoU, as in the book's 3rd edition
(``keras.metrics.IoU(num_classes=3, target_class_ids=(0,))``).
"""

from __future__ import annotations

import keras
import numpy as np

SEGMENTATION_CLASSES = ("pet", "background", "border")
PET = 0


def segmentation_metrics(num_classes: int = 3) -> list[keras.metrics.Metric]:
    """Pixel accuracy, IoU per class, mean IoU; for every epoch, train and validation."""
    names = (
        SEGMENTATION_CLASSES if num_classes == 3 else tuple(f"class{c}" for c in range(num_classes))
    )
    per_class = [
        keras.metrics.IoU(
            num_classes=num_classes,
            target_class_ids=[c],
            sparse_y_true=True,
            sparse_y_pred=False,
            name=f"{names[c]}_iou",
        )
        for c in range(num_classes)
    ]
    return [
        keras.metrics.SparseCategoricalAccuracy(name="pixel_accuracy"),
        *per_class,
        keras.metrics.MeanIoU(
            num_classes=num_classes, sparse_y_true=True, sparse_y_pred=False, name="mean_iou"
        ),
    ]


def classification_metrics() -> list[keras.metrics.Metric]:
    return [keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")]


# --------------------------------------------------------------------------- NumPy scores


def confusion(true: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts ``[true, pred]``."""
    idx = true.astype(np.int64).ravel() * num_classes + pred.astype(np.int64).ravel()
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_from_confusion(cm: np.ndarray) -> np.ndarray:
    """IoU per class; NaN where a class is absent from both truth and prediction."""
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def per_image_iou(true_masks: np.ndarray, pred_masks: np.ndarray, cls: int = PET) -> np.ndarray:
    """IoU of one class for each image of a batch ``(N, H, W[, 1])``."""
    t = true_masks.reshape(len(true_masks), -1) == cls
    p = pred_masks.reshape(len(pred_masks), -1) == cls
    inter = (t & p).sum(1)
    union = (t | p).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 1.0)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties)."""
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    pos, neg = labels.sum(), (~labels).sum()
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    # Average the ranks of tied scores.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[labels].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def binary_report(
    labels: np.ndarray,
    probabilities: np.ndarray,
    class_names=("cat", "dog"),
    threshold: float = 0.5,
) -> dict:
    """Accuracy, ROC AUC, precision and recall per class, and the confusion matrix."""
    labels = np.asarray(labels).astype(np.int64).ravel()
    pred = (np.asarray(probabilities).ravel() >= threshold).astype(np.int64)
    cm = confusion(labels, pred, 2)
    report: dict = {
        "accuracy": float((pred == labels).mean()),
        "roc_auc": roc_auc(labels, probabilities),
        "confusion_matrix": cm.tolist(),
    }
    for c, name in enumerate(class_names):
        predicted, actual = cm[:, c].sum(), cm[c, :].sum()
        report[f"precision_{name}"] = float(cm[c, c] / predicted) if predicted else 0.0
        report[f"recall_{name}"] = float(cm[c, c] / actual) if actual else 0.0
    return report
