"""Input pipelines: batches streamed from the memory-mapped uint8 ``.npy`` files.

Images stay uint8 all the way into the model (which scales them, as in the book), so a batch
costs a quarter of the book's float32 arrays in memory and copies, and the whole dataset is never
in memory. Shuffling permutes indices, not images; each batch is one sorted fancy-index read from
the memory map.

On the TensorFlow backend the batches are a ``tf.data`` pipeline: prefetching overlaps the read
with the previous training step. On any other Keras backend (JAX where TensorFlow is not
installed) they are a ``keras.utils.PyDataset`` with the same batches in the same order rules, so
the stages run unchanged there.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import keras
import numpy as np

if TYPE_CHECKING:
    from petvision.data.npy_dataset import Split


def batches(
    images: np.ndarray,
    targets: np.ndarray,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    drop_remainder: bool = False,
):
    """(images, targets) batches from two arrays of the same length (memory maps are fine):
    a ``tf.data.Dataset`` on the TensorFlow backend, else an :class:`ArrayBatches`."""
    if len(images) != len(targets):
        raise ValueError(f"{len(images)} images but {len(targets)} targets")
    if keras.backend.backend() == "tensorflow":
        return _tf_batches(
            images, targets, batch_size, shuffle=shuffle, seed=seed, drop_remainder=drop_remainder
        )
    return ArrayBatches(
        images, targets, batch_size, shuffle=shuffle, seed=seed, drop_remainder=drop_remainder
    )


def split_batches(split: Split, target: str, batch_size: int, *, seed: int, shuffle: bool):
    """:func:`batches` of one split's images and its ``target`` (``"masks"`` or ``"labels"``)."""
    return batches(split.images, split.require(target), batch_size, shuffle=shuffle, seed=seed)


def _gather(array: np.ndarray, index: np.ndarray) -> np.ndarray:
    return np.asarray(array[np.sort(index)])  # sorted: sequential reads from the memory map


def _tf_batches(
    images, targets, batch_size: int, *, shuffle: bool, seed: int, drop_remainder: bool
):
    import tensorflow as tf

    count = len(images)
    image_shape, target_shape = images.shape[1:], targets.shape[1:]

    def gather(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _gather(images, index), _gather(targets, index)

    def read(index: tf.Tensor):
        x, y = tf.numpy_function(
            gather, [index], (tf.as_dtype(images.dtype), tf.as_dtype(targets.dtype))
        )
        x.set_shape((None, *image_shape))
        y.set_shape((None, *target_shape))
        return x, y

    ds = tf.data.Dataset.range(count)
    if shuffle:
        ds = ds.shuffle(count, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


class ArrayBatches(keras.utils.PyDataset):
    """The same batches for backends without ``tf.data``: a new permutation (from ``seed``) every
    epoch when shuffling, in file order otherwise. Batches are read in the training thread; an
    asynchronous backend (JAX) computes the previous step meanwhile."""

    def __init__(
        self,
        images: np.ndarray,
        targets: np.ndarray,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int,
        drop_remainder: bool = False,
    ):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: must be at least 1")
        self.images, self.targets, self.batch_size = images, targets, batch_size
        self.shuffle, self.drop_remainder = shuffle, drop_remainder
        self._rng = np.random.default_rng(seed)
        self._order = self._rng.permutation(len(images)) if shuffle else np.arange(len(images))

    def __len__(self) -> int:
        whole = len(self.images) / self.batch_size
        return math.floor(whole) if self.drop_remainder else math.ceil(whole)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= i < len(self):
            raise IndexError(f"batch {i} of {len(self)}")
        index = self._order[i * self.batch_size : (i + 1) * self.batch_size]
        return _gather(self.images, index), _gather(self.targets, index)

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self._order = self._rng.permutation(len(self.images))
