"""Time to quality: wall time until each model reaches its bar, the project's quick recipe against
the book's recipe, side by side in one run on the same generated pets.

    python bench/time_to_quality.py [--models segmentation,classification] [--cap 4] [--folder DIR]

Bars (the quick preset's): the book's segmentation model's validation pet IoU >= 0.80, the
mini-Xception's validation accuracy >= 0.90.

Recipes, each on the quick preset's data (its image sizes and splits):
    quick   the quick preset's training (``conf/experiment/quick.yaml``: optimizer, peak rate,
            schedule, batch, epochs), uint8 memory maps through ``petvision.inputs.batches``,
            ``trainer.precision=auto``
    book    the book's: rmsprop at 1e-3, batch 32, a constant rate, float32 NumPy arrays into
            ``model.fit``, float32

The two recipes train in turns, one epoch each, so a change in the machine's load (it may be
shared) hits both alike; each one's clock runs only during its own epochs (validation included).
A recipe stops at the first epoch that reaches the bar. The book's recipe also stops once it has
used ``--cap`` times the quick recipe's time to quality without reaching the bar: the ratio is then
reported as "more than cap x", which is all the comparison needs and keeps the run to minutes.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import numpy as np

SECTION = "time_to_quality"
BARS = {"segmentation": ("val_pet_iou", 0.80), "classification": ("val_accuracy", 0.90)}
LABELS = {"segmentation": "the book's segmentation model", "classification": "mini-Xception"}
BOOK_RECIPE = {"optimizer": "rmsprop", "learning_rate": 1e-3, "batch_size": 32}


@dataclass
class Recipe:
    name: str
    model: object
    fit_one: object  # fit_one(epoch) -> logs of that epoch
    max_epochs: int
    describe: str
    seconds: float = 0.0
    epochs: int = 0
    values: list[float] = field(default_factory=list)
    reached_at: tuple[int, float] | None = None  # (epoch, seconds)
    stopped: str = ""


def prepare(folder: Path, overrides: list[str]):
    """The quick preset's generated pets, preprocessed by the project's own stages, under
    ``folder`` (reused when already there); returns the configuration."""
    from petvision import download, preprocess
    from petvision.data import layout

    paths = [
        f"paths.{n}={folder / n}" for n in ("raw", "downloads", "npy", "models", "reports", "state")
    ]
    cfg = common.config([*paths, *overrides])
    if not layout.Layout(cfg.paths.resolve("raw")).is_complete():
        download.run_download(cfg)
    if not (cfg.paths.resolve("npy") / "classification" / "index.json").is_file():
        preprocess.run_preprocess(cfg)
    return cfg


def _targets(task: str, split) -> np.ndarray:
    return split.masks if task == "segmentation" else split.labels


def build(cfg, task: str, precision: str, optimizer, seed: int):
    import keras

    from petvision.evaluation import metrics
    from petvision.models.classification import build_classifier
    from petvision.models.segmentation import build_segmentation_model

    keras.utils.set_random_seed(seed)
    keras.config.set_dtype_policy(precision)
    try:
        if task == "segmentation":
            model = build_segmentation_model(
                cfg.segmentation.model, cfg.data.segmentation.image_size
            )
            model.compile(
                optimizer=optimizer,
                loss="sparse_categorical_crossentropy",
                metrics=metrics.segmentation_metrics(cfg.segmentation.model.num_classes),
            )
        else:
            model = build_classifier(cfg.classification.model, cfg.data.classification.image_size)
            model.compile(
                optimizer=optimizer,
                loss="binary_crossentropy",
                metrics=metrics.classification_metrics(),
            )
    finally:
        keras.config.set_dtype_policy("float32")
    return model


def recipes(cfg, task: str, seed: int, book_epochs: int) -> list[Recipe]:
    import keras

    from petvision.data import inputs, npy_dataset
    from petvision.training import loop, runtime, schedules

    npy = cfg.paths.resolve("npy")
    train = npy_dataset.load_split(npy, task, "train")
    val = npy_dataset.load_split(npy, task, "val")
    quick = getattr(cfg, task).train

    precision = "mixed_bfloat16" if runtime.bf16_native("cpu") else "float32"
    steps = schedules.steps_per_epoch(len(train), quick.batch_size)
    model = build(cfg, task, precision, loop.make_optimizer(quick, steps), seed)
    train_ds = inputs.batches(
        train.images, _targets(task, train), quick.batch_size, shuffle=True, seed=seed
    )
    val_ds = inputs.batches(
        val.images, _targets(task, val), quick.batch_size, shuffle=False, seed=seed
    )

    def fit_quick(epoch: int) -> dict:
        return model.fit(
            train_ds,
            validation_data=val_ds,
            initial_epoch=epoch,
            epochs=epoch + 1,
            verbose=0,
            shuffle=False,
        ).history

    # The book's arrays: every image as float32 in memory, uint8 targets.
    x, y = np.asarray(train.images, np.float32), np.asarray(_targets(task, train))
    vx, vy = np.asarray(val.images, np.float32), np.asarray(_targets(task, val))
    book_opt = keras.optimizers.RMSprop(BOOK_RECIPE["learning_rate"])
    book_model = build(cfg, task, "float32", book_opt, seed)

    def fit_book(epoch: int) -> dict:
        return book_model.fit(
            x,
            y,
            batch_size=BOOK_RECIPE["batch_size"],
            validation_data=(vx, vy),
            initial_epoch=epoch,
            epochs=epoch + 1,
            verbose=0,
        ).history

    warmup = f", warm-up {quick.warmup_epochs:g} epochs" if quick.schedule != "constant" else ""
    return [
        Recipe(
            "quick",
            model,
            fit_quick,
            quick.epochs,
            f"{quick.optimizer} {quick.learning_rate:g} ({quick.schedule}{warmup}), "
            f"batch {quick.batch_size}, {quick.epochs} epochs, uint8 pipeline, {precision}",
        ),
        Recipe(
            "the book's",
            book_model,
            fit_book,
            book_epochs,
            f"rmsprop {BOOK_RECIPE['learning_rate']:g} (constant), batch {BOOK_RECIPE['batch_size']}, "
            "float32 arrays into fit, float32",
        ),
    ]


def race(task: str, runs: list[Recipe], cap: float, full: bool = False) -> None:
    """Epochs in turns until each recipe reached the bar, ran out of epochs, or (the book's) ran
    past ``cap`` times the quick recipe's time to quality."""
    key, bar = BARS[task]
    quick = runs[0]
    for epoch in range(max(r.max_epochs for r in runs)):
        for run in runs:
            if run.stopped:
                continue
            if run is not quick and quick.reached_at and run.seconds > cap * quick.reached_at[1]:
                run.stopped = f"past {cap:g}x the quick recipe's time"
                continue
            if epoch >= run.max_epochs:
                run.stopped = f"{run.max_epochs} epochs"
                continue
            start = time.perf_counter()
            logs = run.fit_one(epoch)
            run.seconds += time.perf_counter() - start
            run.epochs = epoch + 1
            value = float(logs[key][-1])
            run.values.append(value)
            train_key = key.removeprefix("val_")
            print(
                f"  {task} {run.name}: epoch {epoch + 1} {key} {value:.3f} ({train_key} "
                f"{float(logs[train_key][-1]):.3f}, {run.seconds:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
            if value >= bar and not run.reached_at:
                run.reached_at = (epoch + 1, run.seconds)
                run.stopped = "" if full else "reached"
        if all(r.stopped for r in runs):
            break
    for run in runs:
        run.stopped = run.stopped or f"{run.epochs} epochs"


def measure(cfg, task: str, seed: int, cap: float, book_epochs: int, only_quick: bool) -> dict:
    runs = recipes(cfg, task, seed, book_epochs)
    if only_quick:
        runs = runs[:1]
    # Alone, the quick recipe runs all its epochs: how far past the bar it ends is the margin.
    race(task, runs, cap, full=only_quick)
    quick = runs[0]
    result = {
        "task": task,
        "bar": list(BARS[task]),
        "cap": cap,
        "seed": seed,
        "recipes": [
            {
                "name": r.name,
                "describe": r.describe,
                "epochs": r.epochs,
                "seconds": r.seconds,
                "values": r.values,
                "reached_at": r.reached_at,
                "stopped": r.stopped,
            }
            for r in runs
        ],
    }
    if len(runs) > 1 and quick.reached_at:
        other = runs[1]
        if other.reached_at:
            result["ratio"] = other.reached_at[1] / quick.reached_at[1]
        else:
            result["ratio_above"] = other.seconds / quick.reached_at[1]
    return result


def markdown(results: list[dict]) -> str:
    parts = []
    for res in results:
        key, bar = res["bar"]
        rows = []
        for r in res["recipes"]:
            reached = (
                f"epoch {r['reached_at'][0]}, {r['reached_at'][1]:.0f} s"
                if r["reached_at"]
                else f"not reached in {r['epochs']} epochs ({r['seconds']:.0f} s)"
            )
            best = max(r["values"]) if r["values"] else float("nan")
            rows.append([r["name"], r["describe"], reached, f"{best:.3f}"])
        if "ratio" in res:
            verdict = f"**{res['ratio']:.1f}x** less time with the quick recipe"
        elif "ratio_above" in res:
            verdict = (
                f"**more than {res['ratio_above']:.1f}x**: the book's recipe had not reached the bar "
                f"after {res['ratio_above']:.1f}x the quick recipe's time"
            )
        else:
            verdict = "no ratio: the quick recipe did not reach the bar"
        parts += [
            f"**{LABELS[res['task']]}**, bar {key} >= {bar:.2f} (trainer seed {res['seed']}): {verdict}.\n",
            common.table(["recipe", "training", "bar reached", f"best {key}"], rows),
            "",
        ]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="segmentation,classification")
    parser.add_argument(
        "--cap",
        type=float,
        default=4.0,
        help="stop the book's recipe after this many times the quick recipe's time to quality",
    )
    parser.add_argument(
        "--book-epochs",
        "--seed-epochs",
        type=int,
        default=40,
        help="the book's recipe's epoch limit (--seed-epochs: its former name)",
    )
    parser.add_argument("--seed", type=int, help="trainer seed (default: the configuration's)")
    parser.add_argument(
        "--quick-only",
        action="store_true",
        help="the quick recipe alone, all its epochs (its margin over the bar)",
    )
    parser.add_argument(
        "--folder", type=Path, help="keep the generated data here (default: a temporary folder)"
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone"
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        help="Hydra overrides of the quick preset, e.g. segmentation.train.epochs=8",
    )
    args = parser.parse_args(argv)
    info = common.machine_info()  # first: the load average before this run adds to it
    info[common.MATMUL_ROW] = common.matmul_speed()
    started = time.perf_counter()
    with common.work_folder(args.folder, "bench-ttq-") as folder:
        cfg = prepare(folder, args.overrides)
        seed = cfg.trainer.seed if args.seed is None else args.seed
        results = [
            measure(cfg, task, seed, args.cap, args.book_epochs, args.quick_only)
            for task in args.models.split(",")
        ]
    klass = common.cpu_class()
    flags = " ".join([f"--models {args.models}", f"--cap {args.cap:g}", *args.overrides])
    body = "\n".join(
        [
            f"## Time to quality, {common.CLASS_NAMES[klass]} (bench/time_to_quality.py)",
            "",
            f"_`python bench/time_to_quality.py {flags}`, {datetime.now():%Y-%m-%d %H:%M}, "
            f"{(time.perf_counter() - started) / 60:.0f} min. Ratios hold across load (the recipes train in "
            "turns); the seconds do not: see the load average._",
            "",
            markdown(results),
            common.machine_markdown(info),
        ]
    )
    if not (args.no_write or args.quick_only or args.overrides):
        common.write_section(f"{SECTION}_{klass}", body)
    return common.report(results, body, args.json)


if __name__ == "__main__":
    main()
