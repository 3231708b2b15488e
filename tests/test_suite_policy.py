"""The test suite's own rules, which a change to conftest.py or pyproject.toml could break without
any other test noticing: the tests that read the session's trained pipeline run last and only in
the slow set, the quality gate follows the CPU, petvision's deprecations are errors in the
processes the tests start too, those on TensorFlow load no JAX, and in-process fixtures have a time
bound."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from conftest import ROOT, time_bound
from project_copy import env as project_env
from project_copy import make_project
from project_imports import parse


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


@pytest.mark.slow
def test_the_tests_that_read_the_trained_pipeline_run_last_and_are_slow():
    """They wait for the training started when the session starts (tests/trained.py), so they
    come after every other test, whatever order they were named in; and `make test-fast` (not
    slow) never starts that training. One of the slowest files (conftest.SLOWEST_FILES) comes
    first, though named last."""
    names = [
        "tests/test_learning.py",
        "tests/test_quality_gate.py",
        "tests/test_schedules.py",
        "tests/test_kill_points.py",
    ]
    listed = [line for line in collected(*names).splitlines() if "::" in line]
    readers = [i for i, line in enumerate(listed) if line.startswith(tuple(names[:2]))]
    assert readers and readers == list(range(len(listed) - len(readers), len(listed))), listed
    assert listed[0].startswith(names[-1]), listed
    assert "test_learning.py" not in collected("-m", "not slow", *names[:2])


def test_the_slowest_files_named_for_the_workers_exist():
    """A renamed file would silently lose its place at the front."""
    from conftest import SLOWEST_FILES

    assert [n for n in SLOWEST_FILES if not (ROOT / "tests" / n).is_file()] == []


def test_the_gate_follows_the_cpu_unless_told(monkeypatch):
    """The quick preset (and its bars) where bfloat16 is native, as trainer.precision=auto
    decides; PETVISION_QUALITY_GATE=1/0 overrides."""
    import trained

    from petvision.training.runtime import bf16_native

    monkeypatch.delenv("PETVISION_QUALITY_GATE", raising=False)
    assert trained.gate_applies() == bf16_native("cpu")
    for value, applies in (("1", True), ("0", False)):
        monkeypatch.setenv("PETVISION_QUALITY_GATE", value)
        assert trained.gate_applies() is applies


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


def test_processes_started_on_tensorflow_find_no_jax_and_the_tests_and_jax_processes_do():
    """JAX is held back from the TensorFlow processes the tests start (its optional import costs
    each 0.7 CPU-s), never from a process on Keras's JAX backend or from the tests' own."""
    import importlib.util

    assert importlib.util.find_spec("jax") is not None  # the test lock installs it
    probe = "import importlib.util; print(importlib.util.find_spec('jax') is not None)"
    for backend, found in (("tensorflow", "False"), ("jax", "True")):
        done = subprocess.run(
            [sys.executable, "-c", probe],
            env=project_env(KERAS_BACKEND=backend),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0 and done.stdout.strip() == found, (backend, done)


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


def test_no_test_module_imports_another():
    """Shared fixtures and helpers live in conftest.py or in helper modules that are not test
    modules (project_copy.py, archive_server.py, ...): a test module that imports another runs
    that module's fixtures and module-level work, and ties the two files' changes together."""
    import ast

    offenders = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        for node in ast.walk(parse(path)):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0].startswith("test_")]
    assert not offenders, offenders
