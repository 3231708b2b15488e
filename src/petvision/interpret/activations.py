"""Intermediate activations: what each convolution and pooling layer makes of one image.

The book's recipe (chapter 9.4.1): a model that outputs every convolution and pooling layer of the
trained network; for one image, every channel normalized as (x - mean) / std * 64 + 128,
clipped to 0..255 (all-zero channels left blank), drawn 16 per row with 1-pixel gaps.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from keras import layers
from PIL import Image

CONVOLUTIONS = (layers.Conv2D, layers.SeparableConv2D, layers.DepthwiseConv2D)
POOLINGS = (layers.MaxPooling2D, layers.AveragePooling2D)
# The decoder of a segmentation model starts at its first upsampling layer.
UPSAMPLINGS = (layers.Conv2DTranspose, layers.UpSampling2D)


def classifier_layers(model: keras.Model) -> list[str]:
    """Every convolution and (spatial) pooling layer, in the model's order."""
    return [layer.name for layer in model.layers if isinstance(layer, CONVOLUTIONS + POOLINGS)]


def encoder_layers(model: keras.Model) -> list[str]:
    """A segmentation model's encoder: its convolution and pooling layers before the first
    transposed convolution (or upsampling)."""
    names = []
    for layer in model.layers:
        if isinstance(layer, UPSAMPLINGS):
            break
        if isinstance(layer, CONVOLUTIONS + POOLINGS):
            names.append(layer.name)
    return names


def layer_activations(
    model: keras.Model, layer_names: Sequence[str], image: np.ndarray
) -> dict[str, np.ndarray]:
    """``{layer name: (H, W, C) float32}`` for one uint8 image ``(S, S, 3)``, in inference mode."""
    taps = keras.Model(model.inputs[0], [model.get_layer(name).output for name in layer_names])
    outputs = taps(np.asarray(image, dtype=np.float32)[None], training=False)
    if not isinstance(outputs, (list, tuple)):
        outputs = [outputs]
    return {
        name: keras.ops.convert_to_numpy(out)[0].astype(np.float32)
        for name, out in zip(layer_names, outputs)
    }


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
