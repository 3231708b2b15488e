"""Where the maps put the evidence, measured against the pet masks, and the stage's default
localization method.

The measures, per image and averaged: the share of the map's mass on the pet (chance: the pet's
share of the image) and the pointing game (whether the map's peak is on the pet).

A layer's map has one cell per ``stride`` x ``stride`` pixels of the image: the mini-Xception's
last block is 3x3 at 96 px (stride 32), too coarse to say which third of the image the evidence
is in. The default method takes a recipe of :mod:`.gradcam` at the block outputs whose stride
lies in the configured range (pixels of the image per cell, so the choice does not depend on the
input size): by default HiResCAM at stride 8, the mini-Xception's block3 (12x12 at 96 px), where
the measured per-block table of the quick preset localizes best. Several layers in the range are
upsampled to the image and fused by the element-wise maximum, as LayerCAM does (Jiang et al.
2021).

Where the heat lies relative to the pet's outline (:func:`by_outline_distance`) says what the
heat-on-pet ratio can reach: a map whose evidence is the outline itself (on the generated pets
only shape tells the species apart, so it is) puts about half its heat on either side of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import keras
import numpy as np
from PIL import Image

from petvision.core.errors import ConfigError
from petvision.interpret.methods.gradcam import LayerMaps, normalized
from petvision.interpret.methods.segmentation import BACKGROUND

# --------------------------------------------------------------------------- the measures


def upsample(heatmap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A heatmap ``(h, w)`` resized bilinearly to ``(H, W)``."""
    picture = Image.fromarray(np.asarray(heatmap, dtype=np.float32), mode="F")
    return np.asarray(
        picture.resize((size[1], size[0]), Image.Resampling.BILINEAR), dtype=np.float32
    )


def pet_region(mask: np.ndarray) -> np.ndarray:
    """Pixels of the pet: the trimap's pet and border classes (mask values 0 and 2)."""
    mask = np.asarray(mask)
    return (mask[..., 0] if mask.ndim == 3 else mask) != BACKGROUND


def heat_on_pet(heat: np.ndarray, region: np.ndarray) -> float:
    """The share of the heatmap's mass on the pet; NaN for a blank heatmap."""
    total = float(heat.sum())
    return float(heat[region].sum()) / total if total > 0 else float("nan")


def pointing_hit(heat: np.ndarray, region: np.ndarray) -> float:
    """1.0 if the heatmap's peak lies on the pet, 0.0 if not, NaN for a blank heatmap. A peak
    spread over several pixels of equal heat counts as a hit if most of them are on the pet."""
    peak = heat.max()
    if peak <= 0:
        return float("nan")
    at_peak = heat >= peak
    return float(region[at_peak].mean() >= 0.5)


class PerImage(NamedTuple):
    """Localization image by image, each map upsampled to its mask."""

    heat_on_pet: np.ndarray  # (N,) the share of the map's heat on the pet; NaN for a blank map
    pointing: np.ndarray  # (N,) 1.0 where the map's peak is on the pet, 0.0 if not; NaN blank
    pet_area: np.ndarray  # (N,) the pet's share of the image: the chance level of both


def per_image(heatmaps: np.ndarray, masks: np.ndarray) -> PerImage:
    shares, hits, areas = [], [], []
    for heat, mask in zip(heatmaps, masks):
        region = pet_region(mask)
        up = upsample(heat, region.shape)
        shares.append(heat_on_pet(up, region))
        hits.append(pointing_hit(up, region))
        areas.append(float(region.mean()))
    return PerImage(*(np.array(values, dtype=np.float64) for values in (shares, hits, areas)))


def measures(heatmaps: np.ndarray, masks: np.ndarray) -> dict:
    """Localization over images (:func:`per_image`), averaged: mean heat-on-pet share,
    pointing-game hit rate, and the chance level of both (the share of the image the pets cover),
    with the number of images used and how many maps were blank (left out of the two means)."""
    found = per_image(heatmaps, masks)
    return {
        "images": len(found.pet_area),
        "blank_heatmaps": int(np.isnan(found.heat_on_pet).sum()),
        "heat_on_pet": _nanmean(found.heat_on_pet),
        "pointing_game": _nanmean(found.pointing),
        "pet_area": float(np.mean(found.pet_area)) if len(found.pet_area) else float("nan"),
    }


def _nanmean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else float("nan")


def heat_ratio(found: Mapping) -> float:
    """The heat-on-pet ratio to chance of :func:`measures`' result: mean heat share over mean pet
    share (1 is chance, 2 is twice as much heat on the pet as its area)."""
    area = found["pet_area"]
    return found["heat_on_pet"] / area if area > 0 else float("nan")


def scores(maps: np.ndarray, masks: np.ndarray) -> dict:
    """:func:`measures` and :func:`heat_ratio`."""
    result = measures(maps, masks)
    result["heat_ratio"] = heat_ratio(result)
    return result


# --------------------------------------------------------------------------- layers by stride


def stride(model: keras.Model, layer: str) -> int:
    """Pixels of the (square) input per cell of ``layer``'s (square) feature map, rounded to a
    power of two: the downsampling the layer is at, whatever the input size (valid convolutions
    trim a few pixels: the mini-Xception's last block is 3x3 at 96 px and 6x6 at 180 px, both
    stride 32)."""
    size = int(model.inputs[0].shape[1])
    cells = int(model.get_layer(layer).output.shape[1])
    return int(2 ** round(float(np.log2(size / cells))))


def layers_by_stride(
    model: keras.Model, candidates: Sequence[str], min_stride: float, max_stride: float
) -> list[str]:
    """The candidates whose stride lies in ``[min_stride, max_stride]``; if none does, the one
    nearest the range (on a log scale), so that a small input still gets a map."""
    if not candidates:
        raise ConfigError(f"{model.name}: no block outputs to choose the localization layers from")
    strides = {layer: stride(model, layer) for layer in candidates}
    inside = [layer for layer in candidates if min_stride <= strides[layer] <= max_stride]
    if inside:
        return inside

    def distance(layer: str) -> float:
        s = strides[layer]
        return float(np.log(min_stride / s) if s < min_stride else np.log(s / max_stride))

    return [min(candidates, key=distance)]


def upsampled(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Maps ``(N, h, w)`` resized bilinearly to ``(N, H, W)``, each divided by its maximum again."""
    maps = np.asarray(maps, dtype=np.float32)
    if maps.shape[1:] == tuple(size):
        return maps
    up = (
        np.stack([upsample(m, size) for m in maps])
        if len(maps)
        else np.zeros((0, *size), np.float32)
    )
    return normalized(up)  # bilinear weights are not negative: the ReLU in it changes nothing


def fuse(maps: Sequence[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """Several layers' maps of the same images, each ``(N, h_l, w_l)``, upsampled to ``size`` and
    combined by the element-wise maximum: the coarse layer says roughly where, the finer one
    sharpens it, and neither can cancel the other's evidence."""
    if not maps:
        raise ValueError("nothing to fuse")
    return np.max(np.stack([upsampled(m, size) for m in maps]), axis=0)


def per_layer(found: LayerMaps, model: keras.Model, masks: np.ndarray) -> dict[str, dict]:
    """For every layer of ``found``: its map size and stride, and each method's scores."""
    table: dict[str, dict] = {}
    for layer, by_method in found.maps.items():
        row: dict = {
            "map_size": int(model.get_layer(layer).output.shape[1]),
            "stride": stride(model, layer),
        }
        for method, maps in by_method.items():
            s = scores(maps, masks)
            row[method] = {k: s[k] for k in ("heat_on_pet", "heat_ratio", "pointing_game")}
        table[layer] = row
    return table


def default_maps(
    found: LayerMaps, layers: Sequence[str], method: str, size: tuple[int, int]
) -> np.ndarray:
    """The default method's maps at the image size: ``method`` at ``layers``, fused."""
    return fuse([found.maps[layer][method] for layer in layers], size)


def layer_rows(table: Mapping[str, Mapping], methods: Sequence[str]) -> list[dict]:
    """The per-layer table flat, one row per layer in depth order (for a CSV or an HTML table)."""
    rows = []
    for depth, (layer, row) in enumerate(table.items(), start=1):
        flat: dict = {
            "depth": depth,
            "layer": layer,
            "map_size": row["map_size"],
            "stride": row["stride"],
        }
        for method in methods:
            for key, value in row[method].items():
                flat[f"{method}_{key}"] = value
        rows.append(flat)
    return rows


# ------------------------------------------------------------------ heat by distance to the outline

OUTLINE_EDGES = (4, 8, 12)  # pixels from the outline, at the size the maps are scored at
OUTLINE_BAND = OUTLINE_EDGES[0]


def _neighbourhood(region: np.ndarray, combine: np.ufunc) -> np.ndarray:
    """``combine`` (or: grow, and: shrink) over each pixel's 3x3 neighbourhood. The image edge
    repeats its pixels, so a pet cut by the edge gets no outline there."""
    h, w = region.shape
    padded = np.pad(region, 1, mode="edge")
    return combine.reduce([padded[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)])


def outline_distance(region: np.ndarray, limit: int) -> np.ndarray:
    """Signed distance of every pixel to the outline of ``region`` (boolean, the pet), in pixels
    (chessboard): -1 for the pet's own edge pixels, -2 one further in, ...; 1 for background
    pixels touching the pet, 2 one further out, ...; beyond ``limit`` -(limit + 1) inside and
    limit + 1 outside."""
    region = np.asarray(region, dtype=bool)
    distance = np.where(region, -(limit + 1), limit + 1).astype(np.int32)
    grown, kept = region, region
    for k in range(1, limit + 1):
        more, less = _neighbourhood(grown, np.logical_or), _neighbourhood(kept, np.logical_and)
        distance[more & ~grown] = k
        distance[kept & ~less] = -k
        grown, kept = more, less
    return distance


def outline_bands(edges: Sequence[int] = OUTLINE_EDGES) -> list[tuple[str, int, int]]:
    """The bands ``(name, lowest, highest)`` of signed distance, deep inside to far outside."""
    bounds = [0, *edges]
    inner = [(f"inside_{a + 1}_to_{b}", -b, -(a + 1)) for a, b in zip(bounds, bounds[1:])]
    outer = [(f"outside_{a + 1}_to_{b}", a + 1, b) for a, b in zip(bounds, bounds[1:])]
    far = edges[-1]
    return [
        (f"inside_over_{far}", -(far + 1), -(far + 1)),
        *reversed(inner),
        *outer,
        (f"outside_over_{far}", far + 1, far + 1),
    ]


def by_outline_distance(
    maps: np.ndarray, masks: np.ndarray, edges: Sequence[int] = OUTLINE_EDGES
) -> dict:
    """Maps at the image size against the trimaps: per band of distance to the pet's outline
    (:func:`outline_bands`), the mean share of each map's heat and of the image's area in it;
    and ``outline_band_ratio``, the heat-on-pet ratio (as :func:`scores`) that a map which were
    exactly the band of ``OUTLINE_BAND`` pixels either side of the outline would reach. Blank
    maps are left out of the heat shares."""
    bands = outline_bands(edges)
    heat = np.zeros(len(bands))
    area = np.zeros(len(bands))
    outlines, counted = [], 0
    for one, mask in zip(np.asarray(maps, dtype=np.float64), masks):
        region = pet_region(mask)
        if one.shape != region.shape:
            raise ValueError(f"map {one.shape} and trimap {region.shape} differ in size")
        distance = outline_distance(region, edges[-1])
        inside = [(distance >= lo) & (distance <= hi) for _, lo, hi in bands]
        area += [b.mean() for b in inside]
        total = one.sum()
        if total > 0:
            heat += [one[b].sum() / total for b in inside]
            counted += 1
        outlines.append((np.abs(distance) <= OUTLINE_BAND).astype(np.float32))
    n = len(outlines)
    return {
        "bands": {
            name: {
                "heat": float(heat[i] / counted) if counted else float("nan"),
                "area": float(area[i] / n) if n else float("nan"),
            }
            for i, (name, _, _) in enumerate(bands)
        },
        "outline_band_px": OUTLINE_BAND,
        "outline_band_ratio": scores(np.stack(outlines), masks)["heat_ratio"]
        if n
        else float("nan"),
    }
