"""The visualize stage's grids of images: which image, map and caption goes in which panel (the
measures in the captions come from the methods; :func:`petvision.render.pictures.panel_grid`
draws the grid). Per-layer maps, the randomization cascade, the segmentation model's errors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from petvision.interpret.methods import localization, segmentation
from petvision.render.images import error_picture, jet_overlay, mask_overlay
from petvision.render.pictures import Panel, Row, panel_grid


def _where(heat: np.ndarray, mask: np.ndarray) -> str:
    region = localization.pet_region(mask)
    share = localization.heat_on_pet(heat, region)
    if np.isnan(share):
        return "blank"
    return f"{share:.0%} on pet, peak {'on' if localization.pointing_hit(heat, region) == 1 else 'off'}"


def map_grid(
    images: np.ndarray,
    masks: np.ndarray,
    stems: Sequence[str],
    columns: Mapping[str, Mapping[str, np.ndarray]],
    path: Path,
    title: str,
    alpha: float,
) -> Path:
    """Rows of maps at the image size: for each image, one row per method of ``columns``
    (method -> column title -> maps ``(N, H, W)``), after the image with the pet's outline."""
    rows = []
    for i in range(len(images)):
        region = localization.pet_region(masks[i])
        for method, by_column in columns.items():
            panels = [Panel(np.asarray(images[i]), f"{stems[i]}\n{method}", outline=region)]
            for name, maps in by_column.items():
                panels.append(
                    Panel(
                        jet_overlay(images[i], maps[i], alpha),
                        f"{name}\n{_where(maps[i], masks[i])}",
                    )
                )
            rows.append(Row(panels))
    return panel_grid(rows, path, title=title, inches=1.6)


def cascade_grid(
    images: np.ndarray,
    masks: np.ndarray,
    kept: Mapping[str, Sequence[np.ndarray]],
    steps: Sequence[str],
    path: Path,
    alpha: float,
) -> Path:
    """For each image and method: its map from the trained model, then after each step of the
    cascading randomization (named in ``steps``)."""
    rows = []
    for i in range(len(images)):
        region = localization.pet_region(masks[i])
        for method, stages in kept.items():
            panels = [Panel(np.asarray(images[i]), method, outline=region)]
            for name, maps in zip(["trained", *steps], stages, strict=True):
                panels.append(Panel(jet_overlay(images[i], maps[i], alpha), name))
            rows.append(Row(panels))
    return panel_grid(
        rows,
        path,
        inches=1.3,
        title="Maps as the weights are randomized, top block first (Adebayo et al. 2018)",
    )


def failure_modes(
    images: np.ndarray,
    true_masks: np.ndarray,
    pred_masks: np.ndarray,
    ious: np.ndarray,
    stems: Sequence[str],
    indices: Sequence[int],
    path: Path,
) -> Path:
    """The given images with their errors by kind (red: pet missed, blue: pet invented, yellow:
    border confused)."""
    rows = []
    for i in indices:
        shares = segmentation.error_shares(true_masks[i], pred_masks[i])
        text = ", ".join(f"{k.replace('_', ' ')} {v:.0%}" for k, v in shares.items())
        rows.append(
            Row(
                [
                    Panel(np.asarray(images[i]), f"{stems[i]}: pet IoU {ious[i]:.2f}"),
                    Panel(mask_overlay(images[i], true_masks[i]), "true mask"),
                    Panel(
                        error_picture(
                            images[i], segmentation.error_kinds(true_masks[i], pred_masks[i])
                        ),
                        text.replace(", b", "\nb"),
                    ),
                ]
            )
        )
    return panel_grid(
        rows,
        path,
        title="errors by kind: red pet missed, blue pet invented, yellow border confused",
    )
