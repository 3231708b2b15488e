"""The visualize stage's time, two checkouts side by side on the same inputs: this one and
another (an older commit in a second git worktree), run alternately so that the machine's load
falls on both alike.

    .venv/bin/python bench/visualize_time.py --other ../old-checkout [--rounds 3]

The inputs are fixed: untrained quick-size models (the mini-Xception at 96 px, the book's
segmentation model at 64 px, built from a fixed seed) saved where the pipeline saves them, and
400 test and 200 validation images of the quick preset's sizes (a bright square pet on noise).
Untrained weights cost what trained ones do. Each run is ``run_visualize`` with
``experiment=quick`` in a fresh process (``PYTHONPATH`` and ``PETVISION_ROOT`` pointing at the
checkout), timed from the stage's call to its return: CPU seconds (user + system, all threads)
and wall seconds. Prints the medians, their ratio and the headline figures of each side, which
must agree.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, cpu_class, machine_info, machine_markdown, table

DRIVER = r"""
import json, logging, resource, sys, time
from pathlib import Path

logging.basicConfig(level=logging.WARNING)
base, out = Path(sys.argv[1]), Path(sys.argv[2])
from petvision import config
from petvision.visualize import run_visualize

names = ("raw", "downloads", "reports", "state")
cfg = config.load(config.compose([
    f"paths.npy={base / 'npy'}", f"paths.models={base / 'models'}",
    *(f"paths.{name}={out / name}" for name in names),
    f"tracking.uri=sqlite:///{out / 'mlflow.db'}", "experiment=quick", *sys.argv[3:],
]))
before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
metrics = run_visualize(cfg)
wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
print(json.dumps({"wall": wall, "cpu": cpu, "metrics": metrics}, default=str))
"""


def make_inputs(base: Path, test_images: int, val_images: int) -> None:
    """The npy arrays and the two untrained models, as the pipeline lays them out."""
    import keras
    import numpy as np

    from petvision.config import Task
    from petvision.data import npy_dataset
    from petvision.models.classification import mini_xception
    from petvision.models.segmentation import book_model

    sizes = {
        Task.classification: (96, "test", test_images),
        Task.segmentation: (64, "val", val_images),
    }
    rng = np.random.default_rng(0)
    for task, (size, split, count) in sizes.items():
        (base / "npy" / task).mkdir(parents=True, exist_ok=True)
        labels = (np.arange(count) % 2).astype(np.uint8)
        images = rng.integers(0, 60, (count, size, size, 3), dtype=np.uint8)
        masks = np.ones((count, size, size, 1), np.uint8)
        side = size // 3
        for i in range(count):
            top, left = rng.integers(0, size - side, 2)
            images[i, top : top + side, left : left + side, 2 * labels[i]] = 220
            masks[i, top : top + side, left : left + side] = 0
        arrays = {"images": images, "masks": masks, "labels": labels}
        for name in npy_dataset.ARRAYS[task]:
            np.save(npy_dataset.array_path(base / "npy", task, split, name), arrays[name])
        stems = {
            split: [
                f"{'Abyssinian' if y == 0 else 'beagle'}_{split}_{i}" for i, y in enumerate(labels)
            ]
        }
        index = npy_dataset.make_index(task, size, stems)
        (base / "npy" / task / npy_dataset.INDEX_FILE).write_text(json.dumps(index))
    (base / "models").mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    mini_xception(96, None, 0.5).save(base / "models" / "classifier.keras")
    book_model(64, 3).save(base / "models" / "segmentation.keras")


def run_once(checkout: Path, base: Path, out: Path, overrides: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(checkout / "src"), "PETVISION_ROOT": str(checkout)}
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, str(base), str(out), *overrides],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"{checkout}: the stage failed\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def headline(metrics: dict) -> dict[str, float]:
    """The figures both sides must agree on (to 3 significant digits)."""
    loc, faith = metrics["localization"], metrics["faithfulness"]
    figures = {
        "localization pointing game": loc["pointing_game"],
        "localization heat ratio": loc["heat_ratio"],
        "Grad-CAM pointing game": metrics["gradcam"]["pointing_game"],
        "Grad-CAM heat ratio": metrics["gradcam"]["heat_ratio"],
    }
    for kind in ("deletion", "insertion"):
        for name, value in faith[f"{kind}_auc"].items():
            figures[f"{kind} AUC, {name}"] = value
    figures["occlusion: background greyed"] = faith["occlusion"]["background_greyed"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--other", type=Path, required=True, help="the checkout to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--test-images", type=int, default=400)
    parser.add_argument("--val-images", type=int, default=200)
    parser.add_argument("overrides", nargs="*", help="more Hydra overrides for both sides")
    args = parser.parse_args()
    sides = {"this": ROOT, "other": args.other.resolve()}
    times: dict[str, list[dict]] = {name: [] for name in sides}
    with tempfile.TemporaryDirectory(prefix="visualize-time-") as tmp:
        base = Path(tmp)
        make_inputs(base, args.test_images, args.val_images)
        for r in range(args.rounds):
            order = list(sides) if r % 2 == 0 else list(reversed(sides))
            for name in order:
                found = run_once(sides[name], base, base / f"{name}{r}", args.overrides)
                times[name].append(found)
                print(
                    f"round {r + 1} {name}: cpu {found['cpu']:.1f} s, wall {found['wall']:.1f} s",
                    flush=True,
                )
    median = {
        name: {k: statistics.median(run[k] for run in runs) for k in ("cpu", "wall")}
        for name, runs in times.items()
    }
    rows = [
        [
            f"{name} ({sides[name]})",
            *(", ".join(f"{run[k]:.1f}" for run in times[name]) for k in ("cpu", "wall")),
            f"{median[name]['cpu']:.1f}",
            f"{median[name]['wall']:.1f}",
        ]
        for name in sides
    ]
    print(f"\nCPU class: {cpu_class()}\n" + machine_markdown(machine_info()) + "\n")
    print(
        table(
            ["checkout", "CPU s per run", "wall s per run", "median CPU s", "median wall s"], rows
        )
    )
    print(
        f"\nother / this: CPU {median['other']['cpu'] / median['this']['cpu']:.2f}x, "
        f"wall {median['other']['wall'] / median['this']['wall']:.2f}x\n"
    )
    figures = {name: headline(runs[0]["metrics"]) for name, runs in times.items()}
    print(
        table(
            ["figure", "this", "other"],
            [
                [k, f"{figures['this'][k]:.4g}", f"{figures['other'][k]:.4g}"]
                for k in figures["this"]
            ],
        )
    )


if __name__ == "__main__":
    main()
