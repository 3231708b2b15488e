"""The README's install on Python 3.13, the newest version TensorFlow 2.21 supports (the default
interpreter here is 3.11): ``make install PYTHON=python3.13`` in a copy of the project, then a
stage starts and prints its configuration."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from project_copy import ROOT, project_files, run


def find_python(version: str) -> str | None:
    """An interpreter of ``version`` (e.g. "3.13"): on PATH, or installed by pyenv (whose shims
    may refuse to run a version that is not selected, so its own folders are tried first)."""
    pyenv_root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    candidates = sorted(
        glob.glob(f"{pyenv_root}/versions/{version}*/bin/python{version}"), reverse=True
    )
    on_path = shutil.which(f"python{version}")
    candidates += [on_path] if on_path else []
    for candidate in candidates:
        done = subprocess.run(
            [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode == 0 and done.stdout.strip() == version:
            return candidate
    return None


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_make_install_and_a_stage_on_python_3_13(tmp_path):
    python = find_python("3.13")
    if python is None:
        pytest.skip("no Python 3.13 interpreter: none on PATH as python3.13, none under pyenv")
    project = tmp_path / "project"
    for name in project_files():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, project / name)

    # Without compiling every module's bytecode (half a minute here): one stage's start is checked.
    run(["make", "install", f"PYTHON={python}", "COMPILE_BYTECODE="], cwd=project, timeout=1100)

    venv_python = project / ".venv" / "bin" / "python"
    version = run([str(venv_python), "--version"], cwd=project).stdout
    assert version.startswith("Python 3.13"), version
    # As in a user's shell after `make install`: the venv first, no PYTHONPATH of this checkout's.
    user = {
        "PATH": f"{venv_python.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": "",
    }
    job = run(
        [str(venv_python), "-m", "petvision.train_segmentation", "--cfg", "job"],
        cwd=project,
        extra_env=user,
    )
    assert "preset: quick" in job.stdout and "segmentation:" in job.stdout, job.stdout
    # The installed project is the copy's own code, not this checkout's.
    where = run(
        [str(venv_python), "-c", "import petvision; print(petvision.__file__)"],
        cwd=tmp_path,
        extra_env=user,
    ).stdout
    assert Path(where.strip()).is_relative_to(project / "src"), where
