"""All benchmarks side by side in one run; writes the results into docs/benchmarks.md.

    python bench/run_all.py                  # what `make bench` runs (20-30 minutes on 2 quiet cores)
    python bench/run_all.py --quick          # a smoke run of every benchmark (a few minutes)
    python bench/run_all.py --pipeline-time  # also bench/pipeline_time.py (dvc repro, ~10 more minutes)

Only the section between ``<!-- performance:start -->`` and ``<!-- performance:end -->`` is
rewritten; the rest of the document (another benchmark's section, the notes) is left as it is.
Run it on a quiet machine: every figure is a median of interleaved rounds, and ratios are what
matter, but a machine busy with other work still widens the spread.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

SECTION = "performance"
SPEEDUP_TARGET, IOU_TOLERANCE, MEMORY_TARGET = 1.8, 0.02, 0.25


def auto_row(throughput: dict, native: bool) -> dict:
    """The project's default (trainer.precision=auto, no XLA) row of one model's table."""
    want = "mixed_bfloat16" if native else "float32"
    return next(
        r
        for r in throughput["rows"]
        if r["feed"] == "pipeline"
        and r["precision"] == want
        and r["metrics"]
        and not r["xla_configured"]
    )


def targets(seg: dict, accuracy: dict | None, prep: dict, native: bool) -> str:
    from petvision.config import TrainerConfig
    from petvision.training import runtime

    rows = []
    row = auto_row(seg, native)
    met = row["speedup"] >= SPEEDUP_TARGET
    rows.append(
        [
            f"segmentation training >= {SPEEDUP_TARGET}x the book's way (CPU, precision auto)",
            f"{row['speedup']:.2f}x ({row['precision']})",
            "met" if met else f"**not met** (short by {SPEEDUP_TARGET / row['speedup']:.2f}x)",
        ]
    )
    if accuracy:
        worst = max(
            (r for r in accuracy["runs"] if r["precision"] != "float32"),
            key=lambda r: abs(r["difference"]),
        )
        rows.append(
            [
                f"validation mean IoU within {IOU_TOLERANCE} of float32 after {accuracy['epochs']} epochs",
                f"{worst['difference']:+.3f} ({worst['precision']})",
                "met"
                if worst["within_tolerance"]
                else f"**not met** (off by {abs(worst['difference']):.3f})",
            ]
        )
    runs = prep["runs"]
    book = runs["the book's loop (float32 arrays)"]["peak_used_kb"]
    for name in ("petvision.preprocess, 1 worker", "petvision.preprocess, 1 worker per core"):
        ratio = runs[name]["peak_used_kb"] / book
        rows.append(
            [
                f"preprocess peak memory <= {MEMORY_TARGET:.2f} of the book's loop ({name.split(', ')[1]})",
                f"{ratio:.2f}",
                "met"
                if ratio <= MEMORY_TARGET
                else f"**not met** ({ratio / MEMORY_TARGET:.1f}x over)",
            ]
        )
    # precision=auto on a machine without native bfloat16 (the decision itself, no such machine needed).
    chosen = runtime._choose_precision(
        TrainerConfig(
            device="cpu",
            precision="auto",
            xla=False,
            strategy="default",
            seed=0,
            deterministic=False,
            resume=False,
        ),
        "cpu",
        False,
    )
    rows.append(
        [
            "precision auto picks float32 where bfloat16 is not native",
            chosen,
            "met" if chosen == "float32" else "**not met**",
        ]
    )
    return common.table(["target", "measured", "result"], rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke runs of every benchmark")
    parser.add_argument(
        "--pipeline-time", action="store_true", help="also run bench/pipeline_time.py last"
    )
    parser.add_argument(
        "--no-accuracy", action="store_true", help="skip the float32 vs bfloat16 accuracy runs"
    )
    parser.add_argument(
        "--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone"
    )
    args = parser.parse_args(argv)

    import preprocess_memory
    import segmentation_accuracy
    import training_throughput

    from petvision.training import runtime

    started = time.perf_counter()
    info = common.machine_info()  # first: the load average before this run adds to it
    native = runtime.bf16_native("cpu")
    quick = ["--quick"] if args.quick else []
    print("== preprocessing", file=sys.stderr, flush=True)
    prep = preprocess_memory.main(quick)
    print("== training throughput", file=sys.stderr, flush=True)
    throughput = training_throughput.main(quick + ([] if args.quick else ["--xla", "--levers"]))
    accuracy = None
    if not args.no_accuracy:
        print("== accuracy, float32 against mixed_bfloat16", file=sys.stderr, flush=True)
        accuracy = segmentation_accuracy.main(quick)
    seg = next(t for t in throughput if t["task"] == "segmentation")

    quick_flag = " --quick" if args.quick else ""
    quick_note = " (a smoke run: small sizes, one round)" if args.quick else ""
    body = "\n".join(
        [
            f"_Written by `bench/run_all.py{quick_flag}` on {datetime.now():%Y-%m-%d %H:%M}"
            f" in {(time.perf_counter() - started) / 60:.0f} min{quick_note}._\n",
            "### Machine\n",
            common.machine_markdown(info),
            "",
            "### Targets"
            + (
                " (a smoke run: sizes too small and rounds too few to judge them)"
                if args.quick
                else ""
            )
            + "\n",
            targets(seg, accuracy, prep, native),
            "",
            "### Training throughput\n",
            training_throughput.markdown(throughput),
            *(
                [
                    "### Accuracy: float32 against the faster precision\n",
                    segmentation_accuracy.markdown(accuracy),
                    "",
                ]
                if accuracy
                else []
            ),
            "### Preprocessing: speed and peak memory\n",
            preprocess_memory.markdown(prep),
        ]
    )
    print(body)
    if not args.no_write:
        common.write_section(SECTION, body)
        print(f"wrote the {SECTION} section of {common.DOC}", file=sys.stderr)

    if args.pipeline_time:
        script = Path(__file__).resolve().parent / "pipeline_time.py"
        if not script.is_file():
            sys.exit(f"{script}: missing")
        subprocess.run([sys.executable, str(script)], check=True)


if __name__ == "__main__":
    main()
