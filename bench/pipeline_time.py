"""How long the README's quick start takes on a fresh clone: `git clone`, then `make run` (venv
creation and the pinned install included, then `dvc repro` of every stage on the default preset),
then a second, no-op `dvc repro`. The claim to check: at most 10 minutes on a 2-core CPU.

    .venv/bin/python bench/pipeline_time.py [--uncommitted] [--keep]

Writes its section of docs/benchmarks.md (between the pipeline_time markers). Heavy: it installs
about 2.4 GB of wheels (from pip's cache when there is one; the output says which) and trains
both models, so run it on a quiet machine; the load average is recorded beside the times.
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

from common import ROOT, fmt, machine_info, machine_markdown, table, write_section

BUDGET_S = 600
SECTION = "pipeline_time"


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


def pip_cache() -> tuple[str, int]:
    """pip's cache folder for the `python3` that `make` uses, and its size in bytes (0: none)."""
    done = subprocess.run(
        ["python3", "-m", "pip", "cache", "dir"], capture_output=True, text=True, env=user_env()
    )
    folder = Path(done.stdout.strip()) if done.returncode == 0 and done.stdout.strip() else None
    if folder is None or not folder.is_dir():
        return ("(none)", 0)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return (str(folder), size)


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
    args = parser.parse_args()

    info = machine_info()
    cache_dir, cache_bytes = pip_cache()
    cache_note = (
        f"pip cache {cache_dir} held {cache_bytes / 2**20:,.0f} MiB before the install"
        if cache_bytes > 2**20
        else "pip cache empty: every wheel downloaded from the registry"
    )
    print(f"pip: {cache_note}", flush=True)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()

    workdir = Path(tempfile.mkdtemp(prefix="petvision-pipeline-time-"))
    clone = workdir / "petvision"
    log = workdir / "pipeline_time.log"
    print(f"working in {clone}; full output in {log}", flush=True)
    try:
        clone_s, _ = timed(["git", "clone", "--quiet", str(ROOT), str(clone)], workdir, log)
        what = f"HEAD {commit}"
        if args.uncommitted:
            what += f" + {overlay_uncommitted(clone)} files of the working tree"
        print(f"git clone: {clone_s:.1f} s", flush=True)

        # `make run` on a fresh clone = `make install` (venv + pinned wheels) then `dvc repro`;
        # run as two commands only to tell the two times apart.
        install_s, _ = timed(["make", "install"], clone, log)
        print(f"make install: {install_s:.1f} s", flush=True)
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
    verdict = "within" if total <= BUDGET_S else "OVER"
    rows = [
        ["git clone", fmt(clone_s)],
        ["make install (venv + pinned wheels)", fmt(install_s)],
        *[[f"&nbsp;&nbsp;stage {name}", fmt(s)] for name, s in stage_durations(stages, repro_s)],
        ["make run (dvc repro, all stages)", fmt(repro_s)],
        [
            f"**fresh clone to results** ({verdict} the {BUDGET_S // 60}-minute budget)",
            f"**{fmt(total)}**",
        ],
        ["second dvc repro (nothing to do)", fmt(noop_s)],
    ]
    info["load average at end (1, 5, 15 min)"] = end_load
    body = "\n".join(
        [
            "## The quick start on a fresh clone (bench/pipeline_time.py)",
            "",
            f"`git clone` + `make run` (venv creation and install included) + a no-op `dvc repro`, default "
            f"(quick) preset, measured {datetime.now():%Y-%m-%d %H:%M} on {what}. "
            f"{cache_note[0].upper()}{cache_note[1:]}.",
            "",
            table(["step", "seconds"], rows),
            "",
            machine_markdown(info),
        ]
    )
    print(body)
    if not args.no_write:
        write_section(SECTION, body)
        print(f"wrote the {SECTION} section of docs/benchmarks.md")


if __name__ == "__main__":
    main()
