"""The visualize stage's figures, from its measures and maps.

Charts, each saved atomically by :func:`.plots.save`: localization by depth, heat by distance to
the pet's outline, deletion and insertion curves, segmentation IoU by class and pet size.

Grids of images, drawn by :func:`.pictures.panel_grid`: Grad-CAM on test images, the maps of
every block, the randomization cascade, segmentation samples and errors by kind. Which image,
map and caption goes in which panel is decided here; the measures in the captions (where a map's
heat lies, a segmentation's IoU and errors) are computed by the caller and handed in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from petvision.render import plots
from petvision.render.images import error_picture, jet_overlay, mask_overlay
from petvision.render.pictures import Panel, Row, panel_grid

plt = plots.plt


def localization_by_depth(
    rows: Sequence[Mapping], methods: Sequence[str], pet_area: float, path: Path
) -> Path:
    """Heat on the pet (as a multiple of the pet's area) and pointing game per block, per method."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), layout="constrained")
    labels = [f"{r['layer']}\n{r['map_size']}x{r['map_size']}" for r in rows]
    x = np.arange(len(rows))
    for method in methods:
        axes[0].plot(x, [r[f"{method}_heat_ratio"] for r in rows], "o-", label=method)
        axes[1].plot(x, [r[f"{method}_pointing_game"] for r in rows], "o-", label=method)
    axes[0].axhline(1.0, color="grey", ls="--", lw=1, label="chance (1x)")
    axes[0].axhline(2.0, color="green", ls=":", lw=1, label="target (2x)")
    axes[0].set_ylabel("heat on pet / pet area")
    axes[1].axhline(pet_area, color="grey", ls="--", lw=1, label=f"chance ({pet_area:.2f})")
    axes[1].axhline(0.6, color="green", ls=":", lw=1, label="target (0.60)")
    axes[1].set_ylabel("pointing game")
    axes[1].set_ylim(0, 1)
    for ax in axes:
        ax.set_xticks(x, labels, fontsize=7)
        ax.legend(fontsize=7)
    fig.suptitle("Where the maps of each block put the evidence (deeper to the right)", fontsize=9)
    return plots.save(fig, path)


def heat_by_outline_distance(outline: Mapping, path: Path) -> Path:
    """The default map's share of heat beside the image's share of area, band by band from deep
    inside the pet to far outside, the outline marked between the two middle bands."""
    names = list(outline["bands"])
    heat = [outline["bands"][n]["heat"] for n in names]
    area = [outline["bands"][n]["area"] for n in names]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(7, 3.2), layout="constrained")
    ax.bar(x - 0.2, heat, 0.4, label="share of the heat")
    ax.bar(x + 0.2, area, 0.4, color="lightgrey", label="share of the image")
    ax.axvline(len(names) / 2 - 0.5, color="black", lw=1, ls="--", label="the pet's outline")
    ax.set_xticks(x, [n.replace("_", " ") + " px" for n in names], fontsize=7, rotation=20)
    ax.set_ylabel("share")
    ax.legend(fontsize=7)
    ax.set_title(
        "Where the default map's heat lies: inside the pet (left) to outside (right); a map of "
        f"the outline alone scores {outline['outline_band_ratio']:.2f}x the pet's area",
        fontsize=8,
    )
    return plots.save(fig, path)


def deletion_insertion(curves: Mapping[str, np.ndarray], metrics: Mapping, path: Path) -> Path:
    """Mean deletion and insertion curves per map, the random order dashed, AUCs in the legend."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), layout="constrained")
    fraction = curves["fraction"]
    names = list(metrics["deletion_auc"])
    for ax, kind, better in ((axes[0], "deletion", "lower"), (axes[1], "insertion", "higher")):
        for name in names:
            auc = metrics[f"{kind}_auc"][name]
            ax.plot(
                fraction,
                curves[f"{name}_{kind}"],
                "--" if name == "random" else "-",
                color="grey" if name == "random" else None,
                label=f"{name} (AUC {auc:.3f})",
            )
        ax.set_xlabel(
            f"fraction of pixels {'greyed out' if kind == 'deletion' else 'put back'}, "
            "hottest first"
        )
        ax.set_ylabel("probability of the explained class")
        ax.set_ylim(0, 1.02)
        ax.set_title(
            f"{kind} ({better} area is better), {metrics['images']} test images", fontsize=8
        )
        ax.legend(fontsize=7)
    return plots.save(fig, path)


def iou_breakdown(
    by_class: Mapping[str, float], by_size: Mapping[str, Mapping], path: Path
) -> Path:
    """Bars: IoU per class, and pet and border IoU per pet-size bucket."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3), layout="constrained")
    axes[0].bar(
        list(by_class), [by_class[k] for k in by_class], color=["tab:orange", "tab:grey", "gold"]
    )
    axes[0].set_title("IoU per class (all validation pixels)", fontsize=8)
    names = list(by_size)
    x = np.arange(len(names))
    axes[1].bar(
        x - 0.2, [by_size[n]["mean_pet_iou"] for n in names], 0.4, label="pet IoU (mean per image)"
    )
    axes[1].bar(
        x + 0.2, [by_size[n]["border_iou"] for n in names], 0.4, label="border IoU", color="gold"
    )
    axes[1].set_xticks(x, [f"{n}\n{by_size[n]['images']} images" for n in names], fontsize=7)
    axes[1].set_title("by pet size (share of the image)", fontsize=8)
    axes[1].legend(fontsize=7)
    for ax in axes:
        ax.set_ylim(0, 1)
    return plots.save(fig, path)


# --------------------------------------------------------------------------- grids of images


class Shown(NamedTuple):
    """The images of a grid: uint8 ``(N, H, W, 3)``, a name for each, and each pet's region
    (boolean ``(H, W)``), drawn as a white outline."""

    images: np.ndarray
    names: Sequence[str]
    pets: Sequence[np.ndarray]


class Overlays(NamedTuple):
    """One column of maps laid over the images, the first line of each caption, and where each
    map's heat lies: its share on the pet (NaN for a blank map) and whether its peak is on the
    pet (1.0 or 0.0)."""

    maps: np.ndarray  # (N, h, w) in [0, 1], at any size: jet_overlay resizes them
    titles: Sequence[str]
    on_pet: np.ndarray
    peak_on_pet: np.ndarray


def _on_pet_short(share: float, peak_on_pet: float) -> str:
    if np.isnan(share):
        return "blank"
    return f"{share:.0%} on pet, peak {'on' if peak_on_pet == 1 else 'off'}"


def _on_pet_long(share: float, peak_on_pet: float) -> str:
    if np.isnan(share):
        return "no positive evidence anywhere"
    return f"{share:.0%} of heat on pet, peak {'on' if peak_on_pet == 1 else 'off'} pet"


def _overlay(shown: Shown, column: Overlays, i: int, alpha: float, short: bool) -> Panel:
    where = (_on_pet_short if short else _on_pet_long)(column.on_pet[i], column.peak_on_pet[i])
    return Panel(
        jet_overlay(shown.images[i], column.maps[i], alpha), f"{column.titles[i]}\n{where}"
    )


def gradcam_grid(
    shown: Shown,
    heatmaps: np.ndarray,
    columns: Sequence[Overlays],
    path: Path,
    title: str,
    alpha: float,
) -> Path:
    """Per image: the image with its pet's outline, its heatmap as it is (at the feature map's
    size), then each column's map laid over it."""
    rows = []
    for i in range(len(shown.images)):
        panels = [
            Panel(np.asarray(shown.images[i]), shown.names[i], outline=shown.pets[i]),
            Panel(
                heatmaps[i],
                f"heatmap {heatmaps.shape[1]}x{heatmaps.shape[2]}",
                cmap="jet",
                vmin=0.0,
                vmax=1.0,
            ),
        ]
        panels += [_overlay(shown, column, i, alpha, short=False) for column in columns]
        rows.append(Row(panels))
    return panel_grid(rows, path, title=title)


def map_grid(
    shown: Shown,
    columns: Mapping[str, Sequence[Overlays]],
    path: Path,
    title: str,
    alpha: float,
) -> Path:
    """Rows of maps at the image size: for each image, one row per method of ``columns``
    (method -> its columns), after the image with the pet's outline."""
    rows = []
    for i in range(len(shown.images)):
        for method, by_column in columns.items():
            panels = [
                Panel(
                    np.asarray(shown.images[i]),
                    f"{shown.names[i]}\n{method}",
                    outline=shown.pets[i],
                )
            ]
            panels += [_overlay(shown, column, i, alpha, short=True) for column in by_column]
            rows.append(Row(panels))
    return panel_grid(rows, path, title=title, inches=1.6)


def cascade_grid(
    shown: Shown,
    kept: Mapping[str, Sequence[np.ndarray]],
    steps: Sequence[str],
    path: Path,
    alpha: float,
) -> Path:
    """For each image and method: its map from the trained model, then after each step of the
    cascading randomization (named in ``steps``). The images' names are not shown."""
    rows = []
    for i in range(len(shown.images)):
        for method, stages in kept.items():
            panels = [Panel(np.asarray(shown.images[i]), method, outline=shown.pets[i])]
            for name, maps in zip(["trained", *steps], stages, strict=True):
                panels.append(Panel(jet_overlay(shown.images[i], maps[i], alpha), name))
            rows.append(Row(panels))
    return panel_grid(
        rows,
        path,
        inches=1.3,
        title="Maps as the weights are randomized, top block first (Adebayo et al. 2018)",
    )


class Segmented(NamedTuple):
    """Validation images, their true and predicted masks (0 pet, 1 background, 2 border) and
    each image's pet IoU."""

    images: np.ndarray
    stems: Sequence[str]
    true_masks: np.ndarray
    predicted: np.ndarray
    ious: np.ndarray


def segmentation_grid(seg: Segmented, indices: Sequence[int], path: Path, title: str) -> Path:
    """Per image: the image, its true mask and its predicted mask with the pet IoU."""
    rows = [
        Row(
            [
                Panel(np.asarray(seg.images[i]), seg.stems[i]),
                Panel(mask_overlay(seg.images[i], seg.true_masks[i]), "true mask"),
                Panel(
                    mask_overlay(seg.images[i], seg.predicted[i]),
                    f"predicted: pet IoU {seg.ious[i]:.2f}",
                ),
            ]
        )
        for i in indices
    ]
    return panel_grid(rows, path, title=title)


def failure_modes(
    seg: Segmented,
    indices: Sequence[int],
    kinds: Sequence[Mapping[str, np.ndarray]],
    shares: Sequence[Mapping[str, float]],
    path: Path,
) -> Path:
    """The images at ``indices`` with their errors by kind (``kinds``: boolean maps by name, one
    per index; ``shares``: each kind's share of the image's pixels): red pet missed, blue pet
    invented, yellow border confused."""
    rows = []
    for i, errors, share in zip(indices, kinds, shares, strict=True):
        text = ", ".join(f"{k.replace('_', ' ')} {v:.0%}" for k, v in share.items())
        rows.append(
            Row(
                [
                    Panel(np.asarray(seg.images[i]), f"{seg.stems[i]}: pet IoU {seg.ious[i]:.2f}"),
                    Panel(mask_overlay(seg.images[i], seg.true_masks[i]), "true mask"),
                    Panel(error_picture(seg.images[i], errors), text.replace(", b", "\nb")),
                ]
            )
        )
    return panel_grid(
        rows,
        path,
        title="errors by kind: red pet missed, blue pet invented, yellow border confused",
    )
