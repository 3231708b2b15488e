"""The book's ImageNet Xception (chapter 9.4), the ``visualize.model=imagenet_xception`` option.

It needs its weights (about 88 MB) from the internet. Keras downloads them with ``urllib`` and no
timeout, which hangs for minutes on a machine that cannot reach the host, so we fetch them
ourselves, bounded by a timeout, into the cache Keras uses (``$KERAS_HOME/models`` or
``~/.keras/models``) and fail with a message saying what to do.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import keras
import numpy as np
import requests

from petvision.core.atomic import atomic_file
from petvision.core.errors import DownloadError
from petvision.util import http
from petvision.util.hashing import file_digest

log = logging.getLogger(__name__)

# keras.applications.Xception's own file names and md5 digests (keras/src/applications).
XCEPTION_WEIGHTS = (
    "xception_weights_tf_dim_ordering_tf_kernels.h5",
    "0a58e3b7378bc2990ea3b43d5981f1f6",
)
IMAGENET_CLASS_INDEX = ("imagenet_class_index.json", "c2c37ea517e94d9795004a39431a14cb")
XCEPTION_SIZE = 299
XCEPTION_GRADCAM_LAYER = "block14_sepconv2_act"


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


def load_xception(
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


def xception_inputs(images: np.ndarray) -> np.ndarray:
    """uint8 images -> 299x299 float32 in [-1, 1], as ``keras.applications.xception.preprocess_input``."""
    resized = keras.ops.image.resize(
        np.asarray(images, dtype=np.float32),
        (XCEPTION_SIZE,) * 2,
        interpolation="bilinear",
    )
    return keras.ops.convert_to_numpy(resized) / 127.5 - 1.0


def xception_conv_base(full: keras.Model, size: int) -> keras.Model:
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
