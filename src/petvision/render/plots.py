"""Pictures the stages write (and log to MLflow): curves, sample predictions, grids.

Every function draws with matplotlib's Agg backend (no screen needed) and saves atomically, so
a picture that DVC caches is always complete.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from petvision.core.atomic import atomic_file


def save(fig: plt.Figure, path: Path, dpi: int = 100) -> Path:
    path = Path(path)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def mask_to_gray(mask: np.ndarray) -> np.ndarray:
    """The book's display of a 0/1/2 mask: ``mask * 127`` as an 8-bit picture."""
    return (np.asarray(mask)[..., 0] if np.ndim(mask) == 3 else np.asarray(mask)).astype(
        np.uint8
    ) * 127


def learning_curves(history: dict[str, list[float]], path: Path, metric: str, title: str) -> Path:
    """Loss and one headline metric per epoch, train against validation."""
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("loss", metric)):
        if key in history:
            ax.plot(epochs, history[key], "o-", label=f"training {key}")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], "o-", label=f"validation {key}")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    return save(fig, path)


def segmentation_samples(
    images: np.ndarray,
    true_masks: np.ndarray,
    pred_masks: np.ndarray,
    path: Path,
    titles: Sequence[str] = (),
) -> Path:
    """One row per sample: image, true mask, predicted mask."""
    n = len(images)
    fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.5 * n), squeeze=False)
    for i in range(n):
        for ax, picture, label in zip(
            axes[i],
            (images[i], mask_to_gray(true_masks[i]), mask_to_gray(pred_masks[i])),
            ("image", "true mask", "predicted mask"),
        ):
            ax.imshow(picture, cmap=None if picture.ndim == 3 else "gray", vmin=0, vmax=255)
            ax.set_axis_off()
            ax.set_title(
                f"{label}{' - ' + titles[i] if titles and label == 'image' else ''}", fontsize=8
            )
    return save(fig, path)


def confusion_matrix(cm: np.ndarray, class_names: Sequence[str], path: Path, title: str) -> Path:
    cm = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(cm, cmap="Blues")
    for (i, j), count in np.ndenumerate(cm):
        ax.text(
            j,
            i,
            str(count),
            ha="center",
            va="center",
            color="white" if count > cm.max() / 2 else "black",
            fontsize=14,
        )
    ax.set_xticks(range(len(class_names)), class_names)
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return save(fig, path)


def image_grid(
    images: Sequence[np.ndarray],
    titles: Sequence[str],
    path: Path,
    columns: int = 4,
    title: str = "",
) -> Path:
    n = max(len(images), 1)
    rows = (n + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3.2 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, image, label in zip(axes.ravel(), images, titles):
        ax.imshow(image)
        ax.set_title(label, fontsize=8)
    if not len(images):
        axes[0, 0].text(0.5, 0.5, "nothing to show", ha="center", va="center")
    if title:
        fig.suptitle(title)
    return save(fig, path)


def reliability_diagram(diagrams: dict, path: Path, title: str) -> Path:
    """Accuracy against confidence per bin (the diagonal is perfect calibration), one panel per
    ``{label: petvision.evaluation.calibration.Reliability}``; the bars' shading is the bin's
    share of the predictions, the title of each panel its ECE."""
    fig, axes = plt.subplots(1, len(diagrams), figsize=(4.5 * len(diagrams), 4.5), squeeze=False)
    for ax, (label, rel) in zip(axes[0], diagrams.items()):
        width = float(rel.edges[1] - rel.edges[0])
        filled = rel.counts > 0
        share = rel.counts / max(int(rel.counts.sum()), 1)
        ax.bar(
            rel.edges[:-1][filled],
            rel.accuracy[filled],
            width=width,
            align="edge",
            color=plt.cm.Blues(0.3 + 0.7 * share[filled] / max(float(share.max()), 1e-12)),
            edgecolor="black",
            linewidth=0.5,
            label="accuracy in the bin",
        )
        ax.plot(rel.confidence[filled], rel.accuracy[filled], "o", color="tab:orange", ms=4)
        ax.plot([0, 1], [0, 1], "--", color="gray", label="perfectly calibrated")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (probability of the predicted class)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{label}: ECE {rel.ece:.4f}", fontsize=10)
        ax.legend(loc="upper left", fontsize=8)
    fig.suptitle(title)
    return save(fig, path)
