"""What the benchmarks share: the machine's description, FLOP counts, the matrix-multiply ceiling,
a steady-state step timer for ``model.fit``, and writing a section of ``docs/benchmarks.md``.

Backend-neutral at import (no TensorFlow): ``scripts/gpu_check`` uses it under ``KERAS_BACKEND=jax``
on a machine without TensorFlow. Each function imports the backend it needs when called.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
if str(ROOT / "src") not in sys.path:  # a machine where petvision is not installed (the GPU image)
    sys.path.insert(0, str(ROOT / "src"))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The CPU flags that decide the fast paths of convolutions and bfloat16 (runtime.bf16_native).
INTERESTING_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")


# --------------------------------------------------------------------------- the machine


def _cpuinfo_field(name: str) -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""
    for line in text.splitlines():
        if line.startswith(name):
            return line.partition(":")[2].strip()
    return ""


def _version(*names: str) -> str:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "absent"


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


CLASS_NAMES = {
    "avx512_bf16": "AVX-512 BF16 (native bfloat16)",
    "avx2": "AVX2, no native bfloat16",
    "other": "neither AVX-512 BF16 nor AVX2",
}


def cpu_class() -> str:
    """The CPU class that decides training speed here: native bfloat16 (AVX-512 BF16 or AMX),
    else AVX2 (float32, about 4x slower at training), else other. docs/benchmarks.md keeps one
    section per class."""
    flags = set(_cpuinfo_field("flags").split())
    if flags & {"avx512_bf16", "amx_bf16"}:
        return "avx512_bf16"
    return "avx2" if "avx2" in flags else "other"


def machine_info() -> dict[str, str]:
    """The facts a reader needs to compare two tables (strings, in display order)."""
    import keras

    flags = set(_cpuinfo_field("flags").split())
    try:
        mem = f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB"
    except (ValueError, OSError, AttributeError):
        mem = "unknown"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return {
        "CPU": _cpuinfo_field("model name") or platform.processor() or "unknown",
        "cores usable": str(cores()),
        "memory": mem,
        "CPU flags": " ".join(f for f in INTERESTING_FLAGS if f in flags) or "(none of note)",
        "load average at start (1, 5, 15 min)": load,
        "Python": platform.python_version(),
        "Keras": f"{keras.__version__} (backend {keras.backend.backend()})",
        "TensorFlow": _version("tensorflow", "tensorflow-cpu"),
        "JAX": _version("jax"),
        "NumPy": _version("numpy"),
        "Pillow": _version("pillow"),
    }


def machine_markdown(info: dict[str, str]) -> str:
    return "\n".join(["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in info.items())])


# --------------------------------------------------------------------------- FLOPs


def _spatial(shape) -> int:
    n = 1
    for d in shape[1:-1]:
        n *= int(d)
    return n


def forward_flops(model) -> int:
    """Multiply-adds x 2 of one image's forward pass, from the layers' shapes (channels last).

    Counts convolutions (plain, transposed, separable, depthwise) and dense layers: what the
    matrix units do. Element-wise layers (BN, ReLU, pooling, adds) are left out; they are a few
    percent of the work and bound by memory, not arithmetic."""
    import keras

    total = 0
    for layer in _leaf_layers(model):
        name = type(layer).__name__
        if name in ("Conv2D", "Conv1D", "Conv3D"):
            k = 1
            for s in layer.kernel_size:
                k *= s
            total += (
                2
                * _spatial(layer.output.shape)
                * int(layer.output.shape[-1])
                * k
                * int(layer.input.shape[-1])
                // layer.groups
            )
        elif name == "Conv2DTranspose":
            k = layer.kernel_size[0] * layer.kernel_size[1]
            # Every input pixel is scattered through the whole kernel to every output channel.
            total += (
                2
                * _spatial(layer.input.shape)
                * int(layer.input.shape[-1])
                * k
                * int(layer.output.shape[-1])
            )
        elif name in ("SeparableConv2D", "DepthwiseConv2D"):
            k = layer.kernel_size[0] * layer.kernel_size[1]
            cin = int(layer.input.shape[-1])
            mult = layer.depth_multiplier
            total += 2 * _spatial(layer.output.shape) * cin * mult * k
            if name == "SeparableConv2D":
                total += 2 * _spatial(layer.output.shape) * cin * mult * int(layer.output.shape[-1])
        elif isinstance(layer, keras.layers.Dense):
            total += (
                2
                * int(layer.input.shape[-1])
                * int(layer.output.shape[-1])
                * max(1, _spatial(layer.output.shape))
            )
    return total


def training_flops(model) -> int:
    """Forward plus backward (gradients for the inputs and for the weights: twice the forward),
    the usual 3x; the book's segmentation model costs 4.51 G multiply-adds (9.0 GFLOP) forward per
    200 px image, so about 27 GFLOP to train on one."""
    return 3 * forward_flops(model)


def _leaf_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:  # nested Sequential (augmentation)
            yield from _leaf_layers(layer)
        else:
            yield layer


# --------------------------------------------------------------------------- the matmul ceiling


def matmul_rate(dtype: str, n: int = 2048, repeats: int = 10) -> float:
    """GFLOP/s of an n x n x n matrix product in ``dtype`` ("float32" or "bfloat16") through the
    active Keras backend's own matmul (``tf.matmul``, ``jax.numpy.matmul``, ``torch.matmul``),
    on random data, warmed up, median of ``repeats`` over two rotating input pairs."""
    import keras

    backend = keras.backend.backend()
    flops = 2.0 * n**3
    if backend == "tensorflow":
        import tensorflow as tf

        pairs = [
            (
                tf.cast(tf.random.normal((n, n), seed=i), dtype),
                tf.cast(tf.random.normal((n, n), seed=i + 9), dtype),
            )
            for i in range(2)
        ]
        product = tf.function(tf.matmul)

        def run(a, b):
            product(a, b).numpy()  # .numpy() waits for the result
    elif backend == "jax":
        import jax
        import jax.numpy as jnp

        keys = jax.random.split(jax.random.PRNGKey(0), 4)
        pairs = [
            (
                jax.random.normal(keys[2 * i], (n, n)).astype(dtype),
                jax.random.normal(keys[2 * i + 1], (n, n)).astype(dtype),
            )
            for i in range(2)
        ]
        product = jax.jit(jnp.matmul)

        def run(a, b):
            product(a, b).block_until_ready()
    elif backend == "torch":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        torch_dtype = {
            "float32": torch.float32,
            "bfloat16": torch.bfloat16,
            "float16": torch.float16,
        }[dtype]
        pairs = [
            (
                torch.randn(n, n, device=device, dtype=torch_dtype),
                torch.randn(n, n, device=device, dtype=torch_dtype),
            )
            for _ in range(2)
        ]

        def run(a, b):
            torch.matmul(a, b)
            if device == "cuda":
                torch.cuda.synchronize()
    else:
        raise NotImplementedError(f"matmul_rate on the {backend!r} backend")
    for a, b in pairs:
        run(a, b)  # warm-up: tracing, compilation, handle creation
    times = []
    for i in range(repeats):
        a, b = pairs[i % 2]
        start = time.perf_counter()
        run(a, b)
        times.append(time.perf_counter() - start)
    return flops / statistics.median(times) / 1e9


MATMUL_ROW = "TensorFlow matmul 2048³, float32 / bfloat16 (GFLOP/s)"


def matmul_speed() -> str:
    """This machine's matrix-multiply rate, float32 / bfloat16 GFLOP/s, for the table beside a
    wall time: machines of one CPU class differ (two 2-core AVX-512-BF16 VMs measured 471 / 794
    and 213 / 415), so a time is comparable only beside the rate it was measured at."""
    return f"{matmul_rate('float32'):.0f} / {matmul_rate('bfloat16'):.0f}"


# --------------------------------------------------------------------------- timing fit


def _callback_base():
    import keras

    return keras.callbacks.Callback


class StepTimer:
    """A Keras callback factory: ``StepTimer.make(skip, steps)`` times the steps after the first
    ``skip`` of a ``fit`` call (tracing, pipeline start-up and the first batches stay out). It
    waits for the step's result only at its two marks, so asynchronous backends keep their
    overlap of input feeding and compute in between."""

    @staticmethod
    def make(skip: int, steps: int):
        base = _callback_base()

        class _Timer(base):
            def __init__(self):
                super().__init__()
                self.start_step = self.start = self.end = None
                self.end_step = None

            def on_train_batch_end(self, batch, logs=None):
                logs = logs or {}
                if self.start is None and batch >= skip - 1:
                    _wait(logs)
                    self.start, self.start_step = time.perf_counter(), batch
                elif batch >= steps - 1 and self.end is None:
                    _wait(logs)
                    self.end, self.end_step = time.perf_counter(), batch

            def seconds_per_step(self) -> float:
                if self.start is None or self.end is None or self.end_step <= self.start_step:
                    raise RuntimeError("too few steps to time: raise --steps above --skip")
                return (self.end - self.start) / (self.end_step - self.start_step)

        return _Timer()


def _wait(logs: dict) -> None:
    value = logs.get("loss")
    if value is not None:
        float(value)  # a device value: converting it waits for the step that made it


@dataclass
class Samples:
    """Repeated measurements of one configuration (seconds per step)."""

    values: list[float] = field(default_factory=list)

    def median(self) -> float:
        return statistics.median(self.values)

    def spread(self) -> float:
        """(max - min) / median: how far apart the repeats were."""
        return (
            (max(self.values) - min(self.values)) / self.median() if len(self.values) > 1 else 0.0
        )


# --------------------------------------------------------------------------- the document


def write_section(name: str, body: str, doc: Path = DOC) -> None:
    """Replace (or append) the text between ``<!-- name:start -->`` and ``<!-- name:end -->`` in
    ``doc``; every other section, e.g. another engineer's, is kept as it is."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = doc.read_text(encoding="utf-8") if doc.is_file() else "# Benchmarks\n"
    block = f"{start}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    tmp = doc.with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, doc)


def fmt(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


@contextlib.contextmanager
def work_folder(folder: Path | None, prefix: str):
    """``folder`` when given (kept, so a rerun reuses its generated data), else a temporary one."""
    if folder:
        yield Path(folder)
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


def report(results, text: str, json_path: Path | None):
    """Print a benchmark's markdown and, on request, write its raw results as JSON."""
    print(text)
    if json_path:
        Path(json_path).write_text(json.dumps(results, indent=2))
    return results


# --------------------------------------------------------------------------- generated data


def data_overrides(
    folder: Path, num_images: int, seg_size: int = 200, cls_size: int = 180, workers: int = 0
) -> list[str]:
    """Hydra overrides that put every path under ``folder`` and size the splits to fit
    ``num_images`` generated pets (segmentation: a sixth for validation; classification: all of
    them, half for training, a sixth for validation, a third for testing, even counts for balance)."""
    even = lambda n: max(2, n - n % 2)  # noqa: E731
    train, val = even(num_images // 2), even(num_images // 6)
    test = even(num_images - train - val - 1)
    return [
        *(
            f"paths.{name}={folder / name}"
            for name in ("raw", "downloads", "npy", "models", "reports", "state")
        ),
        f"tracking.uri=sqlite:///{folder}/mlflow.db",
        "data.source=synthetic",
        f"data.synthetic.num_images={num_images}",
        f"data.segmentation.image_size={seg_size}",
        f"data.segmentation.val_count={max(1, num_images // 6)}",
        f"data.classification.image_size={cls_size}",
        f"data.classification.train_count={train}",
        f"data.classification.val_count={val}",
        f"data.classification.test_count={test}",
        f"data.preprocess.workers={workers}",
    ]


def config(overrides: list[str]):
    from petvision import config as config_lib

    return config_lib.load(config_lib.compose(overrides))


def generated_pets(folder: Path, num_images: int, **sizes) -> Path:
    """``num_images`` synthetic pets in the Oxford-IIIT Pet layout under ``folder/raw`` (the
    download stage's own code), reused if already there; returns that folder."""
    from petvision import download
    from petvision.data import layout

    cfg = config(data_overrides(folder, num_images, **sizes))
    raw = cfg.paths.resolve("raw")
    if not layout.Layout(raw).is_complete():
        download.run_download(cfg)
    return raw
