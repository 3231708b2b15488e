"""Grad-CAM: where in the image the evidence for a class lies, and whether that is on the pet.

The book's recipe (chapter 9.4.3): take the last convolutional feature map; the gradient of the class
score with respect to it; average the gradient over the spatial axes to weight each channel;
weighted mean over the channels; ReLU; divide by the maximum; colour with "jet" and overlay at
0.4 on the image. Beyond the book, the dataset's pet masks measure the localization: the share
of the heatmap's mass on the pet, and whether its peak lies on the pet (the "pointing game").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
from keras import ops
from matplotlib import colormaps
from PIL import Image

from petvision.interpret.gradients import value_and_grad

BACKGROUND = 1  # mask values: 0 = pet, 1 = background, 2 = border (the trimap minus one)


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
    """Split ``model`` at ``layer_name``; the output layer (a Dense) is ``output_layer`` or the last."""
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


@dataclass
class GradCamResult:
    heatmaps: np.ndarray  # (N, h, w) float32 in [0, 1], at the feature map's size
    classes: np.ndarray  # (N,) the class each heatmap explains
    predicted: np.ndarray  # (N,) the predicted class
    probabilities: (
        np.ndarray
    )  # (N,) P(dog) for a sigmoid, the top class's probability for a softmax


def decide(logits: np.ndarray, activation: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(predicted class, its runner-up, probability) from the output layer's logits: for a
    sigmoid, P(dog) and the other of the two classes; otherwise the top class's probability."""
    logits = np.asarray(logits, dtype=np.float64)
    if activation == "sigmoid" and logits.shape[-1] == 1:
        z = logits[:, 0]
        predicted = (z >= 0).astype(np.int64)
        return predicted, 1 - predicted, (1.0 / (1.0 + np.exp(-z))).astype(np.float32)
    order = np.argsort(-logits, axis=-1, kind="stable")
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return order[:, 0], order[:, 1], probs.max(-1).astype(np.float32)


def heatmaps(
    cam: GradCamModel,
    images: np.ndarray,
    classes: np.ndarray | str = "predicted",
    batch_size: int = 32,
) -> GradCamResult:
    """Grad-CAM heatmaps for ``images`` (uint8), for the predicted class, the other class
    (``classes="other"``) or given classes."""
    out_maps, out_classes, out_pred, out_prob = [], [], [], []
    for start in range(0, len(images), batch_size):
        x = cam.preprocess(np.asarray(images[start : start + batch_size]))
        fmap = cam.features(x, training=False)
        logits = ops.convert_to_numpy(cam.logits(cam.head(fmap, training=False)))
        predicted, runner_up, probabilities = decide(logits, cam.activation)
        if isinstance(classes, str):
            chosen = predicted if classes == "predicted" else runner_up
        else:
            chosen = np.asarray(classes[start : start + batch_size])

        # Each image's score depends on its own feature map only, so the gradient of the sum
        # is every image's own gradient.
        def total_score(f, chosen=chosen):
            return ops.sum(cam.class_scores(cam.logits(cam.head(f, training=False)), chosen))

        _, grads = value_and_grad(total_score)(fmap)
        fmap = ops.convert_to_numpy(ops.cast(fmap, "float32"))
        out_maps.append(weighted_map(fmap, grads))
        out_classes.append(chosen)
        out_pred.append(predicted)
        out_prob.append(probabilities)
    return GradCamResult(
        np.concatenate(out_maps),
        np.concatenate(out_classes),
        np.concatenate(out_pred),
        np.concatenate(out_prob),
    )


def weighted_map(fmap: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """The book's heatmap from feature maps and gradients ``(N, h, w, C)``: channel weights are
    the spatially averaged gradients; weighted mean over channels; ReLU; divided by the maximum
    (a map with no positive evidence stays all zero rather than dividing by zero)."""
    weights = grads.mean(axis=(1, 2), keepdims=True)
    heat = np.maximum((fmap * weights).mean(axis=-1), 0)
    peak = heat.max(axis=(1, 2), keepdims=True)
    return np.where(peak > 0, heat / np.where(peak > 0, peak, 1), 0).astype(np.float32)


# --------------------------------------------------------------------------- localization


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


def localization(heatmaps_: np.ndarray, masks: np.ndarray) -> dict:
    """Grad-CAM localization over images: mean heat-on-pet share, pointing-game hit rate, and the
    chance level of both (the share of the image the pets cover), with the number of images
    used and how many heatmaps were blank (left out of the two means)."""
    shares, hits, areas = [], [], []
    for heat, mask in zip(heatmaps_, masks):
        region = pet_region(mask)
        up = upsample(heat, region.shape)
        shares.append(heat_on_pet(up, region))
        hits.append(pointing_hit(up, region))
        areas.append(float(region.mean()))
    shares_a, hits_a = np.array(shares, dtype=np.float64), np.array(hits, dtype=np.float64)
    blank = int(np.isnan(shares_a).sum())
    return {
        "images": len(areas),
        "blank_heatmaps": blank,
        "heat_on_pet": _nanmean(shares_a),
        "pointing_game": _nanmean(hits_a),
        "pet_area": float(np.mean(areas)) if areas else float("nan"),
    }


def _nanmean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else float("nan")


# --------------------------------------------------------------------------- pictures


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
