"""The visualize stage's charts, from its measures: localization by depth, heat by distance to
the pet's outline, deletion and insertion curves, segmentation IoU by class and pet size. Each
saved atomically by :func:`.plots.save`. (Its grids of images are :func:`.pictures.panel_grid`.)"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from petvision.render import plots

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
