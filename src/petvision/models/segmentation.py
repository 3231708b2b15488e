"""Segmentation models: the book's encoder-decoder (the default) and an optional U-Net.

Both take uint8-range RGB images and scale them to [0, 1] inside the model, as the book does, and
output per-pixel class probabilities (softmax over ``num_classes``). Only ``keras`` is used, so
the builders run on any Keras 3 backend.
"""

from __future__ import annotations

import keras
from keras import layers

from petvision.config import SegmentationModelConfig
from petvision.core.tasks import Task
from petvision.models import registry


def book_model(image_size: int = 200, num_classes: int = 3) -> keras.Model:
    """The book's ``get_model`` (chapter 9.1): strided convolutions down (pooling would discard *where*),
    transposed convolutions back up. 2,880,643 parameters at 200x200x3 with 3 classes."""
    inputs = keras.Input(shape=(image_size, image_size, 3), name="image")
    x = layers.Rescaling(1.0 / 255, name="rescaling")(inputs)

    x = layers.Conv2D(
        64, 3, strides=2, activation="relu", padding="same", name="down1_conv_stride2"
    )(x)
    x = layers.Conv2D(64, 3, activation="relu", padding="same", name="down1_conv")(x)
    x = layers.Conv2D(
        128, 3, strides=2, activation="relu", padding="same", name="down2_conv_stride2"
    )(x)
    x = layers.Conv2D(128, 3, activation="relu", padding="same", name="down2_conv")(x)
    x = layers.Conv2D(
        256, 3, strides=2, activation="relu", padding="same", name="down3_conv_stride2"
    )(x)
    x = layers.Conv2D(256, 3, activation="relu", padding="same", name="down3_conv")(x)

    x = layers.Conv2DTranspose(256, 3, activation="relu", padding="same", name="up3_convt")(x)
    x = layers.Conv2DTranspose(
        256, 3, strides=2, activation="relu", padding="same", name="up3_convt_stride2"
    )(x)
    x = layers.Conv2DTranspose(128, 3, activation="relu", padding="same", name="up2_convt")(x)
    x = layers.Conv2DTranspose(
        128, 3, strides=2, activation="relu", padding="same", name="up2_convt_stride2"
    )(x)
    x = layers.Conv2DTranspose(64, 3, activation="relu", padding="same", name="up1_convt")(x)
    x = layers.Conv2DTranspose(
        64, 3, strides=2, activation="relu", padding="same", name="up1_convt_stride2"
    )(x)

    # float32 softmax: under a mixed precision policy the probabilities stay numerically sound.
    outputs = layers.Conv2D(
        num_classes, 3, activation="softmax", padding="same", dtype="float32", name="classes"
    )(x)
    return keras.Model(inputs, outputs, name="book_segmentation")


def _conv_bn_relu(x, filters: int, name: str):
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def unet_model(
    image_size: int = 200, num_classes: int = 3, filters: tuple[int, ...] = (32, 64, 128, 256)
) -> keras.Model:
    """Option, not the default: a U-Net. Skip connections hand the decoder the encoder's full-
    resolution features, so outlines need not be rebuilt from a 1/8-size map."""
    inputs = keras.Input(shape=(image_size, image_size, 3), name="image")
    x = layers.Rescaling(1.0 / 255, name="rescaling")(inputs)
    skips = []
    for level, f in enumerate(filters[:-1], start=1):
        x = _conv_bn_relu(x, f, f"down{level}a")
        x = _conv_bn_relu(x, f, f"down{level}b")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"down{level}_pool")(x)
    x = _conv_bn_relu(x, filters[-1], "bottom_a")
    x = _conv_bn_relu(x, filters[-1], "bottom_b")
    for level, (f, skip) in reversed(list(enumerate(zip(filters[:-1], skips), start=1))):
        x = layers.Conv2DTranspose(f, 2, strides=2, padding="same", name=f"up{level}_convt")(x)
        x = layers.Concatenate(name=f"up{level}_skip")([x, skip])
        x = _conv_bn_relu(x, f, f"up{level}a")
        x = _conv_bn_relu(x, f, f"up{level}b")
    outputs = layers.Conv2D(num_classes, 1, activation="softmax", dtype="float32", name="classes")(
        x
    )
    return keras.Model(inputs, outputs, name="unet_segmentation")


def build_segmentation_model(cfg: SegmentationModelConfig, image_size: int) -> keras.Model:
    return registry.builder(Task.segmentation, cfg.name)(
        image_size=image_size, num_classes=cfg.num_classes
    )
