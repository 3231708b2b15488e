"""Distribution strategies: one device, or mirrored over one machine's GPUs.

Training across machines (``trainer.strategy=multi_worker``, TensorFlow's
``MultiWorkerMirroredStrategy``) was removed: Keras 3's ``fit`` cannot run under that strategy
without replacing parts of its TensorFlow trainer (keras-team/keras#20585, still so in Keras
3.15.1), and no supported way to do it exists on that backend. docs/architecture.md says why and
what to use instead; the configuration refuses the value with that advice.
"""

from __future__ import annotations

import contextlib
from typing import Any

import keras

from petvision.core.errors import ConfigError


class _OneDevice:
    """What a non-TensorFlow backend gets for ``trainer.strategy=default``: a strategy-shaped
    object whose ``scope()`` does nothing, so stages can use ``with rt.strategy.scope()`` everywhere."""

    num_replicas_in_sync = 1

    def scope(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()


def make_strategy(name: str) -> Any:
    """The ``trainer.strategy`` named: ``default`` or ``mirrored``."""
    if keras.backend.backend() != "tensorflow":
        if name != "default":
            raise ConfigError(
                f"trainer.strategy={name!r} needs the TensorFlow backend "
                f"(KERAS_BACKEND={keras.backend.backend()}); "
                "use trainer.strategy=default"
            )
        return _OneDevice()
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    raise ConfigError(f"trainer.strategy={name!r}: must be one of default, mirrored")
