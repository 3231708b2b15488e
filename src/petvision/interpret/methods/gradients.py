"""Gradients of a scalar with respect to an input, on whichever Keras 3 backend is active.

Keras 3 has no backend-neutral ``grad``; everything else in this package uses ``keras.ops`` only,
and this module is the one place that asks the backend for a gradient. TensorFlow and JAX, the two
backends the tests run; another backend gets a NotImplementedError naming it.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np


def value_and_grad(fn: Callable, compiled: bool = False) -> Callable:
    """``g(x, *args) -> (fn(x, *args), d fn / d x)`` as NumPy values, for a scalar ``fn``.

    ``fn`` must be traceable by the backend (Keras layers, models and ``keras.ops`` are).
    ``compiled=True`` traces it once per input shape (``tf.function`` / ``jax.jit``): worth it
    for a step repeated many times, as gradient ascent is; not for a one-off gradient.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        def step(x, *args):
            with tf.GradientTape() as tape:
                tape.watch(x)
                value = fn(x, *args)
            return value, tape.gradient(value, x)

        run = tf.function(step, reduce_retracing=True) if compiled else step

        def tf_grad(x, *args):
            value, grad = run(tf.convert_to_tensor(x), *(tf.convert_to_tensor(a) for a in args))
            return float(value), grad.numpy()

        return tf_grad
    if backend == "jax":
        import jax

        grad_fn = jax.value_and_grad(fn)
        run = jax.jit(grad_fn) if compiled else grad_fn

        def jax_grad(x, *args):
            value, grad = run(
                keras.ops.convert_to_tensor(x), *(keras.ops.convert_to_tensor(a) for a in args)
            )
            return float(value), np.asarray(grad)

        return jax_grad
    raise NotImplementedError(f"gradients on the {backend!r} Keras backend")
