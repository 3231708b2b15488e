"""Whether a model's training and inference steps can be compiled (XLA) on this Keras backend,
and where JAX keeps what it compiled (:func:`use_compile_cache`).

Keras 3 marks ``RandomRotation`` and ``RandomZoom`` ``supports_jit = False`` on every backend,
and a model holding one layer so marked is never compiled: ``compile(jit_compile=True)`` falls
back to ``False`` with a warning. The reason is TensorFlow's: its XLA has no kernel for the
``ImageProjectiveTransformV3`` op those layers use there (tensorflow/tensorflow#100865). On JAX
the same layers are plain ``jax.numpy`` code (``keras.ops.image.affine_transform``) that
compiles, but the flag still makes Keras run the whole training step op by op, hours instead of
minutes on a GPU (keras-team/keras#23229). The book's augmentation holds both layers, so the
mini-Xception and the simple convnet are affected.

:func:`allow` lifts the flag where the backend can compile the layers. Their randomness stays:
each layer's seed generator state is a non-trainable variable that the compiled step threads
through and advances, and outside training (``training=False``) they pass images through.
Call it on every model this project builds or loads; it is idempotent.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import keras

# Layers that Keras marks not compilable on every backend but that compile on JAX.
_COMPILE_ON_JAX = ("RandomRotation", "RandomZoom")

WHY_NOT_ON_TENSORFLOW = (
    "TensorFlow's XLA has no kernel for ImageProjectiveTransformV3, the op of RandomRotation and "
    "RandomZoom (tensorflow/tensorflow#100865)"
)


def _layers(model: keras.Model):
    return model._flatten_layers(include_self=False)


def allow(model: keras.Model) -> keras.Model:
    """Mark ``model``'s augmentation layers compilable where the backend compiles them (JAX);
    elsewhere leave the model as it is. Returns ``model``.

    A saved model is compiled as it is loaded, before this can run: Keras then turns the
    ``jit_compile=True`` it was saved with into False. That choice is made again here, or every
    ``predict`` of a loaded classifier would run op by op."""
    if keras.backend.backend() != "jax":
        return model
    lifted = False
    for layer in _layers(model):
        if type(layer).__name__ in _COMPILE_ON_JAX and not layer.supports_jit:
            layer.supports_jit = lifted = True
    saved_with_xla = model.compiled and model.get_compile_config().get("jit_compile") in (
        True,
        "auto",
    )
    if lifted and saved_with_xla and not model.jit_compile:
        model.jit_compile = True
        model.train_function = model.test_function = model.predict_function = None
    return model


@contextlib.contextmanager
def loading():
    """Around ``load_model``: Keras's warning that a model with these layers cannot be compiled
    is untrue on JAX once :func:`allow` has run, and names no layer on TensorFlow."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Model doesn't support `jit_compile=True`")
        yield


def blockers(model: keras.Model) -> list[str]:
    """The names of the layers that keep ``model`` from being compiled on this backend."""
    return [layer.name for layer in _layers(model) if not layer.supports_jit]


# Every program is kept, however fast it compiled (JAX's default keeps those over 1 s): a stage
# also compiles about a hundred small ones (Keras's eager ops, the initializers) at tens of ms
# each. Measured with the segmentation stage at toy sizes on a 2-core CPU: a second run spent 8.1 s
# compiling with only those over 0.5 s kept, 0.9 s with all of them kept (109 files, 1.1 MB).
CACHE_MIN_COMPILE_S = 0.0


def use_compile_cache(folder: Path | None) -> Path | None:
    """Keep what JAX compiles in ``folder`` from now on, and load from it what it compiled before
    (JAX's persistent compilation cache; ``None``: leave JAX's settings as they are). Its entries
    are keyed by the program, the JAX version, the device and the XLA flags, so a stale one is
    never used; deleting the folder only costs compile time. Returns the folder where it is used
    (the JAX backend), else None.

    What was compiled before the call is not kept. Only a trusted user may write to the folder: a
    cached program runs as it is found (JAX's documentation says so too)."""
    if folder is None or keras.backend.backend() != "jax":
        return None
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    current = jax.config.jax_compilation_cache_dir  # type: ignore[attr-defined]  # set at runtime
    if current != str(folder):
        jax.config.update("jax_compilation_cache_dir", str(folder))
        # JAX opens its cache folder once, at the first compilation that uses it.
        compilation_cache.reset_cache()
    jax.config.update("jax_persistent_cache_min_compile_time_secs", CACHE_MIN_COMPILE_S)
    # -1: every program that took long enough, whatever its size (0 lets JAX raise the minimum
    # for remote file systems).
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return folder
