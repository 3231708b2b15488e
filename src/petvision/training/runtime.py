"""How a training process uses the machine: device, precision, XLA, distribution strategy, seeds.

:func:`setup` is the first thing a training stage calls, before TensorFlow touches a device:
hiding GPUs and turning on memory growth only work then.
It turns ``trainer.*`` into concrete choices, applies them, logs them, and returns them as a
:class:`Runtime` whose :meth:`Runtime.describe` goes into the MLflow run.

``precision: auto`` picks ``mixed_bfloat16`` only where bfloat16 is native (a CPU with AVX-512
BF16 or AMX, a GPU of compute capability 8.0 or newer): there it is about twice as fast as
float32 (measured on a 2-core AVX-512-BF16 CPU); elsewhere it is emulated and slower, so
``auto`` stays with float32.

On the JAX backend ``xla`` is always true (Keras runs a JAX step compiled only through XLA) and
only the default strategy exists. The strategies are made in :mod:`petvision.training.distribute`.

Compiling is most of a short run's time on JAX (measured on an H200: about 20 s for the book's
segmentation model, 80 s for the mini-Xception, per process, against under 20 s of training), so
there :func:`setup` keeps what XLA compiles in a folder (``paths.compile_cache``, see
:func:`petvision.models.xla.use_compile_cache`, which the visualize stage uses too): a rerun, a
DVC experiment or the other stage loads a step it has compiled before instead of compiling it
again. ``trainer.xla_flags`` reaches XLA the only way it reads flags, ``XLA_FLAGS`` before the
backend starts. TensorFlow is left as it was by both.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras

from petvision.config import TrainerConfig
from petvision.core.errors import ConfigError, TrainingError
from petvision.models import xla
from petvision.training import distribute, faults

log = logging.getLogger(__name__)

__all__ = ["Runtime", "bf16_native", "setup"]

_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclass
class Runtime:
    device: str  # "gpu" or "cpu" actually used
    precision: str  # the Keras dtype policy actually set
    xla: bool  # for the caller's compile(jit_compile=...)
    strategy: Any  # tf.distribute.Strategy (a one-device stand-in on the JAX backend)
    strategy_name: str  # "default" | "mirrored"
    num_replicas: int
    seed: int = 0
    deterministic: bool = False
    bf16_native: bool = False
    accelerator: str = ""  # the CPU model or the GPU name(s), for the record
    steps_per_execution: int = 1  # for the caller's compile(steps_per_execution=...)
    compile_cache: Path | None = None  # where compiled programs are kept (JAX), else None
    xla_flags: str = ""  # XLA_FLAGS as the JAX backend starts with them ("" on TensorFlow)

    def describe(self) -> dict[str, str]:
        """The choices as MLflow tags/params (string values, ``runtime.`` keys)."""
        kept = {"runtime.compile_cache": str(self.compile_cache)} if self.compile_cache else {}
        if self.xla_flags:
            kept["runtime.xla_flags"] = self.xla_flags
        return {
            "runtime.device": self.device,
            "runtime.accelerator": self.accelerator or "unknown",
            "runtime.precision": self.precision,
            "runtime.bf16_native": str(self.bf16_native).lower(),
            "runtime.xla": str(self.xla).lower(),
            "runtime.strategy": self.strategy_name,
            "runtime.num_replicas": str(self.num_replicas),
            "runtime.seed": str(self.seed),
            "runtime.deterministic": str(self.deterministic).lower(),
            "runtime.keras_backend": keras.backend.backend(),
            "runtime.steps_per_execution": str(self.steps_per_execution),
            **kept,
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
            raise TrainingError(
                "trainer.device=cpu could not hide the GPUs: TensorFlow had started on them "
                f"already ({exc}); run with CUDA_VISIBLE_DEVICES= to hide them from the start"
            ) from None
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


def _set_determinism(deterministic: bool) -> None:
    """TensorFlow's op determinism (JAX's is an XLA flag: :func:`_set_xla_flags`)."""
    if deterministic and _uses_tensorflow():
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


_XLA_FLAG = re.compile(r"--xla_\w+(=\S*)?")


def _set_xla_flags(cfg: TrainerConfig) -> str:
    """On JAX, ``trainer.xla_flags`` (and the determinism flag) into ``XLA_FLAGS``, which XLA reads
    once, as its backend starts: so before :func:`_choose_device` lists the devices. A configured
    flag replaces one of the same name already there. Returns what XLA_FLAGS holds."""
    wanted = cfg.xla_flags.split()
    malformed = [flag for flag in wanted if not _XLA_FLAG.fullmatch(flag)]
    if malformed:
        # XLA aborts the process on a flag it does not know; this catches the typos it can't name.
        raise ConfigError(
            f"trainer.xla_flags={cfg.xla_flags!r}: {malformed[0]!r} is not of the form "
            "--xla_name or --xla_name=value"
        )
    current = os.environ.get("XLA_FLAGS", "")
    if keras.backend.backend() != "jax":
        if wanted:
            log.warning(
                "trainer.xla_flags applies to the JAX backend; ignored on %s",
                keras.backend.backend(),
            )
        return current
    if cfg.deterministic:
        wanted.append("--xla_gpu_deterministic_ops=true")
    names = {flag.split("=")[0] for flag in wanted}
    kept = [flag for flag in current.split() if flag.split("=")[0] not in names]
    flags = " ".join([*kept, *wanted])
    if flags != current:
        os.environ["XLA_FLAGS"] = flags
    return flags


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


def _log_choices(rt: Runtime, cfg: TrainerConfig) -> None:
    why = (
        f"auto: bfloat16 {'native' if rt.bf16_native else 'not native'} on this {rt.device.upper()}"
        if cfg.precision == "auto"
        else "configured"
    )
    log.info(
        "runtime: device=%s (%s), precision=%s (%s), xla=%s, strategy=%s with %d replica(s), "
        "seed=%d, deterministic=%s, steps_per_execution=%d",
        rt.device,
        rt.accelerator,
        rt.precision,
        why,
        rt.xla,
        rt.strategy_name,
        rt.num_replicas,
        rt.seed,
        rt.deterministic,
        rt.steps_per_execution,
    )
    if keras.backend.backend() == "jax":
        log.info(
            "runtime: compiled programs kept in %s; XLA_FLAGS=%r",
            rt.compile_cache or "no folder (trainer.compile_cache=false)",
            rt.xla_flags,
        )
    if rt.xla and rt.device == "cpu" and _uses_tensorflow():
        log.info("runtime: trainer.xla=true on a CPU is often slower than without")


def setup(cfg: TrainerConfig, compile_cache: Path | None = None) -> Runtime:
    """Apply ``trainer.*`` to this process and return what was chosen. Call it first.
    ``compile_cache``: the folder where the JAX backend keeps what it compiles unless
    ``trainer.compile_cache`` is false (the stages pass ``paths.compile_cache``); None: none."""
    faults.announce()  # the reliability tests' kill switch: refused or announced before any work
    xla_flags = _set_xla_flags(cfg)
    device, gpus = _choose_device(cfg)
    native = bf16_native(device)
    precision = _choose_precision(cfg, device, native)
    _apply_device(device, gpus)
    strategy = distribute.make_strategy(cfg.strategy)
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
        seed=cfg.seed,
        deterministic=bool(cfg.deterministic),
        bf16_native=native,
        accelerator=accelerator,
        steps_per_execution=cfg.steps_per_execution,
        compile_cache=xla.use_compile_cache(compile_cache if cfg.compile_cache else None),
        xla_flags=xla_flags if keras.backend.backend() == "jax" else "",
    )
    _log_choices(rt, cfg)
    return rt
