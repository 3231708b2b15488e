"""The visualize section's tables for report.html, read at a glance: where the classifier looks
(the default method beside the book's Grad-CAM, and block by block), how faithful the maps are,
what survives randomization (with a plain warning), and where the segmentation model fails."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence

from petvision.core.tasks import Task

WARNING_STYLE = "background:#fff3cd;border:1px solid #e0b000;padding:.5em;font-weight:bold"


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if math.isfinite(value) else "n/a"
    return "n/a" if value is None else html.escape(str(value))


def _ratio(a: object, b: object) -> float | None:
    """a / b, or None (n/a) where either is missing (NaN is written as null) or b is 0."""
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b > 0:
        return a / b
    return None


def table(header: Sequence[str], rows: Sequence[Sequence[object]], caption: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    title = f"<h3>{html.escape(caption)}</h3>" if caption else ""
    return f"{title}<table><tr>{head}</tr>{body}</table>"


def where_the_classifier_looks(metrics: Mapping) -> str:
    loc, book = metrics["localization"], metrics["gradcam"]
    rows = [
        [
            f"default: {loc['method']} at {loc['layers']}",
            loc["heat_on_pet"],
            loc["heat_ratio"],
            loc["pointing_game"],
        ],
        [
            f"the book's: Grad-CAM at {book['layer']}",
            book["heat_on_pet"],
            book.get("heat_ratio"),
            book["pointing_game"],
        ],
        ["chance (the pet's share of the image)", loc["pet_area"], 1.0, loc["pet_area"]],
    ]
    return table(
        ["map", "heat on pet", "x the pet's area", "pointing game"],
        rows,
        f"Where the classifier looks ({loc['images']} test images)",
    )


def by_outline_distance(metrics: Mapping) -> str:
    """The default maps' heat, band by band from deep inside the pet to far outside it."""
    outline = metrics["localization"].get("outline")
    if not outline:
        return ""
    rows = [
        [
            name.replace("_", " "),
            b["heat"],
            b["area"],
            _ratio(b["heat"], b["area"]),
        ]
        for name, b in outline["bands"].items()
    ]
    note = (
        f"<p>A map that were exactly the outline, {outline['outline_band_px']} pixels either "
        f"side of it, would put {_cell(outline['outline_band_ratio'])}x the pet's area share of "
        "its heat on the pet.</p>"
    )
    return (
        table(
            ["pixels from the pet's outline", "share of the heat", "share of the image", "ratio"],
            rows,
            "Heat of the default map by distance to the outline of the pet",
        )
        + note
    )


def per_layer(metrics: Mapping) -> str:
    layers = metrics["layers"]
    methods = (
        [k for k in next(iter(layers.values())) if k not in ("map_size", "stride")]
        if layers
        else []
    )
    header = ["block output", "map", "px per cell"]
    for method in methods:
        header += [f"{method}: heat on pet", f"{method}: x area", f"{method}: pointing"]
    rows = []
    for layer, row in layers.items():
        cells: list[object] = [layer, f"{row['map_size']}x{row['map_size']}", row["stride"]]
        for method in methods:
            cells += [
                row[method]["heat_on_pet"],
                row[method]["heat_ratio"],
                row[method]["pointing_game"],
            ]
        rows.append(cells)
    images = metrics["localization"].get("per_layer_images", "")
    return table(
        header,
        rows,
        f"Localization of every block's output, shallow to deep ({images} test images)",
    )


def faithfulness(metrics: Mapping) -> str:
    f = metrics["faithfulness"]
    rows = [[name, f["deletion_auc"][name], f["insertion_auc"][name]] for name in f["deletion_auc"]]
    occ = f["occlusion"]
    occlusion = [[k.replace("_", " "), v] for k, v in occ.items() if k != "images"]
    return table(
        ["pixel order", "deletion AUC (lower is better)", "insertion AUC (higher is better)"],
        rows,
        f"Deletion and insertion ({f['images']} test images, {f['steps']} steps)",
    ) + table(
        ["what is greyed out", "test accuracy"],
        occlusion,
        f"Occlusion by the trimaps ({occ['images']} test images)",
    )


def sanity_check(metrics: Mapping) -> str:
    s = metrics["sanity"]
    if not s.get("images"):
        return ""
    names = list(s["rank_correlation"])
    steps = list(s["rank_correlation"][names[0]]) if names else []
    rows = [
        [step.split("_", 1)[1], *(s["rank_correlation"][n][step] for n in names)] for step in steps
    ]
    verdict = sanity_warnings(metrics) or (
        "<p>Every map loses its rank correlation with the trained model's maps once the weights "
        "are random: "
        "the maps depend on what the classifier learned.</p>"
    )
    return (
        table(
            ["randomized down to", *(f"{n}: rank correlation" for n in names)],
            rows,
            f"Sanity check: cascading randomization ({s['images']} test images)",
        )
        + verdict
    )


def sanity_warnings(metrics: Mapping) -> str:
    """A plain warning for each method whose maps survive randomization; "" if none does."""
    s = metrics.get("sanity", {})
    return "".join(
        f"<p style='{WARNING_STYLE}'>Warning: the {html.escape(n)} maps survive randomization: "
        f"with every weight random they keep a rank correlation of at least "
        f"{s['max_correlation']:.2f} with the trained model's. They show the image's structure, "
        f"not what the classifier learned; do not read them as explanations.</p>"
        for n, hit in s.get("survives_randomization", {}).items()
        if hit
    )


def segmentation(metrics: Mapping) -> str:
    seg = metrics[Task.segmentation]
    if "iou_by_class" not in seg:
        return ""
    by_size = [
        [name, b["images"], b["pet_area"], b["mean_pet_iou"], b["border_iou"]]
        for name, b in seg["by_pet_size"].items()
    ]
    return (
        table(["class", "IoU"], list(seg["iou_by_class"].items()), "Segmentation: IoU per class")
        + table(
            ["pet size", "images", "mean pet share", "mean pet IoU", "border IoU"],
            by_size,
            "Segmentation by pet size",
        )
        + table(
            ["error", "share of all pixels"],
            [[k.replace("_", " "), v] for k, v in seg["error_share"].items()],
            "Segmentation errors by kind",
        )
    )


def visualize_section(metrics: Mapping) -> str:
    """All of the above, for what the metrics hold (the ImageNet option has none of it)."""
    if "localization" not in metrics:
        return segmentation(metrics)
    return (
        sanity_warnings(metrics)
        + where_the_classifier_looks(metrics)
        + by_outline_distance(metrics)
        + per_layer(metrics)
        + faithfulness(metrics)
        + sanity_check(metrics)
        + segmentation(metrics)
    )
