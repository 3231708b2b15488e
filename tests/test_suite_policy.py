"""The test suite's own rules, which a change to conftest.py or pyproject.toml could break without
any other test noticing: the quality gate runs only when asked for, petvision's deprecations are
errors in the processes the tests start too, and in-process fixtures have a time bound."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from conftest import ROOT, time_bound
from project_copy import env as project_env
from project_copy import make_project

GATE = "test_the_quick_preset_reaches_both_bars"


def collected(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode in (0, 5), done.stdout[-3000:] + done.stderr[-3000:]  # 5: none selected
    return done.stdout


@pytest.mark.parametrize(
    "args, selected",
    [
        ([], False),
        (["-m", "slow"], False),  # the README's "the rest": not the gate, although it is slow too
        (["-m", "not slow"], False),
        (["-m", "quality"], True),  # make quality-gate
        (["-m", "slow and quality"], True),
    ],
)
def test_the_quality_gate_runs_only_when_a_marker_expression_names_it(args, selected):
    listed = collected(*args, "tests/test_quality_gate.py")
    assert (GATE in listed) == selected, listed
    if not selected and "not slow" not in args:
        assert "1 deselected" in listed, listed


CHILD = """
import warnings
warnings.warn_explicit("old API", DeprecationWarning, "x.py", 1, module="{module}")
print("went on")
"""


@pytest.mark.parametrize("extra_path", [None, "src"])
def test_a_deprecation_raised_from_petvision_fails_a_process_the_tests_start(extra_path):
    """As pytest's filterwarnings fail a test in process (pyproject.toml), so a stage started in a
    subprocess fails: the environment the tests pass on (also with a PYTHONPATH of their own, as
    the project-copy tests set) applies the same filters. Others' deprecations only warn."""
    env = project_env(PYTHONPATH=extra_path) if extra_path else project_env()
    for module, fails in (("petvision.training.loop", True), ("keras.src.ops", False)):
        done = subprocess.run(
            [sys.executable, "-c", CHILD.format(module=module)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if fails:
            assert done.returncode == 1 and "DeprecationWarning: old API" in done.stderr, done
            assert "went on" not in done.stdout
        else:
            assert done.returncode == 0 and "went on" in done.stdout, done


def test_so_it_does_in_a_stage_that_dvc_runs_in_a_project_copy(tmp_path):
    """dvc.yaml's commands set ``PYTHONPATH=src``, replacing the tests' own: the project copies
    carry the filters in their src/ (project_copy.make_project)."""
    project = make_project(tmp_path / "project", commit=False)
    done = subprocess.run(
        ["sh", "-c", f"PYTHONPATH=src {sys.executable} -c '{CHILD.format(module='petvision.x')}'"],
        cwd=project,
        env=project_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and "DeprecationWarning: old API" in done.stderr, done


def test_time_bound_fails_a_block_that_runs_too_long():
    began = time.monotonic()
    with (
        pytest.raises(pytest.fail.Exception, match=r"sleeping took more than 1 s"),
        time_bound(1, "sleeping"),
    ):
        time.sleep(30)
    assert time.monotonic() - began < 10
    with time_bound(0.5, "a quick block"):  # and lets a block within its bound finish
        time.sleep(0.1)
    time.sleep(0.8)  # the timer was cancelled: nothing fires after the block
