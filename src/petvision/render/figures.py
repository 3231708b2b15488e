"""Pictures of where the classifier looks and how faithful its maps are, and of the segmentation
model's failures: per-layer map grids, localization by depth, deletion and insertion curves, the
randomization cascade, the errors by kind. Each saved atomically, like :mod:`.pictures`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from petvision.interpret.methods import localization, segmentation
from petvision.render import plots
from petvision.render.images import error_picture, jet_overlay, mask_overlay
from petvision.render.pictures import Panel, Row, panel_grid

plt = plots.plt


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
        for method, by_column in columns.items():
            panels = [
                Panel(np.asarray(images[i]), f"{stems[i]}\n{method}", outline=np.asarray(masks[i]))
            ]
            for name, maps in by_column.items():
                panels.append(
                    Panel(
                        jet_overlay(images[i], maps[i], alpha),
                        f"{name}\n{_where(maps[i], masks[i])}",
                    )
                )
            rows.append(Row(panels))
    return panel_grid(rows, path, title=title, inches=1.6)


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
        for method, stages in kept.items():
            panels = [Panel(np.asarray(images[i]), method, outline=np.asarray(masks[i]))]
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
                        error_picture(images[i], true_masks[i], pred_masks[i]),
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
