"""The pipeline's trained models, loaded for use rather than for more training: by the visualize
stage, ``predict``, ``export`` and the served models.

The trained models are read from the pipeline's outputs (``models/*.keras``) or handed over by
MLflow, never rebuilt. A model trained under a mixed precision policy is used in float32:
gradients of a bfloat16 network are too coarse for gradient ascent and Grad-CAM, and its weights
are float32 anyway. Every model loaded here is made compilable where the backend allows
(:mod:`petvision.models.xla`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras

from petvision.core.errors import DataError
from petvision.models import xla


def load_trained(path: Path, what: str) -> keras.Model:
    """A model the pipeline saved, in float32. ``what`` names the stage that makes it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: missing; run the {what} stage first (dvc repro {what})")
    try:
        with xla.loading():
            model = keras.saving.load_model(path, safe_mode=True)
    except Exception as exc:
        raise DataError(
            f"{path}: cannot be loaded as a Keras model ({type(exc).__name__}: {exc}); rerun {what}"
        ) from None
    return float32_copy(model)


def input_size(model: keras.Model) -> int:
    shape = model.inputs[0].shape
    return int(shape[1])


def _to_float32_policies(tree: Any) -> Any:
    if isinstance(tree, Mapping):
        if str(tree.get("class_name", "")).endswith("DTypePolicy") and isinstance(
            tree.get("config"), Mapping
        ):
            name = tree["config"].get("name", "")
            if isinstance(name, str) and name.startswith("mixed_"):
                return {**tree, "config": {**tree["config"], "name": "float32"}}
        return {key: _to_float32_policies(value) for key, value in tree.items()}
    if isinstance(tree, list):
        return [_to_float32_policies(item) for item in tree]
    return tree


def float32_copy(model: keras.Model) -> keras.Model:
    """``model`` itself if it computes in float32, else the same network and weights in float32;
    compilable where the backend allows (:func:`petvision.models.xla.allow`)."""
    if all(layer.dtype_policy.compute_dtype == "float32" for layer in _all_layers(model)):
        return xla.allow(model)
    config = _to_float32_policies(keras.saving.serialize_keras_object(model))
    # The copy is compiled as it is made, like a loaded model: the same untrue fallback warning.
    with xla.loading():
        copy = keras.saving.deserialize_keras_object(config, safe_mode=True)
    copy.set_weights(model.get_weights())
    return xla.allow(copy)


def _all_layers(model: keras.Model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)
