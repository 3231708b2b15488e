"""Pixels from numbers: the book's displays of activations, filter patterns and Grad-CAM
heatmaps, and the segmentation masks and errors drawn on their images. Arrays in, uint8 images
out; :mod:`.pictures` saves them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from PIL import Image

# Overlay colours per mask value: pet, background (left as it is), border.
MASK_COLOURS = {0: (255, 140, 0), 2: (255, 255, 0)}
# The segmentation model's errors by kind (petvision.interpret.methods.segmentation.error_kinds).
ERROR_COLOURS = {
    "pet_missed": (230, 30, 30),
    "pet_invented": (40, 90, 255),
    "border_confused": (255, 230, 0),
}

# --------------------------------------------------------------------------- activations (9.4.1)


def normalize_channel(channel: np.ndarray) -> np.ndarray:
    """The book's display of one channel as uint8: (x - mean) / std * 64 + 128, clipped.

    An all-zero channel (a ReLU that never fired) stays blank (0), as in the book; a constant
    non-zero one has no deviation to show and sits at the middle grey level, 128.
    """
    x = np.asarray(channel, dtype=np.float64)
    if not x.any():
        return np.zeros(x.shape, dtype=np.uint8)
    std = x.std()
    if std == 0:
        return np.full(x.shape, 128, dtype=np.uint8)
    return np.clip((x - x.mean()) / std * 64 + 128, 0, 255).astype(np.uint8)


def activation_grid(
    activation: np.ndarray, images_per_row: int = 16, cell: int | None = None
) -> np.ndarray:
    """Every channel of an ``(H, W, C)`` activation, ``images_per_row`` across, 1-pixel gaps.

    Unlike the book (``n_features // images_per_row`` rows), a last partial row is kept, so
    every channel is drawn; cells past the last channel stay blank. ``cell`` draws each channel
    at ``cell`` x ``cell`` pixels (the book's figure gives every channel the same size too, one
    inch, whatever the layer's resolution): small maps are enlarged pixel for pixel, large ones
    reduced by averaging.
    """
    h, w, channels = activation.shape
    ch, cw = (cell, cell) if cell else (h, w)
    per_row = min(images_per_row, channels)
    rows = -(-channels // per_row)
    grid = np.zeros((rows * (ch + 1) - 1, per_row * (cw + 1) - 1), dtype=np.uint8)
    for c in range(channels):
        r, col = divmod(c, per_row)
        tile = normalize_channel(activation[..., c])
        if (ch, cw) != (h, w):
            tile = _resize(tile, ch, cw)
        grid[r * (ch + 1) : r * (ch + 1) + ch, col * (cw + 1) : col * (cw + 1) + cw] = tile
    return grid


def _resize(tile: np.ndarray, h: int, w: int) -> np.ndarray:
    resample = Image.Resampling.NEAREST if h >= tile.shape[0] else Image.Resampling.BOX
    return np.asarray(Image.fromarray(tile).resize((w, h), resample))


# --------------------------------------------------------------------------- filter patterns (9.4.2)


def deprocess(image: np.ndarray, crop: int = 25) -> np.ndarray:
    """The book's ``deprocess_image``: normalize the whole image, clip to uint8, crop the borders."""
    x = np.asarray(image, dtype=np.float64)
    x = x - x.mean()
    std = x.std()
    x = x / std if std > 0 else x
    x = np.clip(x * 64 + 128, 0, 255).astype(np.uint8)
    if crop and x.shape[0] > 2 * crop and x.shape[1] > 2 * crop:
        x = x[crop:-crop, crop:-crop]
    return x


def stitch(tiles: Sequence[np.ndarray], margin: int = 5, columns: int | None = None) -> np.ndarray:
    """Tiles of one size in a grid (``columns`` across, square by default) with black margins."""
    n = len(tiles)
    if n == 0:
        return np.zeros((1, 1, 3), dtype=np.uint8)
    columns = columns or int(np.ceil(np.sqrt(n)))
    rows = -(-n // columns)
    h, w = tiles[0].shape[:2]
    grid = np.zeros(
        (rows * h + (rows - 1) * margin, columns * w + (columns - 1) * margin, 3), dtype=np.uint8
    )
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        grid[r * (h + margin) : r * (h + margin) + h, c * (w + margin) : c * (w + margin) + w] = (
            tile
        )
    return grid


# --------------------------------------------------------------------------- heatmaps (9.4.3)


def jet_overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """The book's superimposed image: the heatmap in "jet", resized to the image, added at
    ``alpha`` to the image and the sum rescaled to 0..255 (as ``keras.utils.array_to_img`` does)."""
    image = np.asarray(image, dtype=np.float32)
    levels = np.uint8(255 * np.clip(heatmap, 0, 1))
    jet = colormaps["jet"](np.arange(256))[:, :3].astype(np.float32)
    small = Image.fromarray(np.uint8(jet[levels] * 255))
    colored = np.asarray(
        small.resize((image.shape[1], image.shape[0]), Image.Resampling.BICUBIC), np.float32
    )
    blend = colored * alpha + image
    blend -= blend.min()
    top = blend.max()
    return (blend / top * 255 if top > 0 else blend).astype(np.uint8)


# --------------------------------------------------------------------------- segmentation


def mask_overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The image with the pet in orange and the border in yellow, blended at ``alpha``."""
    image = np.asarray(image, dtype=np.float32)
    mask = np.asarray(mask)
    mask = mask[..., 0] if mask.ndim == 3 else mask
    out = image.copy()
    for value, colour in MASK_COLOURS.items():
        where = mask == value
        out[where] = (1 - alpha) * image[where] + alpha * np.asarray(colour, np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


def error_picture(image: np.ndarray, kinds: Mapping[str, np.ndarray]) -> np.ndarray:
    """The image dimmed to grey where the prediction is right, each kind of error (boolean maps
    by name, :func:`petvision.interpret.methods.segmentation.error_kinds`) in its colour."""
    image = np.asarray(image, dtype=np.float32)
    grey = image.mean(axis=-1, keepdims=True) * 0.6 + 40
    out = np.repeat(grey, 3, axis=-1)
    for name, where in kinds.items():
        out[where] = ERROR_COLOURS[name]
    return np.clip(out, 0, 255).astype(np.uint8)
