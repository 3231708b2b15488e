"""Distribution strategies: one device, mirrored over a machine's GPUs, or multi-worker.

``trainer.strategy=multi_worker`` reads the cluster from ``TF_CONFIG`` (checked here, so that a
mistake is named before TensorFlow sees it) and patches two faults of Keras 3's TensorFlow
trainer that otherwise stop ``fit`` under it (:func:`_let_keras_fit_multi_worker`). The patch
replaces Keras internals, so it runs only on the Keras versions it was tested with and fails
loudly, naming the version, on any other.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from typing import Any

import keras

from petvision.core.errors import ConfigError, TrainingError

log = logging.getLogger(__name__)

# The Keras versions whose TensorFlow trainer the multi-worker patch was written for and tested
# with (tests/test_multiworker.py). Another version: check keras-team/keras#20585, re-run that
# test, and add the version here.
PATCHED_KERAS = ("3.15.",)


def _parse_tf_config(raw: str | None) -> dict[str, Any]:
    """TF_CONFIG, checked enough that a mistake is named here instead of deep in TensorFlow."""
    where = "trainer.strategy='multi_worker' needs TF_CONFIG"
    if not raw:
        raise ConfigError(
            f"{where} (JSON with this worker's cluster and task, e.g. "
            '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
            '"task": {"type": "worker", "index": 0}}), '
            "but the environment variable TF_CONFIG is not set"
        )
    try:
        conf = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"{where} to be JSON; TF_CONFIG={raw!r} is not ({exc})") from None
    cluster = conf.get("cluster") if isinstance(conf, dict) else None
    task = conf.get("task") if isinstance(conf, dict) else None
    if not isinstance(cluster, dict) or not any(
        isinstance(cluster.get(k), list) and cluster[k] for k in ("worker", "chief")
    ):
        raise ConfigError(
            f"{where} with a 'cluster' listing 'worker' (or 'chief') addresses; TF_CONFIG={raw!r}"
        )
    if (
        not isinstance(task, dict)
        or task.get("type") not in cluster
        or not isinstance(task.get("index"), int)
    ):
        raise ConfigError(
            f"{where} with a 'task' of a type listed in its cluster and an integer index; TF_CONFIG={raw!r}"
        )
    members = cluster[task["type"]]
    if not isinstance(members, list) or not 0 <= task["index"] < len(members):
        raise ConfigError(
            f"{where}: task index {task['index']} is outside cluster[{task['type']!r}] "
            f"({len(members) if isinstance(members, list) else 0} entries); TF_CONFIG={raw!r}"
        )
    return conf


def _is_chief(tf_config: dict[str, Any]) -> bool:
    """The chief task, or worker 0 when the cluster has no chief (TensorFlow's own rule)."""
    task = tf_config["task"]
    if task["type"] == "chief":
        return True
    return task["type"] == "worker" and task["index"] == 0 and "chief" not in tf_config["cluster"]


class _OneDevice:
    """What a non-TensorFlow backend gets for ``trainer.strategy=default``: a strategy-shaped
    object whose ``scope()`` does nothing, so stages can use ``with rt.strategy.scope()`` everywhere."""

    num_replicas_in_sync = 1

    def scope(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()


def make_strategy(name: str) -> tuple[Any, bool, int]:
    """(strategy, is_chief, worker_index)."""
    if keras.backend.backend() != "tensorflow":
        if name != "default":
            raise ConfigError(
                f"trainer.strategy={name!r} needs the TensorFlow backend "
                f"(KERAS_BACKEND={keras.backend.backend()}); "
                "use trainer.strategy=default"
            )
        return _OneDevice(), True, 0
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy(), True, 0
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(), True, 0
    tf_config = _parse_tf_config(os.environ.get("TF_CONFIG"))
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    _let_keras_fit_multi_worker()
    return strategy, _is_chief(tf_config), int(tf_config["task"]["index"])


def _let_keras_fit_multi_worker() -> None:
    """Work around two bugs that stop Keras 3's ``fit`` under ``MultiWorkerMirroredStrategy``
    (open upstream as keras-team/keras#20585; seen with Keras 3.15.1; tests/test_multiworker.py fails
    without this):

    * before training, Keras all-reduces a whole input batch (``strategy.reduce("MEAN", batch)``)
      only to learn its shapes, which a collective cannot do ("Attempt to convert a value
      (PerReplica ...)"): the shapes come from the dataset's ``element_spec`` instead;
    * after each step, Keras reduces every logged scalar along ``axis=0``, which a scalar does not
      have ("Invalid reduction dimension 0"): the mean over the replicas is taken instead, as Keras
      does for every other strategy.

    Only processes that create a multi-worker strategy are patched; it is done once."""
    from keras.src.backend.tensorflow import trainer as tf_trainer

    if getattr(tf_trainer, "_petvision_multi_worker", False):
        return
    _check_patched_keras(tf_trainer)
    original_reduce = tf_trainer.reduce_per_replica

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None:
            return
        if data_batch is None and iterator is not None:
            data_batch = iterator.data_adapter.get_tf_dataset().element_spec
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(
            strategy
        ):
            return tf_trainer.tree.map_structure(
                lambda v: strategy.reduce("MEAN", v, axis=None), values
            )
        return original_reduce(values, strategy, reduction)

    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    tf_trainer.reduce_per_replica = reduce_per_replica
    tf_trainer._petvision_multi_worker = True


def _check_patched_keras(tf_trainer: Any) -> None:
    """The patch replaces internals of one Keras version: refuse any other, naming it."""
    missing = [
        name
        for name in ("reduce_per_replica", "_collective_all_reduce_multi_worker", "tree")
        if not hasattr(tf_trainer, name)
    ] + [
        name
        for name in ("_maybe_symbolic_build", "_symbolic_build")
        if not hasattr(tf_trainer.TensorFlowTrainer, name)
    ]
    if not keras.__version__.startswith(PATCHED_KERAS) or missing:
        found = f"; its TensorFlow trainer lacks {', '.join(missing)}" if missing else ""
        raise TrainingError(
            f"trainer.strategy=multi_worker patches Keras internals written for Keras "
            f"{' or '.join(v + 'x' for v in PATCHED_KERAS)}, and this is Keras {keras.__version__}"
            f"{found}; install keras==3.15.1 (the pinned version) or use trainer.strategy=mirrored"
        )
