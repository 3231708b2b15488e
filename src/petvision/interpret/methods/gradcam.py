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

from petvision.interpret.methods.gradients import grads_and_outputs

METHODS = ("gradcam", "gradcam_pp", "hirescam", "layercam")


BATCH_SIZE = 32  # images per forward and backward pass: bounds the memory at any input size
RULES = ("given", "predicted", "other")  # which classes a pass explains (other: the runner-up)


class GradCamModel:
    """A classifier cut at one or more layers, each of which must cut the network in two (a
    block's output does): image -> each layer's feature map in turn -> the input of the output
    layer (a Dense) -> its logits.

    One forward and backward pass gives every layer's feature maps and the gradients of the
    explained classes' scores with respect to them. It is compiled (``tf.function`` /
    ``jax.jit``, :func:`.gradients.grads_and_outputs`, traced once per batch shape) where it
    repeats, which is where that pays: over many batches, or from its second run on. A few
    photos to explain (``predict``) are one run, op by op. The model's weights are arguments of
    the pass: a model whose weights change afterwards (the sanity check randomizes them) is
    explained by the same compiled pass.
    """

    def __init__(
        self,
        model: keras.Model,
        layer_names: Sequence[str],
        output: keras.layers.Dense,
        preprocess: Callable[[np.ndarray], np.ndarray],
    ):
        depth = {layer.name: i for i, layer in enumerate(model.layers)}
        self.model, self.output, self.preprocess = model, output, preprocess
        self.layer_names = list(dict.fromkeys(layer_names))  # the order the results come in
        self.depth_order = sorted(self.layer_names, key=lambda name: depth[name])
        ends = [model.get_layer(name).output for name in self.depth_order]
        starts = [model.inputs[0], *ends[:-1]]
        self.segments = [keras.Model(a, b) for a, b in zip(starts, ends, strict=True)]
        self.head = keras.Model(ends[-1], output.input)
        self._passes: dict[bool, Callable] = {}  # compiled or not -> the pass
        self._zeros: dict[int, list] = {}

    @property
    def layer_name(self) -> str:
        """The deepest layer of the cut (the only one of the book's Grad-CAM)."""
        return self.depth_order[-1]

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

    def class_scores(self, logits, classes):
        """The score of ``classes[i]`` for image ``i``.

        Sigmoid (one unit, P(dog)): the logit z for class 1 (dog) and -z for class 0 (cat). p and
        1 - p would give the same heatmaps: d p = p(1-p) dz, a positive factor per image that the
        division by the maximum removes; but p(1-p) underflows to 0 for a confident prediction
        and leaves a blank heatmap, which the logit never does. So the two classes' heatmaps are
        the positive and the negative part of one weighted map.
        Softmax (ImageNet Xception): the top class's probability, exactly as the book does.
        """
        classes = ops.cast(classes, "int32")
        if self.activation == "sigmoid" and self.output.units == 1:
            z = logits[:, 0]
            return ops.where(ops.equal(classes, 1), z, -z)
        if self.activation == "softmax":
            logits = ops.softmax(logits, axis=-1)
        return ops.sum(logits * ops.one_hot(classes, self.output.units), axis=-1)

    def choose(self, logits, classes, rule):
        """The classes to explain, by ``rule`` (a scalar, the index of one of :data:`RULES`):
        ``classes`` as given, or the predicted class or the runner-up (ties to the lower index,
        as :func:`decide`). A tensor, not a Python value: one compiled pass serves all three."""
        if self.activation == "sigmoid" and self.output.units == 1:
            predicted = ops.cast(ops.greater_equal(logits[:, 0], 0), "int32")
            runner_up = 1 - predicted
        else:
            top = ops.cast(ops.top_k(logits, 2)[1], "int32")
            predicted, runner_up = top[:, 0], top[:, 1]
        rule = ops.cast(rule, "int32")
        decided = ops.where(ops.equal(rule, RULES.index("predicted")), predicted, runner_up)
        return ops.where(ops.equal(rule, RULES.index("given")), ops.cast(classes, "int32"), decided)

    def run(self, images: np.ndarray, classes: np.ndarray, rule: str, repeated: bool = False):
        """One batch forward and backward, explaining the classes that ``rule`` (one of
        :data:`RULES`) names: ``(grads, (feature maps, logits, classes))``, the first two per
        layer in depth order, as NumPy values. Compiled if ``repeated`` (more batches follow), if
        it ran before, or on JAX: there a pass run op by op compiles each of its operations on its
        own (about 220 small compilations in the tiny visualize stage; with this and the maps
        compiled, that stage took 0.75x the CPU time: docs/benchmarks.md)."""
        compiled = repeated or bool(self._passes) or keras.backend.backend() == "jax"
        if compiled not in self._passes:
            self._passes[compiled] = grads_and_outputs(self._pass(), compiled=compiled)
        if len(images) not in self._zeros:
            self._zeros[len(images)] = [
                ops.zeros((len(images), *end.shape[1:]), end.dtype)
                for end in (segment.outputs[0] for segment in self.segments)
            ]
        weights = [variable.value for variable in self.model.variables]
        rule_index = np.int32(RULES.index(rule))
        return self._passes[compiled](
            self._zeros[len(images)], weights, images, classes, rule_index
        )

    def _pass(self) -> Callable:
        variables = self.model.variables

        # A zero added to each layer's output: the gradient with respect to it is the gradient
        # with respect to that output, everything below and above it computed once.
        def scored(zeros, weights, images, classes, rule):
            with keras.StatelessScope(state_mapping=list(zip(variables, weights, strict=True))):
                fmaps, x = [], images
                for segment, zero in zip(self.segments, zeros, strict=True):
                    x = segment(x, training=False) + zero
                    fmaps.append(x)
                logits = self.logits(self.head(x, training=False))
            chosen = self.choose(logits, classes, rule)
            return ops.sum(self.class_scores(logits, chosen)), (fmaps, logits, chosen)

        return scored


def split_model(
    model: keras.Model,
    layer_name: str | Sequence[str],
    output_layer: str | None = None,
    preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
) -> GradCamModel:
    """Split ``model`` at ``layer_name`` (or at each of several layers); the output layer (a
    Dense) is ``output_layer`` or the last. Each layer must cut the network in two (a block's
    output does)."""
    dense = model.get_layer(output_layer) if output_layer else model.layers[-1]
    if not isinstance(dense, keras.layers.Dense):
        raise ValueError(
            f"{model.name}: the output layer {dense.name!r} is a {type(dense).__name__}, not a Dense"
        )
    return GradCamModel(
        model,
        [layer_name] if isinstance(layer_name, str) else layer_name,
        dense,
        preprocess or (lambda images: np.asarray(images, dtype=np.float32)),
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
    """One batch through a cut model: each layer's feature maps and the gradient of the explained
    classes' scores with respect to them (both ``(n, h, w, C)``, in the order of the cut's
    ``layer_names``), the classes and the decision."""

    fmaps: list[np.ndarray]  # float32
    grads: list[np.ndarray]
    classes: np.ndarray
    decision: Decision


def passes(
    cam: GradCamModel, images: np.ndarray, classes: np.ndarray | str, batch_size: int = BATCH_SIZE
) -> Iterator[Pass]:
    """Forward and backward, ``batch_size`` images at a time: ``classes`` is ``"predicted"``,
    ``"other"`` (the runner-up) or one class per image. A short last batch is padded to the
    others' size, so that the compiled pass has one shape (each image's score depends on its own
    input alone, in inference mode)."""
    rule = classes if isinstance(classes, str) else "given"
    size = min(batch_size, len(images))
    for start in range(0, len(images), batch_size):
        x = cam.preprocess(np.asarray(images[start : start + batch_size]))
        count = len(x)
        given = np.zeros(size, np.int32)
        if rule == "given":
            given[:count] = np.asarray(classes)[start : start + count]
        if count < size:
            x = np.concatenate([x, np.zeros((size - count, *x.shape[1:]), x.dtype)])
        grads, (fmaps, logits, chosen) = cam.run(x, given, rule, repeated=len(images) > size)
        order = [cam.depth_order.index(name) for name in cam.layer_names]
        yield Pass(
            [np.asarray(fmaps[i][:count], dtype=np.float32) for i in order],
            [grads[i][:count] for i in order],
            np.asarray(chosen[:count]),
            decide(logits[:count], cam.activation),
        )


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
    batch_size: int = BATCH_SIZE,
    method: str = "gradcam",
) -> GradCamResult:
    """Heatmaps for ``images`` (uint8) at ``cam``'s layer, for the predicted class, the other
    class (``classes="other"``) or given classes; by the book's Grad-CAM or another ``method``."""
    check_methods([method])
    out_maps, out_classes, out_pred, out_prob = [], [], [], []
    for one in passes(cam, images, classes, batch_size):
        out_maps.append(class_map(method, one.fmaps[-1], one.grads[-1]))
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
    batch_size: int = BATCH_SIZE,
) -> LayerMaps:
    """Every ``method``'s map at every layer in ``layers`` for ``images`` (uint8), explaining
    ``classes`` (default: the predicted class), in float64. Each layer must cut the network in
    two, as :func:`split_model` needs."""
    return cut_maps(split_model(model, layers, output_layer), images, methods, classes, batch_size)


def cut_maps(
    cam: GradCamModel,
    images: np.ndarray,
    methods: Sequence[str] = METHODS,
    classes: np.ndarray | None = None,
    batch_size: int = BATCH_SIZE,
) -> LayerMaps:
    """:func:`layer_maps` at the layers of a model already cut: one forward and backward pass
    per batch gives them all."""
    check_methods(methods)
    out: dict[str, dict[str, list[np.ndarray]]] = {
        layer: {m: [] for m in methods} for layer in cam.layer_names
    }
    chosen: list[np.ndarray] = []
    predicted: list[np.ndarray] = []
    probabilities: list[np.ndarray] = []
    for one in passes(cam, images, "predicted" if classes is None else classes, batch_size):
        chosen.append(one.classes)
        predicted.append(one.decision.predicted)
        probabilities.append(one.decision.probability)
        for layer, fmap, grads in zip(cam.layer_names, one.fmaps, one.grads, strict=True):
            fmap, grads = fmap.astype(np.float64), np.asarray(grads, dtype=np.float64)
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
