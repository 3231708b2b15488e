"""Training throughput: the book's way against the project's input pipeline and precision settings.

    python bench/training_throughput.py [--quick] [--seg-size 96] [--cls-size 96] [--steps 6] [--xla]

The defaults (96 px for both models, 6 steps of 32 per fit, 3 rounds) finish in a few minutes on
a 2-core CPU of either class (AVX-512-BF16, or AVX2 without bfloat16, which is about 4x slower);
the book's sizes (``--seg-size 200 --cls-size 180``) take about 5x longer per step.

For each model (the book's segmentation model, the mini-Xception) every configuration is built and
compiled once, then timed in rounds: one ``fit`` of ``--steps`` steps per configuration per round,
the configurations in a rotating order, so a change in the machine's load (it is shared) hits all
of them alike. A configuration's figure is the median over rounds of the steps after the first
``--skip`` of each ``fit``. Ratios are what matter; absolute numbers depend on the load.

Configurations
    the book's way  float32 NumPy arrays (the book's ``np.zeros(..., "float32")``) into
                    ``model.fit(batch_size=32)``, float32 policy, loss only (the book's compile)
    pipeline ...    ``petvision.data.inputs.batches`` over uint8 memory maps (as the training stages),
                    the stage's metrics, float32 or ``mixed_bfloat16``; optionally XLA

The ceiling is the machine's matrix-multiply rate in the same precision (``tf.matmul`` of
``--matmul-n``), measured in every round too.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import numpy as np


@dataclass(frozen=True)
class Setup:
    name: str
    feed: str  # "arrays" (float32 in memory) | "pipeline" (uint8 memmaps through inputs.batches)
    precision: str  # keras dtype policy
    metrics: bool  # the stage's metrics (the book compiles with the loss only)
    xla: bool = False

    @property
    def matmul_dtype(self) -> str:
        return "bfloat16" if "bfloat16" in self.precision else "float32"


def setups(xla: bool, extra: bool) -> list[Setup]:
    chosen = [
        Setup("the book's way: float32 arrays, float32", "arrays", "float32", metrics=False),
        Setup("pipeline: uint8 memmap, float32", "pipeline", "float32", metrics=True),
        Setup("pipeline: uint8 memmap, mixed_bfloat16", "pipeline", "mixed_bfloat16", metrics=True),
    ]
    if extra:  # what each lever is worth on its own
        chosen.append(
            Setup(
                "pipeline, mixed_bfloat16, no metrics", "pipeline", "mixed_bfloat16", metrics=False
            )
        )
        chosen.append(
            Setup("the book's way + mixed_bfloat16", "arrays", "mixed_bfloat16", metrics=False)
        )
    if xla:
        chosen.append(
            Setup(
                "pipeline, mixed_bfloat16, XLA",
                "pipeline",
                "mixed_bfloat16",
                metrics=True,
                xla=True,
            )
        )
    return chosen


@dataclass(frozen=True)
class Task:
    name: str  # "segmentation" | "classification"
    label: str
    size: int

    def build(self):
        from petvision.models.classification import mini_xception
        from petvision.models.segmentation import book_model

        return book_model(self.size, 3) if self.name == "segmentation" else mini_xception(self.size)

    def loss(self) -> str:
        return (
            "sparse_categorical_crossentropy"
            if self.name == "segmentation"
            else "binary_crossentropy"
        )

    def metrics(self):
        from petvision.evaluation import metrics

        return (
            metrics.segmentation_metrics(3)
            if self.name == "segmentation"
            else metrics.classification_metrics()
        )

    def data(self, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        x = rng.integers(0, 256, (count, self.size, self.size, 3), dtype=np.uint8)
        if self.name == "segmentation":
            y = rng.integers(0, 3, (count, self.size, self.size, 1), dtype=np.uint8)
        else:
            y = rng.integers(0, 2, (count,), dtype=np.uint8)
        return x, y


class Trial:
    """One configuration: its model (built under its policy), compiled, and its data."""

    def __init__(
        self, task: Task, setup: Setup, x: np.ndarray, y: np.ndarray, folder: Path, batch: int
    ):
        import keras

        from petvision.data import inputs, npy_dataset

        self.task, self.setup, self.batch = task, setup, batch
        keras.config.set_dtype_policy(setup.precision)
        keras.utils.set_random_seed(1337)
        try:
            self.model = task.build()
        finally:
            keras.config.set_dtype_policy("float32")
        self.model.compile(
            optimizer=keras.optimizers.RMSprop(1e-3),
            loss=task.loss(),
            metrics=task.metrics() if setup.metrics else None,
            jit_compile=setup.xla,
        )
        # Keras silently drops XLA for models holding layers it marks not compilable (augmentation).
        self.xla_refused = setup.xla and not self.model.jit_compile
        if setup.feed == "arrays":
            # The book's arrays: float32 images, uint8 targets (its targets array is uint8 too).
            self.x, self.y = x.astype(np.float32), y
        else:
            paths = []
            for name, array in (("x", x), ("y", y)):
                path = folder / f"{task.name}_{name}.npy"
                if not path.exists():
                    np.save(path, array)
                paths.append(path)
            self.dataset = inputs.batches(
                npy_dataset.open_array(paths[0]),
                npy_dataset.open_array(paths[1]),
                batch,
                shuffle=True,
                seed=1337,
            )

    def fit(self, callbacks=()) -> None:
        if self.setup.feed == "arrays":
            self.model.fit(
                self.x,
                self.y,
                batch_size=self.batch,
                epochs=1,
                verbose=0,
                callbacks=list(callbacks),
            )
        else:
            self.model.fit(
                self.dataset, epochs=1, verbose=0, callbacks=list(callbacks), shuffle=False
            )


def feed_rate(trial: Trial, epochs: int = 3) -> float:
    """Images/s the input pipeline alone delivers (its batches iterated, no training), best of
    ``epochs`` passes: what feeding costs next to a training step."""
    best = 0.0
    for _ in range(epochs):
        start, count = time.perf_counter(), 0
        for x, _ in trial.dataset:
            count += int(x.shape[0])
        best = max(best, count / (time.perf_counter() - start))
    return best


def measure(
    task: Task, chosen: list[Setup], steps: int, skip: int, repeats: int, batch: int, matmul_n: int
) -> dict:
    count = steps * batch
    x, y = task.data(count)
    flops = common.training_flops(task.build())
    samples = {s.name: common.Samples() for s in chosen}
    ceilings = {"float32": common.Samples(), "bfloat16": common.Samples()}
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp:
        trials = [Trial(task, s, x, y, Path(tmp), batch) for s in chosen]
        for trial in trials:
            print(f"  {task.label}: warming up {trial.setup.name}", file=sys.stderr, flush=True)
            trial.fit()  # tracing and the first epoch's start-up stay out of the figures
        for r in range(repeats):
            order = trials[r % len(trials) :] + trials[: r % len(trials)]
            for trial in order:
                timer = common.StepTimer.make(skip, steps)
                trial.fit([timer])
                samples[trial.setup.name].values.append(timer.seconds_per_step())
                print(
                    f"  {task.label} round {r + 1}/{repeats}: {trial.setup.name}: "
                    f"{batch / timer.seconds_per_step():.2f} images/s",
                    file=sys.stderr,
                    flush=True,
                )
            for dtype, values in ceilings.items():
                values.values.append(1.0 / common.matmul_rate(dtype, matmul_n, repeats=5))
        feed = feed_rate(next(t for t in trials if t.setup.feed == "pipeline"))
    base = samples[chosen[0].name].values
    refused = {t.setup.name for t in trials if t.xla_refused}
    rows = []
    for s in chosen:
        per_step = samples[s.name].median()
        images = batch / per_step
        ceiling = 1.0 / ceilings[s.matmul_dtype].median()
        # Each round's ratio compares runs minutes apart, not a whole benchmark apart: the median
        # of those ratios is steadier on a shared machine than the ratio of the medians.
        ratios = [b / v for b, v in zip(base, samples[s.name].values)]
        rows.append(
            {
                "setup": s.name
                + (" (Keras refused XLA: augmentation layers)" if s.name in refused else ""),
                "precision": s.precision,
                "feed": s.feed,
                "xla": s.xla and s.name not in refused,
                "xla_configured": s.xla,
                "metrics": s.metrics,
                "images_per_s": images,
                "speedup": statistics.median(ratios),
                "ratio_range": (min(ratios), max(ratios)),
                "spread": samples[s.name].spread(),
                "gflops": images * flops / 1e9,
                "ceiling_gflops": ceiling,
                "matmul_dtype": s.matmul_dtype,
                "share": images * flops / 1e9 / ceiling,
            }
        )
    return {
        "task": task.name,
        "label": task.label,
        "size": task.size,
        "batch": batch,
        "steps": steps,
        "skip": skip,
        "repeats": repeats,
        "training_gflop_per_image": flops / 1e9,
        "rows": rows,
        "feed_images_per_s": feed,
        "matmul_gflops": {k: 1.0 / v.median() for k, v in ceilings.items()},
    }


def markdown(results: list[dict]) -> str:
    parts = []
    for res in results:
        parts.append(
            f"**{res['label']}** at {res['size']}x{res['size']} px, batch {res['batch']}, "
            f"{res['training_gflop_per_image']:.2f} GFLOP per training image (3x the forward pass, counted "
            f"from the layers); median of {res['repeats']} rounds of "
            f"{res['steps'] - res['skip']} timed steps; "
            "\"vs the book's way\" is the median of the rounds' ratios, "
            '"spread" the rounds\' (max - min) / median.\n'
        )
        rows = [
            [
                r["setup"],
                common.fmt(r["images_per_s"], 2),
                f"{r['speedup']:.2f}x",
                f"{r['ratio_range'][0]:.2f}-{r['ratio_range'][1]:.2f}",
                f"{r['gflops']:.0f}",
                f"{r['share'] * 100:.0f} % of {r['ceiling_gflops']:.0f} ({r['matmul_dtype']})",
                f"{r['spread'] * 100:.0f} %",
            ]
            for r in res["rows"]
        ]
        parts.append(
            common.table(
                [
                    "configuration",
                    "images/s",
                    "vs the book's way",
                    "per-round ratios",
                    "GFLOP/s",
                    "share of matmul rate",
                    "spread of rounds",
                ],
                rows,
            )
        )
        fastest = max(r["images_per_s"] for r in res["rows"])
        parts.append(
            f"\nThe input pipeline alone (`inputs.batches` over the uint8 memory maps, no training) delivers "
            f"{res['feed_images_per_s']:,.0f} images/s: feeding is "
            f"{fastest / res['feed_images_per_s'] * 100:.1f} % "
            "of the fastest configuration's time per image.\n"
        )
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: small images, few steps, one round"
    )
    parser.add_argument("--models", default="segmentation,classification")
    parser.add_argument(
        "--seg-size", type=int, default=96, help="segmentation image size (the book's: 200)"
    )
    parser.add_argument(
        "--cls-size", type=int, default=96, help="classification image size (the book's: 180)"
    )
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument(
        "--steps", type=int, default=6, help="steps per fit call (the first --skip are not timed)"
    )
    parser.add_argument("--skip", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="rounds over all configurations")
    parser.add_argument("--matmul-n", type=int, default=2048)
    parser.add_argument("--xla", action="store_true", help="add a jit_compile=True row")
    parser.add_argument("--levers", action="store_true", help="add rows that isolate each lever")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.seg_size, args.cls_size, args.steps, args.skip, args.repeats, args.matmul_n = (
            64,
            64,
            4,
            1,
            1,
            1024,
        )

    tasks = {
        "segmentation": Task("segmentation", "the book's segmentation model", args.seg_size),
        "classification": Task("classification", "mini-Xception", args.cls_size),
    }
    results = [
        measure(
            tasks[name],
            setups(args.xla, args.levers),
            args.steps,
            args.skip,
            args.repeats,
            args.batch,
            args.matmul_n,
        )
        for name in args.models.split(",")
    ]
    return common.report(results, markdown(results), args.json)


if __name__ == "__main__":
    main()
