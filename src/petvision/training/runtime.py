"""How a training process uses the machine: device, precision, XLA, distribution strategy, seeds.

:func:`setup` is the first thing a training stage calls, before TensorFlow touches a device:
hiding GPUs, turning on memory growth and creating a multi-worker strategy only work then.
It turns ``trainer.*`` into concrete choices, applies them, logs them, and returns them as a
:class:`Runtime` whose :meth:`Runtime.describe` goes into the MLflow run.

``precision: auto`` picks ``mixed_bfloat16`` only where bfloat16 is native (a CPU with AVX-512
BF16 or AMX, a GPU of compute capability 8.0 or newer): there it is about twice as fast as
float32 (measured on a 2-core AVX-512-BF16 CPU); elsewhere it is emulated and slower, so
``auto`` stays with float32.

On the JAX backend ``xla`` is always true (Keras runs a JAX step compiled only through XLA) and
only the default strategy exists. A multi-worker strategy also patches two faults of Keras 3's
TensorFlow trainer that otherwise stop ``fit`` under it (:func:`_let_keras_fit_multi_worker`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras

from petvision.config import TrainerConfig
from petvision.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["Runtime", "bf16_native", "setup"]

_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclass
class Runtime:
    device: str  # "gpu" or "cpu" actually used
    precision: str  # the Keras dtype policy actually set
    xla: bool  # for the caller's compile(jit_compile=...)
    strategy: Any  # tf.distribute.Strategy (a one-device stand-in on the JAX backend)
    strategy_name: str  # "default" | "mirrored" | "multi_worker"
    num_replicas: int
    is_chief: bool  # only the chief logs to MLflow and writes DVC outputs
    worker_index: int = 0  # this worker's index in a multi-worker cluster, else 0
    seed: int = 0
    deterministic: bool = False
    bf16_native: bool = False
    accelerator: str = ""  # the CPU model or the GPU name(s), for the record

    def describe(self) -> dict[str, str]:
        """The choices as MLflow tags/params (string values, ``runtime.`` keys)."""
        return {
            "runtime.device": self.device,
            "runtime.accelerator": self.accelerator or "unknown",
            "runtime.precision": self.precision,
            "runtime.bf16_native": str(self.bf16_native).lower(),
            "runtime.xla": str(self.xla).lower(),
            "runtime.strategy": self.strategy_name,
            "runtime.num_replicas": str(self.num_replicas),
            "runtime.is_chief": str(self.is_chief).lower(),
            "runtime.worker_index": str(self.worker_index),
            "runtime.seed": str(self.seed),
            "runtime.deterministic": str(self.deterministic).lower(),
            "runtime.keras_backend": keras.backend.backend(),
        }


# --------------------------------------------------------------------------- hardware facts


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:  # not Linux: no cheap, reliable way to tell, so assume no native bf16
        return ""


def _cpu_flags() -> set[str]:
    for line in _cpuinfo().splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def _cpu_name() -> str:
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return "cpu"


def _uses_tensorflow() -> bool:
    return keras.backend.backend() == "tensorflow"


def _gpus() -> list[Any]:
    """The GPUs the backend can see (physical devices for TensorFlow, devices for JAX)."""
    if _uses_tensorflow():
        import tensorflow as tf

        return tf.config.list_physical_devices("GPU")
    if keras.backend.backend() == "jax":
        import jax

        try:
            return jax.devices("gpu")
        except RuntimeError:  # no GPU platform
            return []
    return []


def _gpu_details(gpu: Any) -> tuple[str, tuple[int, int]]:
    """(name, compute capability) of one GPU; (repr, (0, 0)) where the backend does not say."""
    if _uses_tensorflow():
        import tensorflow as tf

        details = tf.config.experimental.get_device_details(gpu)
        return details.get("device_name", gpu.name), tuple(
            details.get("compute_capability", (0, 0))
        )
    if keras.backend.backend() == "jax":
        cc = str(getattr(gpu, "compute_capability", "0.0")).split(".")
        return getattr(gpu, "device_kind", str(gpu)), (int(cc[0]), int(cc[1]) if len(cc) > 1 else 0)
    return str(gpu), (0, 0)


def bf16_native(device: str = "auto") -> bool:
    """Whether bfloat16 arithmetic is native on ``device`` ("cpu", "gpu", or "auto": the GPU when
    the backend sees one, else the CPU). CPU: AVX-512 BF16 or AMX-BF16 in /proc/cpuinfo;
    GPU: compute capability 8.0 (Ampere) or newer, on every visible GPU."""
    if device == "auto":
        device = "gpu" if _gpus() else "cpu"
    if device == "cpu":
        return bool(_cpu_flags() & set(_CPU_BF16_FLAGS))
    gpus = _gpus()
    return bool(gpus) and all(_gpu_details(g)[1] >= (8, 0) for g in gpus)


# --------------------------------------------------------------------------- choices


def _choose_device(cfg: TrainerConfig) -> tuple[str, list[Any]]:
    gpus = _gpus()
    if cfg.device == "gpu" and not gpus:
        raise ConfigError(
            f"trainer.device='gpu' but the {keras.backend.backend()} backend sees no GPU "
            "(is the GPU build installed and CUDA_VISIBLE_DEVICES unset?); use trainer.device=auto or cpu"
        )
    if cfg.device == "cpu" or not gpus:
        return "cpu", gpus
    return "gpu", gpus


def _apply_device(device: str, gpus: list[Any]) -> None:
    if not _uses_tensorflow():
        if device == "cpu" and gpus and keras.backend.backend() == "jax":
            import jax

            # Listing the GPUs started JAX's backends, so they can no longer be hidden; new
            # arrays (and so the computations on them) go to the CPU instead.
            jax.config.update("jax_default_device", jax.devices("cpu")[0])
        return
    import tensorflow as tf

    try:
        if device == "cpu" and gpus:
            tf.config.set_visible_devices([], "GPU")
        elif device == "gpu":
            # Without growth TensorFlow takes all GPU memory at once, which starves any other
            # process (an evaluation, a second experiment) sharing the GPU.
            for gpu in gpus:
                tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError as exc:
        if device == "cpu" and tf.config.get_visible_devices("GPU"):
            raise RuntimeError(
                "runtime.setup() must run before TensorFlow initialises its devices "
                f"(trainer.device=cpu could not hide the GPUs: {exc})"
            ) from exc
        # Memory growth can only be set before initialisation; a second setup() in one
        # process keeps what the first one chose.


def _choose_precision(cfg: TrainerConfig, device: str, native: bool) -> str:
    if cfg.precision == "mixed_float16" and device == "cpu":
        raise ConfigError(
            f"trainer.precision='mixed_float16' with trainer.device={cfg.device!r} running on the CPU: "
            "float16 has no fast path on CPUs; use trainer.precision=mixed_bfloat16, float32 or auto"
        )
    if cfg.precision == "auto":
        return "mixed_bfloat16" if native else "float32"
    if cfg.precision == "mixed_bfloat16" and not native:
        log.warning(
            "trainer.precision=mixed_bfloat16 on a %s without native bfloat16: it is emulated and "
            "likely slower than float32 (trainer.precision=auto would choose float32)",
            device.upper(),
        )
    return cfg.precision


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


def _make_strategy(name: str) -> tuple[Any, bool, int]:
    """(strategy, is_chief, worker_index)."""
    if not _uses_tensorflow():
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
    if not all(
        hasattr(tf_trainer, name)
        for name in ("reduce_per_replica", "_collective_all_reduce_multi_worker")
    ):
        log.warning(
            "runtime: this Keras (%s) has another TensorFlow trainer; multi-worker fit is unpatched",
            keras.__version__,
        )
        return
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


def _set_determinism(deterministic: bool) -> None:
    if not deterministic:
        return
    if _uses_tensorflow():
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    elif keras.backend.backend() == "jax":
        # Only takes effect if the XLA GPU backend has not started yet.
        flags = os.environ.get("XLA_FLAGS", "")
        if "--xla_gpu_deterministic_ops" not in flags:
            os.environ["XLA_FLAGS"] = f"{flags} --xla_gpu_deterministic_ops=true".strip()


def _jit_compile(configured: bool) -> bool:
    """``trainer.xla`` is TensorFlow's choice. Keras on JAX runs a step compiled only through XLA
    (``jit_compile=False`` there means op by op, many times slower), so JAX always gets True."""
    if keras.backend.backend() == "jax":
        if not configured:
            log.info(
                "runtime: the JAX backend always compiles with XLA (trainer.xla=false applies to TensorFlow)"
            )
        return True
    return bool(configured)


def setup(cfg: TrainerConfig) -> Runtime:
    """Apply ``trainer.*`` to this process and return what was chosen. Call it first."""
    device, gpus = _choose_device(cfg)
    native = bf16_native(device)
    precision = _choose_precision(cfg, device, native)
    _apply_device(device, gpus)
    # The strategy comes before any op runs: a multi-worker strategy configures the runtime.
    strategy, is_chief, worker_index = _make_strategy(cfg.strategy)
    _set_determinism(cfg.deterministic)
    keras.utils.set_random_seed(cfg.seed)
    keras.config.set_dtype_policy(precision)

    if device == "gpu":
        accelerator = ", ".join(_gpu_details(g)[0] for g in gpus)
    else:
        accelerator = _cpu_name()
    rt = Runtime(
        device=device,
        precision=precision,
        xla=_jit_compile(cfg.xla),
        strategy=strategy,
        strategy_name=cfg.strategy,
        num_replicas=int(strategy.num_replicas_in_sync),
        is_chief=is_chief,
        worker_index=worker_index,
        seed=cfg.seed,
        deterministic=bool(cfg.deterministic),
        bf16_native=native,
        accelerator=accelerator,
    )
    why = (
        f"auto: bfloat16 {'native' if native else 'not native'} on this {device.upper()}"
        if cfg.precision == "auto"
        else "configured"
    )
    log.info(
        "runtime: device=%s (%s), precision=%s (%s), xla=%s, strategy=%s with %d replica(s)%s, "
        "seed=%d, deterministic=%s",
        device,
        accelerator,
        precision,
        why,
        rt.xla,
        rt.strategy_name,
        rt.num_replicas,
        "" if rt.is_chief else f", worker {worker_index} (not chief)",
        cfg.seed,
        rt.deterministic,
    )
    if rt.xla and device == "cpu" and _uses_tensorflow():
        log.info("runtime: trainer.xla=true on a CPU is often slower than without")
    return rt
