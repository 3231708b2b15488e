"""One pass of a trained model over images for the trust measures: each detector layer's pooled
features (:func:`petvision.evaluation.ood.pool_mean_std`) and the logits (calibration).

The logits: a sigmoid classifier's are its last Dense layer's pre-activation, computed from that
layer's input and weights (a probability rounded to 1.0 in float32 has no logit left); a softmax
model's are its log-probabilities, which give the same probabilities at any temperature (softmax
is unchanged by a constant added to every logit).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np

from petvision.evaluation import batched, calibration
from petvision.evaluation.ood import pool_mean_std


@dataclass(frozen=True)
class Forward:
    features: list[np.ndarray]  # per layer, (N, D) pooled
    logits: np.ndarray  # (N,) for a sigmoid model, (N, ..., C) for a softmax one
    binary: bool


def _output_layer(model: keras.Model) -> keras.layers.Layer:
    return model.layers[-1]


def is_sigmoid_classifier(model: keras.Model) -> bool:
    layer = _output_layer(model)
    return isinstance(layer, keras.layers.Dense) and tuple(model.outputs[0].shape[1:]) == (1,)


# One probe per model and layers, for as long as the model lives: the trust step probes the same
# model five times and a served model once per request, and each new probe compiles again on JAX.
# A probe holds the model's layers, not the model, so it does not keep the model alive.
_PROBES: weakref.WeakKeyDictionary[keras.Model, dict[tuple[str, ...], keras.Model]] = (
    weakref.WeakKeyDictionary()
)


def _probe(model: keras.Model, layers: tuple[str, ...], binary: bool) -> keras.Model:
    probes = _PROBES.setdefault(model, {})
    if layers not in probes:
        taps = [model.get_layer(name).output for name in layers]
        last = _output_layer(model).input if binary else model.outputs[0]
        # Called with one array, as Keras wants a model of one input to be built with one.
        inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
        probes[layers] = keras.Model(inputs, [*taps, last])
    return probes[layers]


def forward(
    model: keras.Model,
    images: np.ndarray,
    layers: Sequence[str],
    batch_size: int = batched.PREDICT_BATCH,
) -> Forward:
    """Pooled features of ``layers`` and the logits of ``images`` (uint8 at the model's size), in
    batches of ``batch_size`` (:func:`petvision.evaluation.batched.batches`: compiled on JAX)."""
    binary = is_sigmoid_classifier(model)
    head = _output_layer(model)
    pooled: list[list[np.ndarray]] = [[] for _ in layers]
    last: list[np.ndarray] = []
    for outputs in batched.batches(_probe(model, tuple(layers), binary), images, batch_size):
        if not layers:  # a probe of one output gives that array, not a list of one
            outputs = [outputs]
        # Pooled batch by batch: a detector layer's whole maps for every image would not fit.
        for store, out in zip(pooled, outputs[:-1]):
            store.append(pool_mean_std(out))
        last.append(np.asarray(outputs[-1], dtype=np.float32))
    final = np.concatenate(last) if last else np.zeros((0,), np.float32)
    if binary:
        kernel, bias = (np.asarray(w, dtype=np.float64) for w in head.get_weights())
        logits = (final.astype(np.float64) @ kernel + bias).reshape(-1)
    else:
        logits = calibration.logits_of_probabilities(final)
    features = [np.concatenate(p) if p else np.zeros((0, 0), np.float32) for p in pooled]
    return Forward(features, logits, binary)


def two_class_logits(fwd: Forward) -> np.ndarray:
    """The logits as ``(..., C)`` softmax logits, whatever the head."""
    return calibration.as_two_class_logits(fwd.logits) if fwd.binary else fwd.logits
