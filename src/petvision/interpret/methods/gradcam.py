"""Class activation maps: where in the image the evidence for a class lies, at any layer.

The book's recipe, Grad-CAM (chapter 9.4.3; Selvaraju et al. 2017), is the default: take the last
convolutional feature map; the gradient of the class score with respect to it; average the
gradient over the spatial axes to weight each channel; weighted mean over the channels; ReLU;
divide by the maximum. (The book then colours the map with "jet" and overlays it at 0.4 on the
image: :func:`petvision.render.images.jet_overlay`.)

The other recipes are options of the same computation, from the same feature maps A (h, w, C) and
gradients G: each weighs A by G, takes the ReLU of the sum over channels and divides by the
maximum.

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

At a shallow layer Grad-CAM's mean over a large map washes out: most channels respond to edges
everywhere, and their weight says nothing about *where* the evidence is; hence the other recipes
and the per-layer measures of :mod:`.localization`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import keras
import numpy as np
from keras import ops

from petvision.interpret.methods.gradients import value_and_grad

METHODS = ("gradcam", "gradcam_pp", "hirescam", "layercam")


@dataclass
class GradCamModel:
    """A classifier split at the target layer: image -> feature map -> input of the output layer."""

    features: keras.Model
    head: keras.Model
    output: keras.layers.Dense
    preprocess: Callable[[np.ndarray], np.ndarray]
    layer_name: str

    @property
    def activation(self) -> str:
        return keras.activations.serialize(self.output.activation)

    def logits(self, head_inputs):
        """The output layer's pre-activation, in float32."""
        kernel = ops.cast(self.output.kernel, "float32")
        z = ops.matmul(ops.cast(head_inputs, "float32"), kernel)
        if self.output.use_bias:
            z = z + ops.cast(self.output.bias, "float32")
        return z

    def class_scores(self, logits, classes: np.ndarray):
        """The score of ``classes[i]`` for image ``i``.

        Sigmoid (one unit, P(dog)): the logit z for class 1 (dog) and -z for class 0 (cat). p and
        1 - p would give the same heatmaps: d p = p(1-p) dz, a positive factor per image that the
        division by the maximum removes; but p(1-p) underflows to 0 for a confident prediction
        and leaves a blank heatmap, which the logit never does. So the two classes' heatmaps are
        the positive and the negative part of one weighted map.
        Softmax (ImageNet Xception): the top class's probability, exactly as the book does.
        """
        classes = ops.convert_to_tensor(np.asarray(classes, dtype="int32"))
        if self.activation == "sigmoid" and self.output.units == 1:
            z = logits[:, 0]
            return ops.where(ops.equal(classes, 1), z, -z)
        if self.activation == "softmax":
            logits = ops.softmax(logits, axis=-1)
        return ops.sum(logits * ops.one_hot(classes, self.output.units), axis=-1)


def split_model(
    model: keras.Model,
    layer_name: str,
    output_layer: str | None = None,
    preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
) -> GradCamModel:
    """Split ``model`` at ``layer_name``; the output layer (a Dense) is ``output_layer`` or the last.
    The layer must cut the network in two (a block's output does)."""
    target = model.get_layer(layer_name)
    dense = model.get_layer(output_layer) if output_layer else model.layers[-1]
    if not isinstance(dense, keras.layers.Dense):
        raise ValueError(
            f"{model.name}: the output layer {dense.name!r} is a {type(dense).__name__}, not a Dense"
        )
    return GradCamModel(
        features=keras.Model(model.inputs[0], target.output),
        head=keras.Model(target.output, dense.input),
        output=dense,
        preprocess=preprocess or (lambda images: np.asarray(images, dtype=np.float32)),
        layer_name=layer_name,
    )


class Decision(NamedTuple):
    """What the classifier decided for each image of a batch, from its output layer's logits."""

    predicted: np.ndarray  # (N,) the predicted class
    runner_up: np.ndarray  # (N,) the class it ranked second (for a sigmoid, the other class)
    probability: np.ndarray  # (N,) float32: P(dog) for a sigmoid, the top class's for a softmax


def decide(logits: np.ndarray, activation: str) -> Decision:
    """The decision from the output layer's logits: for a sigmoid, P(dog) and the other of the
    two classes; otherwise the top class's probability."""
    logits = np.asarray(logits, dtype=np.float64)
    if activation == "sigmoid" and logits.shape[-1] == 1:
        z = logits[:, 0]
        predicted = (z >= 0).astype(np.int64)
        return Decision(predicted, 1 - predicted, (1.0 / (1.0 + np.exp(-z))).astype(np.float32))
    order = np.argsort(-logits, axis=-1, kind="stable")
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return Decision(order[:, 0], order[:, 1], probs.max(-1).astype(np.float32))


# --------------------------------------------------------------------------- the maps


def normalized(heat: np.ndarray) -> np.ndarray:
    """ReLU, then each map ``(N, h, w)`` divided by its maximum, as float32; a map with no
    positive value stays all zero rather than dividing by zero. (Dividing in float64 and rounding
    once to float32 gives the very float32 quotient, so float32 maps come out as a float32
    division would give them.)"""
    heat = np.maximum(np.asarray(heat, dtype=np.float64), 0)
    peak = heat.max(axis=(1, 2), keepdims=True)
    return np.where(peak > 0, heat / np.where(peak > 0, peak, 1), 0).astype(np.float32)


def class_map(method: str, fmap: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """The ``method``'s maps ``(N, h, w)`` in [0, 1] from feature maps and gradients, both
    ``(N, h, w, C)``, computed in their precision (:func:`heatmaps` keeps the network's float32,
    the book's arithmetic; :func:`layer_maps` works in float64)."""
    if method == "gradcam":
        weights = grads.mean(axis=(1, 2), keepdims=True)
        return normalized((fmap * weights).mean(axis=-1))
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


def check_methods(methods: Sequence[str]) -> None:
    for method in methods:
        if method not in METHODS:
            raise ValueError(
                f"unknown class activation map method {method!r}: "
                f"expected one of {', '.join(METHODS)}"
            )


@dataclass
class Pass:
    """One batch through a split model: its feature maps and the gradient of the explained
    classes' scores with respect to them (both ``(n, h, w, C)``), and the classes."""

    fmap: np.ndarray  # float32
    grads: np.ndarray
    classes: np.ndarray
    decision: Decision | None  # None where it was not needed


def passes(
    cam: GradCamModel,
    images: np.ndarray,
    classes: np.ndarray | str,
    batch_size: int,
    need_decision: bool = True,
) -> Iterator[Pass]:
    """Forward and backward, batch by batch: ``classes`` is ``"predicted"``, ``"other"`` (the
    runner-up) or one class per image. The decision (a forward pass of the head) is left out when
    the classes are given and ``need_decision`` is False."""
    for start in range(0, len(images), batch_size):
        x = cam.preprocess(np.asarray(images[start : start + batch_size]))
        fmap = cam.features(x, training=False)
        decision = None
        if isinstance(classes, str) or need_decision:
            logits = ops.convert_to_numpy(cam.logits(cam.head(fmap, training=False)))
            decision = decide(logits, cam.activation)
        if isinstance(classes, str):
            assert decision is not None
            chosen = decision.predicted if classes == "predicted" else decision.runner_up
        else:
            chosen = np.asarray(classes[start : start + batch_size])

        # Each image's score depends on its own feature map only, so the gradient of the sum
        # is every image's own gradient.
        def total_score(f, chosen=chosen):
            return ops.sum(cam.class_scores(cam.logits(cam.head(f, training=False)), chosen))

        _, grads = value_and_grad(total_score)(fmap)
        yield Pass(ops.convert_to_numpy(ops.cast(fmap, "float32")), grads, chosen, decision)


@dataclass
class GradCamResult:
    heatmaps: np.ndarray  # (N, h, w) float32 in [0, 1], at the feature map's size
    classes: np.ndarray  # (N,) the class each heatmap explains
    predicted: np.ndarray  # (N,) the predicted class
    probabilities: (
        np.ndarray
    )  # (N,) P(dog) for a sigmoid, the top class's probability for a softmax


def heatmaps(
    cam: GradCamModel,
    images: np.ndarray,
    classes: np.ndarray | str = "predicted",
    batch_size: int = 32,
    method: str = "gradcam",
) -> GradCamResult:
    """Heatmaps for ``images`` (uint8) at ``cam``'s layer, for the predicted class, the other
    class (``classes="other"``) or given classes; by the book's Grad-CAM or another ``method``."""
    check_methods([method])
    out_maps, out_classes, out_pred, out_prob = [], [], [], []
    for one in passes(cam, images, classes, batch_size):
        assert one.decision is not None
        out_maps.append(class_map(method, one.fmap, one.grads))
        out_classes.append(one.classes)
        out_pred.append(one.decision.predicted)
        out_prob.append(one.decision.probability)
    return GradCamResult(
        np.concatenate(out_maps),
        np.concatenate(out_classes),
        np.concatenate(out_pred),
        np.concatenate(out_prob),
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
    ``classes`` (default: the predicted class at the first layer, kept for the others), in
    float64. Each layer must cut the network in two, as :func:`split_model` needs."""
    check_methods(methods)
    out: dict[str, dict[str, list[np.ndarray]]] = {
        layer: {m: [] for m in methods} for layer in layers
    }
    chosen: list[np.ndarray] = []
    predicted: list[np.ndarray] = []
    probabilities: list[np.ndarray] = []
    for i, layer in enumerate(layers):
        cam = split_model(model, layer, output_layer)
        first = i == 0
        explained: np.ndarray | str = (
            ("predicted" if classes is None else classes) if first else np.concatenate(chosen)
        )
        for one in passes(cam, images, explained, batch_size, need_decision=first):
            if first:
                assert one.decision is not None
                chosen.append(one.classes)
                predicted.append(one.decision.predicted)
                probabilities.append(one.decision.probability)
            fmap, grads = one.fmap.astype(np.float64), np.asarray(one.grads, dtype=np.float64)
            for method in methods:
                out[layer][method].append(class_map(method, fmap, grads))
    empty = np.zeros(0, np.int64)
    return LayerMaps(
        maps={
            layer: {m: np.concatenate(parts) for m, parts in by_method.items()}
            for layer, by_method in out.items()
        },
        classes=np.concatenate(chosen) if chosen else empty,
        predicted=np.concatenate(predicted) if predicted else empty,
        probabilities=np.concatenate(probabilities) if probabilities else np.zeros(0, np.float32),
    )
