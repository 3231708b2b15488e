"""Filter patterns: the input each filter responds to most, found by gradient ascent.

The book's recipe (chapter 9.4.2): start from uniform noise in [0.4, 0.6]; 30 times, add 10 times
the L2-normalized gradient of the filter's mean activation (borders of 2 px left out) with respect
to the image. (Its display, each pattern deprocessed and the first 64 stitched into a grid, is
:func:`petvision.render.images.deprocess` and :func:`~petvision.render.images.stitch`.) Here all
filters of a layer climb at once, as one batch: each image's loss depends on that image alone
(inference mode), so the batch gradient is the stack of the single-image gradients, and each is
normalized on its own as in the book.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras
import numpy as np
from keras import ops
from tqdm import tqdm

from petvision.core.errors import ConfigError
from petvision.interpret.methods.activations import CONVOLUTIONS
from petvision.interpret.methods.gradients import value_and_grad

BOOK_BORDER = 2
BOOK_START = (0.4, 0.6)


def convolution_layers(model: keras.Model) -> list[str]:
    """Convolutions with a spatial kernel (1x1 projections show nothing worth drawing)."""
    return [
        layer.name
        for layer in model.layers
        if isinstance(layer, CONVOLUTIONS) and max(layer.kernel_size) > 1
    ]


def choose_layers(
    configured: Mapping[str, Sequence[str]],
    architecture: str,
    model: keras.Model,
    key: str = "visualize.filters.layers",
) -> list[str]:
    """The configured layers for this architecture; without an entry, the first, middle and
    last spatial convolutions (an early, a middle and a deep view, like the book's choice)."""
    names = list(configured.get(architecture) or [])
    if not names:
        convs = convolution_layers(model)
        picks = sorted({0, len(convs) // 2, len(convs) - 1}) if convs else []
        return [convs[i] for i in picks]
    known = {layer.name for layer in model.layers}
    for name in names:
        if name not in known:
            raise ConfigError(
                f"{key}.{architecture}: the {architecture} model has no layer {name!r}; "
                f"its convolutions are {', '.join(convolution_layers(model))}"
            )
    return names


def feature_extractor(model: keras.Model, layer_name: str) -> keras.Model:
    return keras.Model(model.inputs[0], model.get_layer(layer_name).output)


def filter_activation(extractor: keras.Model, images, filters, border: int = BOOK_BORDER):
    """Mean activation of filter ``filters[i]`` on image ``i``, borders left out: a (N,) tensor.
    ``filters`` is a list of indices or their one-hot ``(N, channels)`` float32 matrix."""
    activation = extractor(images, training=False)
    h, w = activation.shape[1], activation.shape[2]
    if border and h > 2 * border and w > 2 * border:
        # The book leaves out the borders: their activations see the zero padding, not the image.
        activation = activation[:, border : h - border, border : w - border, :]
    if isinstance(filters, (list, tuple, range)):
        filters = one_hot(filters, activation.shape[-1])
    per_channel = ops.mean(ops.cast(activation, "float32"), axis=(1, 2))
    return ops.sum(per_channel * filters, axis=-1)


def one_hot(filters: Sequence[int], channels: int) -> np.ndarray:
    return np.eye(channels, dtype=np.float32)[np.asarray(list(filters), dtype=np.int64)]


def filter_patterns(
    extractor: keras.Model,
    filters: Sequence[int],
    steps: int = 30,
    learning_rate: float = 10.0,
    input_scale: float = 1.0,
    seed: int = 0,
    batch_size: int = 16,
    progress: str = "",
) -> np.ndarray:
    """One input image per filter after ``steps`` of gradient ascent: ``(N, S, S, 3)`` float32.

    ``input_scale`` converts the book's numbers into the model's input units. The book's start
    range [0.4, 0.6] and learning rate 10 are in the units its network's first layer sees (it
    feeds the noise to Xception as it is). Our models take 0..255 and divide by 255 inside, so
    for them ``input_scale=255``: the noise starts at 102..153, which the model's own rescaling
    turns back into the book's [0.4, 0.6] (mid-grey noise), and each step moves the image by
    10 * 255 along the unit-norm gradient, i.e. by 10 in the units the first convolution sees.
    (Xception's usual inputs span [-1, 1], ours [0, 1]; deprocessing normalizes the result, so
    that difference changes how far the ascent goes, not how the pattern is drawn.)
    """
    size = int(extractor.inputs[0].shape[1])
    channels = int(extractor.outputs[0].shape[-1])
    rng = np.random.default_rng(seed)
    ascent = value_and_grad(
        lambda x, selection: ops.sum(filter_activation(extractor, x, selection)), compiled=True
    )
    out = []
    batches = range(0, len(filters), batch_size)
    for start in tqdm(
        batches, desc=progress or "filter patterns", leave=False, disable=not progress
    ):
        chosen = list(filters[start : start + batch_size])
        low, high = BOOK_START
        image = (
            rng.uniform(low, high, size=(len(chosen), size, size, 3)).astype(np.float32)
            * input_scale
        )
        selection = one_hot(chosen, channels)
        for _ in range(steps):
            _, grad = ascent(image, selection)
            norm = np.sqrt(np.sum(np.square(grad), axis=(1, 2, 3), keepdims=True))
            image = image + learning_rate * input_scale * grad / np.maximum(norm, 1e-12)
        out.append(image)
    return np.concatenate(out) if out else np.zeros((0, size, size, 3), np.float32)
