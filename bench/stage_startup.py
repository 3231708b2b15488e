"""What the garbage collector costs a stage process: ``python -m petvision.<stage>`` as the project
runs it (no collection while the libraries import, then what they imported frozen out of the
collector: petvision/__init__.py, petvision/cli/stage.py) against the same run with the
collector as Python sets it up (on throughout, nothing frozen), side by side.

    .venv/bin/python bench/stage_startup.py [--rounds 5] [--stages train_xception visualize]

Runs download and preprocess of the tiny preset once in a temporary folder, then each stage
``--rounds`` times each way, alternating (project, then plain, then project...), each run a fresh
process on the same data and store. Reports per stage the medians of CPU seconds (user + system),
wall seconds and peak memory of each way, and the median of the per-round ratios project/plain.
The tiny preset is what most of the test suite's stage runs are like: seconds of work after
seconds of imports; a long training gains the same seconds, a smaller share.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("train_segmentation", "train_xception", "visualize")

# The plain way: the module run as -m runs it, but from `python -c`, so petvision/__init__.py does
# not see "-m" (the collector stays on while importing), and with gc.freeze made a no-op, so
# cli.stage.main freezes nothing.
PLAIN = (
    "import gc, runpy, sys; gc.freeze = lambda: None; sys.argv = [sys.argv[1], *sys.argv[2:]]; "
    "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)"
)


def overrides(work: Path) -> list[str]:
    folders = ("raw", "downloads", "npy", "models", "reports", "state")
    return [
        "experiment=tiny",
        *(f"paths.{name}={work / name}" for name in folders),
        f"paths.compile_cache={work / 'compile_cache'}",
        f"tracking.uri=sqlite:///{work / 'mlflow.db'}",
        f"hydra.run.dir={work / 'hydra'}",
    ]


def measured(command: list[str], log: Path) -> dict:
    """One run in a fresh process: its CPU seconds, wall seconds and peak memory (MiB)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    began = time.perf_counter()
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - began
    if os.waitstatus_to_exitcode(status) != 0:
        # The temporary folder goes with the exit: the log's end, not its path.
        sys.exit(f"{' '.join(command[:4])} failed:\n{log.read_text()[-3000:]}")
    return {
        "cpu": usage.ru_utime + usage.ru_stime,
        "wall": wall,
        "peak_mib": usage.ru_maxrss / 1024,
    }


def row(stage: str, given: list[str], rounds: int, work: Path) -> str:
    """One stage ``rounds`` times each way, alternating: its row of the table."""
    module = f"petvision.{stage}"
    ways: dict[str, list[dict]] = {"project": [], "plain": []}
    for n in range(rounds):
        project = [sys.executable, "-m", module, *given]
        ways["project"].append(measured(project, work / f"{stage}-{n}-project.log"))
        plain = [sys.executable, "-c", PLAIN, module, *given]
        ways["plain"].append(measured(plain, work / f"{stage}-{n}-plain.log"))
    ratio = statistics.median(a["cpu"] / b["cpu"] for a, b in zip(ways["project"], ways["plain"]))
    cells = [stage]
    for key, digits in (("cpu", 1), ("wall", 1), ("peak_mib", 0)):
        for way in ("project", "plain"):
            cells.append(f"{statistics.median(r[key] for r in ways[way]):.{digits}f}")
        if key == "cpu":
            cells.append(f"{ratio:.2f}")
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stage-startup-") as tmp:
        work = Path(tmp)
        given = overrides(work)
        for stage in ("download", "preprocess", *STAGES):  # the data, and a model per stage
            measured([sys.executable, "-m", f"petvision.{stage}", *given], work / f"{stage}.log")
        print(f"{args.rounds} rounds each way, alternating; medians (CPU = user + system)\n")
        print(
            "| stage | CPU s, project | CPU s, plain | ratio | wall s, project | wall s, plain "
            "| peak MiB, project | peak MiB, plain |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for stage in args.stages:
            print(row(stage, given, args.rounds, work), flush=True)


if __name__ == "__main__":
    main()
