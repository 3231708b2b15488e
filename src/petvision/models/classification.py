"""Cats-vs-dogs classifiers: the chapter's mini-Xception (the default), chapter 8's simple convnet
(the book's baseline) and the book's residual-connection demo (chapter 9.3.1).

Each takes uint8-range RGB images, scales them inside the model, and outputs P(dog) from a
sigmoid. Data augmentation is part of the model and, being Keras preprocessing layers, is active
only in training. Only ``keras`` is used, so the builders run on any Keras 3 backend.
"""

from __future__ import annotations

import keras
from keras import layers

from petvision.config import AugmentationConfig, ClassificationModelConfig, Flip
from petvision.core.tasks import Task
from petvision.models import registry

BOOK_AUGMENTATION = AugmentationConfig(enabled=True, flip=Flip.horizontal, rotation=0.1, zoom=0.2)


def data_augmentation(cfg: AugmentationConfig = BOOK_AUGMENTATION) -> keras.Sequential:
    """Chapter 8's augmentation: random horizontal flip, rotation +-10 %, zoom +-20 %."""
    return keras.Sequential(
        [
            layers.RandomFlip(cfg.flip),
            layers.RandomRotation(cfg.rotation),
            layers.RandomZoom(cfg.zoom),
        ],
        name="data_augmentation",
    )


def _inputs_and_rescaling(image_size: int, augmentation: AugmentationConfig | None):
    inputs = keras.Input(shape=(image_size, image_size, 3), name="image")
    x = inputs
    if augmentation is not None and augmentation.enabled:
        x = data_augmentation(augmentation)(x)
    x = layers.Rescaling(1.0 / 255, name="rescaling")(x)
    return inputs, x


def _sigmoid_head(x, dropout: float):
    if dropout > 0:
        x = layers.Dropout(dropout, name="dropout")(x)
    # float32 sigmoid: under a mixed precision policy the probability stays numerically sound.
    return layers.Dense(1, activation="sigmoid", dtype="float32", name="dog_probability")(x)


def xception_block(x, size: int, block: int):
    """BN -> ReLU -> SeparableConv2D, twice; max-pool; add the input back through a strided 1x1
    projection (no bias: batch normalization follows)."""
    residual = x
    for i in (1, 2):
        x = layers.BatchNormalization(name=f"block{block}_bn{i}")(x)
        x = layers.Activation("relu", name=f"block{block}_relu{i}")(x)
        x = layers.SeparableConv2D(
            size, 3, padding="same", use_bias=False, name=f"block{block}_sepconv{i}"
        )(x)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name=f"block{block}_pool")(x)
    residual = layers.Conv2D(
        size, 1, strides=2, padding="same", use_bias=False, name=f"block{block}_residual"
    )(residual)
    return layers.add([x, residual], name=f"block{block}_add")


def mini_xception(
    image_size: int = 180,
    augmentation: AugmentationConfig | None = BOOK_AUGMENTATION,
    dropout: float = 0.5,
) -> keras.Model:
    """The chapter's mini-Xception: 721,857 parameters (718,849 trainable) at 180x180x3.
    No separable convolution on the first layer: RGB channels are strongly correlated."""
    inputs, x = _inputs_and_rescaling(image_size, augmentation)
    x = layers.Conv2D(32, 5, use_bias=False, name="stem_conv")(x)
    for block, size in enumerate([32, 64, 128, 256, 512], start=1):
        x = xception_block(x, size, block)
    x = layers.GlobalAveragePooling2D(name="global_pool")(x)
    return keras.Model(inputs, _sigmoid_head(x, dropout), name="mini_xception")


def simple_convnet(
    image_size: int = 180,
    augmentation: AugmentationConfig | None = BOOK_AUGMENTATION,
    dropout: float = 0.5,
) -> keras.Model:
    """Chapter 8's convnet with augmentation and dropout: 991,041 parameters at 180x180x3."""
    inputs, x = _inputs_and_rescaling(image_size, augmentation)
    for i, filters in enumerate([32, 64, 128, 256, 256], start=1):
        x = layers.Conv2D(filters, 3, activation="relu", name=f"conv{i}")(x)
        if i < 5:
            x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    return keras.Model(inputs, _sigmoid_head(x, dropout), name="simple_convnet")


# oneDNN's 1x1 stride-2 backward-weights kernel writes past its workspace when the input has
# fewer channels than its channel block (16 with AVX-512, 8 with AVX2): TF 2.21 on CPU then
# crashes or, on some machines, silently returns wrong gradients (uxlfoundation/oneDNN#6035).
# Block 1 of the book's network projects the 3-channel image that way at any size >= 96 px.
_ONEDNN_SAFE_STRIDED_1X1_CHANNELS = 16


def strided_pointwise_projection(x, filters: int, name: str):
    """The book's `Conv2D(filters, 1, strides=2)`. On thin inputs the same function is computed as
    a 2x subsampling followed by a stride-1 1x1 convolution (identical output shape, kernel, bias
    and parameter count) to stay off the oneDNN kernel above."""
    if x.shape[-1] >= _ONEDNN_SAFE_STRIDED_1X1_CHANNELS:
        return layers.Conv2D(filters, 1, strides=2, name=name)(x)
    x = layers.MaxPooling2D(pool_size=1, strides=2, name=f"{name}_subsample")(x)
    return layers.Conv2D(filters, 1, name=name)(x)


def residual_block(x, filters: int, pooling: bool, block: int):
    """The book's residual block: two 3x3 convolutions; the residual is projected with a 1x1
    convolution when the filters change, strided when the block max-pools."""
    residual = x
    x = layers.Conv2D(filters, 3, activation="relu", padding="same", name=f"block{block}_conv1")(x)
    x = layers.Conv2D(filters, 3, activation="relu", padding="same", name=f"block{block}_conv2")(x)
    if pooling:
        x = layers.MaxPooling2D(2, padding="same", name=f"block{block}_pool")(x)
        residual = strided_pointwise_projection(residual, filters, name=f"block{block}_residual")
    elif filters != residual.shape[-1]:
        residual = layers.Conv2D(filters, 1, name=f"block{block}_residual")(residual)
    return layers.add([x, residual], name=f"block{block}_add")


def residual_convnet(
    image_size: int = 32, augmentation: AugmentationConfig | None = None, dropout: float = 0.0
) -> keras.Model:
    """The book's demo of residual connections: 297,697 parameters (any input size)."""
    inputs, x = _inputs_and_rescaling(image_size, augmentation)
    x = residual_block(x, 32, pooling=True, block=1)
    x = residual_block(x, 64, pooling=True, block=2)
    x = residual_block(x, 128, pooling=False, block=3)
    x = layers.GlobalAveragePooling2D(name="global_pool")(x)
    return keras.Model(inputs, _sigmoid_head(x, dropout), name="residual_convnet")


def build_classifier(cfg: ClassificationModelConfig, image_size: int) -> keras.Model:
    return registry.builder(Task.classification, cfg.name)(
        image_size=image_size, augmentation=cfg.augmentation, dropout=cfg.dropout
    )
