"""Class activation maps at any layer by four recipes, all from one forward and backward pass.

Each recipe weighs a layer's feature maps A (h, w, C) by the gradient G of the class score with
respect to them, takes the ReLU of the weighted sum over channels and divides by the maximum:

- ``gradcam`` (Selvaraju et al. 2017, the book's recipe): one weight per channel, the spatial
  mean of G. At a shallow layer the mean over a large map washes out: most channels respond
  to edges everywhere, and their weight says nothing about *where* the evidence is.
- ``gradcam_pp`` (Chattopadhay et al. 2018): per-channel weights ``sum_ij a_ij ReLU(G_ij)`` with
  ``a = G^2 / (2 G^2 + sum_ab A_ab G^3)``, the paper's closed form for an exponential score.
- ``hirescam`` (Draelos & Carin 2020, "Use HiResCAM instead of Grad-CAM for faithful
  explanations of convolutional neural networks"): no averaging of the gradient at all, the map
  is ``ReLU(sum_c G_c A_c)`` at each location. With a linear head after the last block (global
  pooling or flattening, then one dense unit: all three classifiers here) it is exact there:
  before the ReLU its cells sum to the score minus the bias; at an earlier block it is each
  location's first-order Taylor share of the score.
- ``layercam`` (Jiang et al. 2021, "LayerCAM: exploring hierarchical class activation maps for
  localization"): a weight per position and channel, ``ReLU(G_ij)``, so each location counts
  only the evidence found there; that keeps maps of shallow, high-resolution layers sharp.

The score is the one :class:`~petvision.interpret.gradcam.GradCamModel` defines (the logit of a
sigmoid classifier), so the ``gradcam`` maps here equal :func:`gradcam.heatmaps`' (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

from petvision.interpret import gradcam
from petvision.interpret.gradients import value_and_grad

METHODS = ("gradcam", "gradcam_pp", "hirescam", "layercam")


def normalized(heat: np.ndarray) -> np.ndarray:
    """ReLU, then each map ``(N, h, w)`` divided by its maximum; a map with no positive value
    stays all zero."""
    heat = np.maximum(np.asarray(heat, dtype=np.float64), 0)
    peak = heat.max(axis=(1, 2), keepdims=True)
    return np.where(peak > 0, heat / np.where(peak > 0, peak, 1), 0).astype(np.float32)


def class_map(method: str, fmap: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """The ``method``'s maps ``(N, h, w)`` in [0, 1] from feature maps and gradients, both
    ``(N, h, w, C)``."""
    fmap = np.asarray(fmap, dtype=np.float64)
    grads = np.asarray(grads, dtype=np.float64)
    if method == "gradcam":
        weights = grads.mean(axis=(1, 2), keepdims=True)
        return normalized((fmap * weights).sum(axis=-1))
    if method == "gradcam_pp":
        g2 = grads**2
        denominator = 2 * g2 + fmap.sum(axis=(1, 2), keepdims=True) * grads**3
        alpha = np.where(denominator != 0, g2 / np.where(denominator != 0, denominator, 1), 0)
        weights = (alpha * np.maximum(grads, 0)).sum(axis=(1, 2), keepdims=True)
        return normalized((fmap * weights).sum(axis=-1))
    if method == "hirescam":
        return normalized((grads * fmap).sum(axis=-1))
    if method == "layercam":
        return normalized((np.maximum(grads, 0) * fmap).sum(axis=-1))
    raise ValueError(
        f"unknown class activation map method {method!r}: expected one of {', '.join(METHODS)}"
    )


@dataclass
class LayerMaps:
    """Maps of several layers for the same images and classes."""

    maps: dict[str, dict[str, np.ndarray]]  # layer -> method -> (N, h, w) in [0, 1]
    classes: np.ndarray  # (N,) the class every map explains
    predicted: np.ndarray  # (N,)
    probabilities: np.ndarray  # (N,) P(dog) for a sigmoid classifier


def layer_maps(
    model: keras.Model,
    layers: Sequence[str],
    images: np.ndarray,
    methods: Sequence[str] = METHODS,
    output_layer: str | None = "dog_probability",
    classes: np.ndarray | None = None,
    batch_size: int = 32,
) -> LayerMaps:
    """Every ``method``'s map at every layer in ``layers`` for ``images`` (uint8), explaining
    ``classes`` (default: the predicted class). Each layer must cut the network in two (a block's
    output does), as :func:`gradcam.split_model` needs."""
    for method in methods:
        if method not in METHODS:
            raise ValueError(
                f"unknown class activation map method {method!r}: "
                f"expected one of {', '.join(METHODS)}"
            )
    out: dict[str, dict[str, list[np.ndarray]]] = {
        layer: {m: [] for m in methods} for layer in layers
    }
    chosen_all, predicted_all, prob_all = [], [], []
    for i, layer in enumerate(layers):
        cam = gradcam.split_model(model, layer, output_layer)
        for start in range(0, len(images), batch_size):
            x = cam.preprocess(np.asarray(images[start : start + batch_size]))
            fmap = cam.features(x, training=False)
            if i == 0:
                logits = ops.convert_to_numpy(cam.logits(cam.head(fmap, training=False)))
                predicted, _, probabilities = gradcam.decide(logits, cam.activation)
                chosen = (
                    predicted
                    if classes is None
                    else np.asarray(classes[start : start + batch_size])
                )
                chosen_all.append(chosen)
                predicted_all.append(predicted)
                prob_all.append(probabilities)
            else:
                chosen = chosen_all[start // batch_size]
            # Each image's score depends only on its own feature map: the gradient of the sum is
            # every image's own gradient.
            _, grads = value_and_grad(
                lambda f, c=chosen, m=cam: ops.sum(
                    m.class_scores(m.logits(m.head(f, training=False)), c)
                )
            )(fmap)
            fmap_np = ops.convert_to_numpy(ops.cast(fmap, "float32"))
            for method in methods:
                out[layer][method].append(class_map(method, fmap_np, grads))
    empty = np.zeros(0, np.int64)
    return LayerMaps(
        maps={
            layer: {m: np.concatenate(parts) for m, parts in by_method.items()}
            for layer, by_method in out.items()
        },
        classes=np.concatenate(chosen_all) if chosen_all else empty,
        predicted=np.concatenate(predicted_all) if predicted_all else empty,
        probabilities=np.concatenate(prob_all) if prob_all else np.zeros(0, np.float32),
    )
