"""Input pipelines: batches streamed from the memory-mapped uint8 ``.npy`` files.

Images stay uint8 all the way into the model (which scales them, as in the seed), so a batch
costs a quarter of the seed's float32 arrays in memory and copies. ``tf.data`` shuffles indices,
not images; each batch is one sorted fancy-index read from the memory map, and prefetching
overlaps that read with the previous training step.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def batches(
    images: np.ndarray,
    targets: np.ndarray,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """(images, targets) batches from two arrays of the same length (memory maps are fine)."""
    if len(images) != len(targets):
        raise ValueError(f"{len(images)} images but {len(targets)} targets")
    count = len(images)
    image_shape, target_shape = images.shape[1:], targets.shape[1:]

    def gather(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        index = np.sort(index)  # sequential reads from the memory map
        return np.asarray(images[index]), np.asarray(targets[index])

    def read(index: tf.Tensor):
        x, y = tf.numpy_function(gather, [index], (tf.as_dtype(images.dtype), tf.as_dtype(targets.dtype)))
        x.set_shape((None, *image_shape))
        y.set_shape((None, *target_shape))
        return x, y

    ds = tf.data.Dataset.range(count)
    if shuffle:
        ds = ds.shuffle(count, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    options = tf.data.Options()
    # Multi-worker: every worker sees the same index stream and keeps its share of the batches.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)
