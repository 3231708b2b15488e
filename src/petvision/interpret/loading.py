"""The models to explain: the pipeline's trained ones, or the book's ImageNet Xception.

The trained models are read from the pipeline's outputs (``models/*.keras``), never from MLflow,
so ``dvc pull`` + ``dvc repro`` works without a tracking server. A model trained under a mixed
precision policy is explained in float32: gradients of a bfloat16 network are too coarse for
gradient ascent and Grad-CAM, and its weights are float32 anyway.

ImageNet Xception needs its weights (about 88 MB) from the internet. Keras downloads them with
``urllib`` and no timeout, which hangs for minutes on a machine that cannot reach the host, so
we fetch them ourselves, bounded by a timeout, into the cache Keras uses (``$KERAS_HOME/models``
or ``~/.keras/models``) and fail with a message saying what to do.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np
import requests

from petvision.core.atomic import atomic_file
from petvision.core.errors import DataError, DownloadError
from petvision.models import xla
from petvision.util import http
from petvision.util.hashing import file_digest

log = logging.getLogger(__name__)

# keras.applications.Xception's own file names and md5 digests (keras/src/applications).
XCEPTION_WEIGHTS = (
    "xception_weights_tf_dim_ordering_tf_kernels.h5",
    "0a58e3b7378bc2990ea3b43d5981f1f6",
)
IMAGENET_CLASS_INDEX = ("imagenet_class_index.json", "c2c37ea517e94d9795004a39431a14cb")
IMAGENET_XCEPTION_SIZE = 299
IMAGENET_XCEPTION_GRADCAM_LAYER = "block14_sepconv2_act"


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
    copy = keras.saving.deserialize_keras_object(config, safe_mode=True)
    copy.set_weights(model.get_weights())
    return xla.allow(copy)


def _all_layers(model: keras.Model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


# --------------------------------------------------------------------------- ImageNet Xception


def keras_cache_dir() -> Path:
    """Where ``keras.utils.get_file`` keeps downloaded models (the same rule as Keras)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


def fetch_verified(
    url: str, name: str, md5: str, timeout_s: float, cache_dir: Path | None = None
) -> Path:
    """``cache_dir/name`` with the given md5, downloaded from ``url`` if not cached yet.

    Every network wait is bounded by ``timeout_s`` (connect, and each read), so a machine without
    internet gets a DownloadError in seconds instead of a hang.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else keras_cache_dir()
    final = cache_dir / name
    if final.is_file() and file_digest(final, "md5") == md5:
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s to %s", url, final)
    try:
        with http.get(url, timeout_s) as response, atomic_file(final) as tmp:
            if response.status_code != 200:
                raise DownloadError(f"{url}: HTTP {response.status_code} {response.reason}")
            total = int(response.headers.get("Content-Length", 0)) or None
            with open(tmp, "wb") as f:
                http.stream_into(response, f, desc=name, total=total)
            if (got := file_digest(tmp, "md5")) != md5:
                raise DownloadError(f"{url}: md5 {got}, expected {md5} for {name}")
    except (requests.RequestException, http.ConnectionLost) as exc:
        raise DownloadError(f"{url}: {type(exc).__name__} ({http.reason(exc)})") from None
    return final


def load_imagenet_xception(
    weights_url: str, class_index_url: str, timeout_s: float, cache_dir: Path | None = None
) -> tuple[keras.Model, list[str]]:
    """The book's ImageNet Xception and its 1,000 class names; DownloadError, quickly, offline."""
    cache = Path(cache_dir) if cache_dir is not None else keras_cache_dir()
    try:
        weights = fetch_verified(
            weights_url, *XCEPTION_WEIGHTS, timeout_s=timeout_s, cache_dir=cache
        )
        class_index = fetch_verified(
            class_index_url, *IMAGENET_CLASS_INDEX, timeout_s=timeout_s, cache_dir=cache
        )
    except DownloadError as exc:
        raise DownloadError(
            f"visualize.model=imagenet_xception needs the ImageNet weights of Xception (about 88 MB), "
            f"downloaded from the internet, and the download failed: {exc}. This machine seems to have "
            f"no internet access. Run once where {weights_url} is reachable (the files are cached in "
            f"{cache}), copy {XCEPTION_WEIGHTS[0]} and {IMAGENET_CLASS_INDEX[0]} there by hand, or use "
            f"visualize.model=trained (the pipeline's own classifier)"
        ) from None
    model = keras.applications.Xception(weights=str(weights))
    index = json.loads(class_index.read_text(encoding="utf-8"))
    names = [index[str(i)][1] for i in range(len(index))]
    return model, names


def imagenet_xception_inputs(images: np.ndarray) -> np.ndarray:
    """uint8 images -> 299x299 float32 in [-1, 1], as ``keras.applications.xception.preprocess_input``."""
    resized = keras.ops.image.resize(
        np.asarray(images, dtype=np.float32),
        (IMAGENET_XCEPTION_SIZE,) * 2,
        interpolation="bilinear",
    )
    return keras.ops.convert_to_numpy(resized) / 127.5 - 1.0


def imagenet_conv_base(full: keras.Model, size: int) -> keras.Model:
    """Xception's convolutional base at ``size`` x ``size`` with ``full``'s weights: the book
    probes filters at 200x200, and a Keras 3 model only takes its own input size."""
    base = keras.applications.Xception(include_top=False, weights=None, input_shape=(size, size, 3))
    # Layer by layer in build order: some of Xception's layers have generated names (conv2d_3...)
    # that differ between two builds; the base's layers are the full model's, minus the top.
    for mine, theirs in zip(base.layers, full.layers):
        if type(mine) is not type(theirs):
            raise ValueError(
                f"{full.name} is not keras.applications.Xception: {theirs.name} is a "
                f"{type(theirs).__name__}, expected a {type(mine).__name__}"
            )
        if mine.weights:
            mine.set_weights(theirs.get_weights())
    return base
