"""XLA compilations per stage on Keras's JAX backend, on a first run and with a warm persistent
compilation cache (``paths.compile_cache``, :func:`petvision.models.xla.use_compile_cache`).

    .venv/bin/python bench/compile_time.py [--sizes tiny|quick] [--runs 2] [--work DIR] [--no-cache]

Runs download and preprocess once, then each training stage and visualize ``--runs`` times in
fresh processes, as ``dvc repro`` runs them (``python -m petvision.<stage>``), every output under
``--work`` (a temporary folder by default). One cache folder serves them all, as in a project:
the first run of a stage finds what the stages before it compiled (nothing, for the first) and
adds its own; the later ones load from it what they compiled before. ``--no-cache`` adds a run
with ``trainer.compile_cache=false`` first: what every run compiled before the cache.

``JAX_LOG_COMPILES=1`` makes JAX log every compilation; the table gives per stage and run its
seconds, the XLA compilations and their seconds (a program loaded from the cache counts as one,
with the seconds the loading took), those of the training step, and how many programs came from
the cache. ``tiny`` (the default) is the tests' toy pipeline with batch sizes that divide the
splits, so that every training batch has one shape: a model's steps compile as long at any size.
``quick`` is the default preset (minutes per stage on a CPU). Each run's log is kept under
``--work`` when it is given; ``--json`` writes the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAINING = ("train_segmentation", "train_xception")
# visualize reads both trained models: it runs after the training stages.
STAGES = (*TRAINING, "visualize")

# The tiny preset's sizes and batches (conf/experiment/tiny.yaml: batches that divide every split,
# 50/10 segmentation images at batch 10, 24/10/10 classification images at batch 12, its few
# pictures in visualize) on the default preset's recipe (Adam, warm-up and cosine), as the figures
# in docs/benchmarks.md were measured.
TINY = [
    "preset=tiny",
    "data.synthetic.num_images=60",
    "data.synthetic.min_side=64",
    "data.synthetic.max_side=96",
    "data.segmentation.image_size=32",
    "data.segmentation.val_count=10",
    "data.classification.image_size=32",
    "data.classification.train_count=24",
    "data.classification.val_count=10",
    "data.classification.test_count=10",
    "segmentation.train.epochs=1",
    "segmentation.train.batch_size=10",
    "classification.train.epochs=1",
    "classification.train.batch_size=12",
    "visualize.num_images=2",
    "visualize.activations.images_per_row=4",
    "visualize.filters.num_filters=2",
    "visualize.filters.steps=2",
    "visualize.gradcam.localization_images=4",
    "visualize.segmentation.worst=2",
]

_COMPILED = re.compile(r"Finished XLA compilation of (?:jit\()?([\w.<>-]+)\)? in ([\d.]+) sec")
_CACHE_HIT = re.compile(r"Persistent compilation cache hit for '(?:jit_)?([\w.<>-]+)'")
_TRACED = re.compile(r"Finished tracing ([\w.<>-]+) for jit in ([\d.]+) sec")
_LOWERED = re.compile(
    r"Finished jaxpr to MLIR module conversion (?:jit\()?([\w.<>-]+)\)? in ([\d.]+) sec"
)


@dataclass
class Compiles:
    """What one process's JAX_LOG_COMPILES log says it compiled."""

    count: int = 0  # XLA compilations, those answered by the persistent cache included
    seconds: float = 0.0  # in XLA (or in loading from the cache)
    trace_lower_seconds: float = 0.0  # tracing to a jaxpr and lowering it to MLIR, before XLA
    cache_hits: int = 0
    by_name: dict[str, int] = field(default_factory=dict)  # compilations per function
    seconds_by_name: dict[str, float] = field(default_factory=dict)
    hits_by_name: dict[str, int] = field(default_factory=dict)


def read_compiles(log: str) -> Compiles:
    """The compilations a log of ``JAX_LOG_COMPILES=1`` records (JAX's own log lines)."""
    names: Counter[str] = Counter()
    seconds: Counter[str] = Counter()
    for name, took in _COMPILED.findall(log):
        names[name] += 1
        seconds[name] += float(took)
    hits = Counter(_CACHE_HIT.findall(log))
    before_xla = sum(float(s) for _, s in _TRACED.findall(log) + _LOWERED.findall(log))
    return Compiles(
        count=sum(names.values()),
        seconds=sum(seconds.values()),
        trace_lower_seconds=before_xla,
        cache_hits=sum(hits.values()),
        by_name=dict(names),
        seconds_by_name={k: round(v, 3) for k, v in seconds.items()},
        hits_by_name=dict(hits),
    )


@dataclass
class Run:
    stage: str
    label: str  # "no cache", "first run", "warm cache"
    seconds: float
    compiles: Compiles


def stage_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "XLA_FLAGS")}
    env.update(
        KERAS_BACKEND="jax",
        JAX_LOG_COMPILES="1",
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p),
    )
    return env


def run_stage(stage: str, overrides: list[str], log: Path) -> float:
    began = time.monotonic()
    with log.open("w") as out:
        done = subprocess.run(
            [sys.executable, "-m", f"petvision.{stage}", *overrides],
            cwd=ROOT,
            env=stage_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"{stage} failed (rc {done.returncode}); the end of {log}:\n{tail}")
    return time.monotonic() - began


def overrides_for(work: Path, sizes: str) -> list[str]:
    places = {name: work / name for name in ("raw", "npy", "models", "reports", "state")}
    return [
        *(f"paths.{name}={path}" for name, path in places.items()),
        f"paths.downloads={work / 'downloads'}",
        f"paths.compile_cache={work / 'compile_cache'}",
        f"tracking.uri=sqlite:///{work / 'mlflow.db'}",
        *(TINY if sizes == "tiny" else []),
    ]


def measure(work: Path, sizes: str, runs: int, no_cache: bool) -> list[Run]:
    base = overrides_for(work, sizes)
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for stage in ("download", "preprocess"):
        print(f"[compile_time] {stage}", flush=True)
        run_stage(stage, base, logs / f"{stage}.log")
    labels = [*(["no cache"] if no_cache else []), "first run"]
    labels += [f"warm cache{f' {i}' if runs > 2 else ''}" for i in range(1, runs)]
    results = []
    for stage in STAGES:
        for i, label in enumerate(labels):
            extra = ["trainer.compile_cache=false"] if label == "no cache" else []
            log = logs / f"{stage}.{i}.log"
            print(f"[compile_time] {stage}: {label}", flush=True)
            seconds = run_stage(stage, [*base, *extra], log)
            results.append(
                Run(stage, label, seconds, read_compiles(log.read_text(errors="replace")))
            )
    return results


def table(results: list[Run]) -> str:
    rows = [
        "| stage | run | stage s | XLA compilations | their s | trace+lower s "
        "| train step: compilations, s | from the cache |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        c = r.compiles
        step = f"{c.by_name.get('train_step', 0)}, {c.seconds_by_name.get('train_step', 0.0):.1f}"
        rows.append(
            f"| {r.stage} | {r.label} | {r.seconds:.0f} | {c.count} | {c.seconds:.1f} | "
            f"{c.trace_lower_seconds:.1f} | {step} | {c.cache_hits} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", choices=("tiny", "quick"), default="tiny")
    parser.add_argument("--runs", type=int, default=2, help="runs per stage with the cache (>= 2)")
    parser.add_argument("--no-cache", action="store_true", help="add a run without the cache first")
    parser.add_argument(
        "--work", type=Path, help="where the runs write (default: a temporary folder)"
    )
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import common

    with tempfile.TemporaryDirectory(prefix="compile_time-") as scratch:
        work = (args.work or Path(scratch)).resolve()
        results = measure(work, args.sizes, max(args.runs, 2), args.no_cache)
        info = common.machine_info()
        print(common.machine_markdown(info))
        kept = f", logs in {work / 'logs'}" if args.work else ""
        print(f"\nKeras on JAX, sizes {args.sizes}{kept}\n")
        print(table(results))
        if args.json:
            args.json.write_text(
                json.dumps({"machine": info, "runs": [asdict(r) for r in results]}, indent=1)
            )


if __name__ == "__main__":
    main()
