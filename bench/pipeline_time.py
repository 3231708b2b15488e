"""How long the README's quick start takes on a fresh clone: `git clone`, then `make run` (venv
creation and the pinned install included, then `dvc repro` of every stage on the default preset),
then a second, no-op `dvc repro`. The budgets to check, on 2 cores: 300 s on a CPU with native
bfloat16 (AVX-512 BF16 or AMX), 600 s on an AVX2 CPU without it (about 4x slower at training).

    .venv/bin/python bench/pipeline_time.py [--uncommitted] [--keep] [--warm-cache]

Writes the section of docs/benchmarks.md for this machine's CPU class (between the
``pipeline_time_<class>`` markers), leaving the other classes' sections as they were. Heavy: it
installs the runtime's wheels (2.1 GB installed), by default into an empty uv cache (every wheel
downloaded, as on a newcomer's machine; ``--warm-cache`` uses this user's cache), and trains both
models, so run it on a quiet machine; the load average is recorded beside the times.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from common import (
    CLASS_NAMES,
    MATMUL_ROW,
    ROOT,
    cpu_class,
    fmt,
    machine_info,
    machine_markdown,
    matmul_speed,
    table,
    write_section,
)

# Seconds from a fresh clone to results, per CPU class (cpu_class()).
BUDGETS = {"avx512_bf16": 300, "avx2": 600, "other": 600}


def user_env() -> dict[str, str]:
    """A shell as a user has it before `make`: no virtual environment of ours on PATH, no
    tracking server chosen."""
    venv = os.environ.get("VIRTUAL_ENV", "")
    ours = {
        str(Path(sys.executable).parent),
        str(ROOT / ".venv" / "bin"),
        os.path.join(venv, "bin") if venv else "",
    }
    path = os.pathsep.join(
        p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p not in ours
    )
    drop = {"VIRTUAL_ENV", "MLFLOW_TRACKING_URI", "PETVISION_ROOT", "PYTHONPATH"}
    return {
        **{k: v for k, v in os.environ.items() if k not in drop and not k.startswith("DVC_")},
        "PATH": path,
    }


def timed(args: list[str], cwd: Path, log: Path) -> tuple[float, list[tuple[str, float]]]:
    """Run a command, its output to ``log``; return the wall time and, for `dvc repro`, when each
    stage started (seconds from the command's start)."""
    stages = []
    start = time.perf_counter()
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(args)}\n")
        out.flush()
        process = subprocess.Popen(
            args,
            cwd=cwd,
            env=user_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        assert process.stdout is not None
        for line in process.stdout:
            out.write(line)
            found = re.match(r"Running stage '([^']+)'", line)
            if found:
                stages.append((found.group(1), time.perf_counter() - start))
        code = process.wait()
    elapsed = time.perf_counter() - start
    if code:
        raise SystemExit(f"{' '.join(args)} failed (exit {code}) after {elapsed:.0f} s; see {log}")
    return elapsed, stages


def stage_durations(stages: list[tuple[str, float]], end: float) -> list[tuple[str, float]]:
    ends = [t for _, t in stages[1:]] + [end]
    return [(name, stop - begin) for (name, begin), stop in zip(stages, ends)]


def overlay_uncommitted(clone: Path) -> int:
    """Copy the working tree's uncommitted state (tracked changes, untracked files git does not
    ignore) over the clone, so the measurement covers work not yet committed."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    count = 0
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, clone / name)
            count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--uncommitted",
        action="store_true",
        help="measure the working tree as it is, uncommitted changes included (default: HEAD)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the clone (its path is printed)")
    parser.add_argument(
        "--no-write", action="store_true", help="print the section, do not write docs/benchmarks.md"
    )
    parser.add_argument(
        "--warm-cache",
        action="store_true",
        help="install from this user's uv cache (default: an empty one, as on a new machine)",
    )
    args = parser.parse_args()

    info = machine_info()
    info[MATMUL_ROW] = matmul_speed()
    klass = cpu_class()
    budget, section = BUDGETS[klass], f"pipeline_time_{klass}"
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()

    workdir = Path(tempfile.mkdtemp(prefix="petvision-pipeline-time-"))
    clone = workdir / "petvision"
    log = workdir / "pipeline_time.log"
    if args.warm_cache:
        cache_note = (
            "uv's cache as this user had it (wheels already downloaded are linked, not fetched)"
        )
    else:
        os.environ["UV_CACHE_DIR"] = str(workdir / "uv-cache")  # user_env() passes it on
        cache_note = "an empty uv cache: every wheel downloaded from the registry"
    print(f"install: {cache_note}", flush=True)
    print(f"working in {clone}; full output in {log}", flush=True)
    try:
        clone_s, _ = timed(["git", "clone", "--quiet", str(ROOT), str(clone)], workdir, log)
        what = f"HEAD {commit}"
        if args.uncommitted:
            what += f" + {overlay_uncommitted(clone)} files of the working tree"
        print(f"git clone: {clone_s:.1f} s", flush=True)

        # `make run` on a fresh clone = `make install-run` (venv + the runtime's pinned wheels)
        # then `dvc repro`; run as two commands only to tell the two times apart.
        install_s, _ = timed(["make", "install-run"], clone, log)
        print(f"make install-run: {install_s:.1f} s", flush=True)
        repro_s, stages = timed(["make", "run"], clone, log)
        print(f"make run (dvc repro): {repro_s:.1f} s", flush=True)
        noop_s, rerun = timed([str(clone / ".venv" / "bin" / "dvc"), "repro"], clone, log)
        if rerun:
            raise SystemExit(f"the second dvc repro ran stages {[s for s, _ in rerun]}; see {log}")
        print(f"second dvc repro (no-op): {noop_s:.1f} s", flush=True)
    finally:
        end_load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    total = clone_s + install_s + repro_s
    verdict = "within" if total <= budget else "OVER"
    rows = [
        ["git clone", fmt(clone_s)],
        ["make install-run (venv + the runtime's pinned wheels)", fmt(install_s)],
        *[[f"&nbsp;&nbsp;stage {name}", fmt(s)] for name, s in stage_durations(stages, repro_s)],
        ["make run (dvc repro, all stages)", fmt(repro_s)],
        [
            f"**fresh clone to results** ({verdict} this class's {budget} s budget)",
            f"**{fmt(total)}**",
        ],
        ["second dvc repro (nothing to do)", fmt(noop_s)],
    ]
    info["load average at end (1, 5, 15 min)"] = end_load
    body = "\n".join(
        [
            f"## The quick start on a fresh clone, {CLASS_NAMES[klass]} (bench/pipeline_time.py)",
            "",
            f"`git clone` + `make run` (venv creation and install included) + a no-op `dvc repro`, default "
            f"(quick) preset, measured {datetime.now():%Y-%m-%d %H:%M} on {what}. Installed with "
            f"{cache_note}.",
            "",
            table(["step", "seconds"], rows),
            "",
            machine_markdown(info),
        ]
    )
    print(body)
    if not args.no_write:
        write_section(section, body)
        print(f"wrote the {section} section of docs/benchmarks.md")


if __name__ == "__main__":
    main()
