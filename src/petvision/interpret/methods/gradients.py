"""Gradients on whichever Keras 3 backend is active.

Keras 3 has no backend-neutral ``grad``; everything else in this package uses ``keras.ops`` only,
and this module is the one place that asks the backend for a gradient. TensorFlow and JAX, the two
backends the tests run; another backend gets a NotImplementedError naming it.

:func:`value_and_grad` differentiates a scalar with respect to one input (gradient ascent);
:func:`grads_and_outputs` with respect to several inputs at once, returning what the function
computed on the way (the class activation maps: every layer's feature maps, their gradients and
the logits from one forward and backward pass).
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


def grads_and_outputs(fn: Callable, compiled: bool = True) -> Callable:
    """``g(xs, *args) -> (grads, outputs)`` as NumPy values, for ``fn(xs, *args) -> (scalar,
    outputs)``: ``xs`` a list of inputs and ``grads`` the scalar's gradient with respect to each;
    ``outputs`` (tensors, in lists and tuples) what ``fn`` computed on the way, not
    differentiated. ``args`` may be nested lists of tensors (a model's weights).

    Compiled by default (``tf.function`` / ``jax.jit``, traced once per input shape): a call is
    then one computation on the device, not one dispatch per operation.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        def step(xs, *args):
            with tf.GradientTape() as tape:
                tape.watch(xs)
                value, outputs = fn(xs, *args)
            return tape.gradient(value, xs), outputs

        run = tf.function(step, reduce_retracing=True) if compiled else step

        def tf_grads(xs, *args):
            grads, outputs = run(*tf.nest.map_structure(tf.convert_to_tensor, (list(xs), *args)))
            return [g.numpy() for g in grads], tf.nest.map_structure(lambda t: t.numpy(), outputs)

        return tf_grads
    if backend == "jax":
        import jax

        grad_fn = jax.value_and_grad(fn, has_aux=True)
        run = jax.jit(grad_fn) if compiled else grad_fn

        def jax_grads(xs, *args):
            (_, outputs), grads = run(list(xs), *args)
            return [np.asarray(g) for g in grads], jax.tree_util.tree_map(np.asarray, outputs)

        return jax_grads
    raise NotImplementedError(f"gradients on the {backend!r} Keras backend")
