"""One pass of a trained model over images for the trust measures: each detector layer's pooled
features (:func:`petvision.evaluation.ood.pool_mean_std`) and the logits (calibration).

The logits: a sigmoid classifier's are its last Dense layer's pre-activation, computed from that
layer's input and weights (a probability rounded to 1.0 in float32 has no logit left); a softmax
model's are its log-probabilities, which give the same probabilities at any temperature (softmax
is unchanged by a constant added to every logit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np

from petvision.evaluation import calibration
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


def forward(
    model: keras.Model, images: np.ndarray, layers: Sequence[str], batch_size: int = 64
) -> Forward:
    """Pooled features of ``layers`` and the logits of ``images`` (uint8 at the model's size)."""
    binary = is_sigmoid_classifier(model)
    head = _output_layer(model)
    taps = [model.get_layer(name).output for name in layers]
    probe = keras.Model(model.inputs, [*taps, head.input if binary else model.outputs[0]])
    pooled: list[list[np.ndarray]] = [[] for _ in layers]
    last: list[np.ndarray] = []
    x = np.asarray(images)
    for start in range(0, len(x), batch_size):
        batch = np.asarray(x[start : start + batch_size], dtype=np.float32)
        outputs = probe([batch], training=False)
        for store, out in zip(pooled, outputs[:-1]):
            store.append(pool_mean_std(keras.ops.convert_to_numpy(out)))
        last.append(np.asarray(keras.ops.convert_to_numpy(outputs[-1]), dtype=np.float32))
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
