"""A model's outputs over many images, batch by batch, compiled once per batch shape on JAX.

Keras on JAX compiles a model's predict step again for every new input shape, and a compilation
costs seconds on a CPU and more on a GPU (the mini-Xception's compilations took about 80 s per
process on an H200). So :func:`batches` (and :func:`predict`, which joins them) give the compiled
step few shapes: full batches, the last one padded to full size with zeros whose outputs are dropped,
and an input shorter than one batch padded only to the next power of two (one served photo does
not pay for a whole batch). A model then compiles at most ``log2(batch_size) + 1`` times per
process, and once for inputs longer than a batch. In inference mode nothing mixes the images of
a batch (batch normalization uses its moving statistics), so the padding changes no image's
outputs beyond float rounding: XLA may order a sum differently for another batch shape.

On TensorFlow the batches run as a Keras model called on a batch runs: op by op, which compiles
nothing, and as this project's callers ran them before (the same numbers).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import keras
import numpy as np

__all__ = ["PREDICT_BATCH", "batches", "padded_size", "predict"]

PREDICT_BATCH = 64


def padded_size(count: int, batch_size: int) -> int:
    """The batch shape that ``count`` images (one call's input) are computed in on JAX."""
    if count >= batch_size:
        return batch_size
    return min(batch_size, 1 << max(count - 1, 0).bit_length())


def _pad(batch: np.ndarray, size: int) -> np.ndarray:
    if len(batch) == size:
        return batch
    padding = np.zeros((size - len(batch), *batch.shape[1:]), batch.dtype)
    return np.concatenate([batch, padding])


def _first_rows(outputs: Any, count: int) -> Any:
    return keras.tree.map_structure(lambda out: out[:count], outputs)


def _compiled(model: keras.Model) -> None:
    if not model.jit_compile:
        # A model never compiled (a probe made over trained layers) resolves jit_compile to False
        # without a word where a layer is marked not compilable; asked for it, Keras says so.
        model.jit_compile = True
        if model.jit_compile:
            model.predict_function = None


def batches(
    model: keras.Model, images: np.ndarray, batch_size: int = PREDICT_BATCH, dtype=np.float32
) -> Iterator[Any]:
    """``model``'s outputs for ``images`` in inference mode, batch by batch: numpy arrays in the
    structure of its outputs (one array, or a list for a model of several outputs), the padding's
    rows left out. Each batch is converted to ``dtype`` on its own (a memory map of uint8 images
    is never read whole), and a caller that reduces each batch never holds all the outputs."""
    on_jax = keras.backend.backend() == "jax"
    if on_jax:
        _compiled(model)
    shape = padded_size(len(images), batch_size)
    for start in range(0, len(images), batch_size):
        batch = np.asarray(images[start : start + batch_size], dtype=dtype)
        if on_jax:
            yield _first_rows(model.predict_on_batch(_pad(batch, shape)), len(batch))
        else:
            outputs = model(batch, training=False)
            yield keras.tree.map_structure(keras.ops.convert_to_numpy, outputs)


def predict(
    model: keras.Model, images: np.ndarray, batch_size: int = PREDICT_BATCH, dtype=np.float32
) -> Any:
    """:func:`batches` put together: ``len(images)`` rows in each of the model's outputs."""
    if len(images) == 0:
        raise ValueError("no images to predict")
    parts = list(batches(model, images, batch_size, dtype))
    return keras.tree.map_structure(lambda *rows: np.concatenate(rows), *parts)
