"""Intermediate activations: what each convolution and pooling layer makes of one image.

The book's recipe (chapter 9.4.1): a model that outputs every convolution and pooling layer of the
trained network, applied to one image. (Its display, every channel normalized and drawn 16 per
row, is :func:`petvision.render.images.activation_grid`.)
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from keras import layers

from petvision.evaluation import batched

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
    # batched.predict: one compiled program on JAX, where a model called directly runs op by op
    # and compiles each operation on its own (about 110 small compilations for the two models'
    # taps in the tiny visualize stage); on TensorFlow the model is called as before.
    outputs = batched.predict(taps, np.asarray(image)[None])
    if not isinstance(outputs, (list, tuple)):
        outputs = [outputs]
    return {name: np.asarray(out)[0].astype(np.float32) for name, out in zip(layer_names, outputs)}
