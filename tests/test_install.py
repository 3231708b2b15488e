"""The two installs: requirements-run.lock (what `make run` installs) is the runtime part of
requirements.lock, and the Makefile installs each one where it should, once."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _runtime_lock_module():
    spec = importlib.util.spec_from_file_location("runtime_lock", ROOT / "scripts/runtime_lock.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


runtime_lock = _runtime_lock_module()
FULL = (ROOT / "requirements.lock").read_text()
RUN = (ROOT / "requirements-run.lock").read_text()


def test_the_runtime_lock_pins_what_the_full_lock_pins():
    full, run = runtime_lock.pins(FULL), runtime_lock.pins(RUN)
    assert run, "requirements-run.lock pins nothing"
    assert {name: full.get(name) for name in run} == run
    assert {"keras", "tensorflow-cpu", "mlflow", "dvc", "hydra-core"} <= run.keys()


def test_the_runtime_lock_leaves_out_the_test_and_dev_tools():
    run = runtime_lock.pins(RUN)
    for tool in ("jax", "jaxlib", "moto", "cfn-lint", "sympy", "mypy", "ruff", "pytest", "dvc-s3"):
        assert tool in runtime_lock.pins(FULL), f"{tool} is not in the full lock any more"
        assert tool not in run, f"{tool} is in requirements-run.lock"


@pytest.mark.skipif(
    sys.version_info[:2] != (3, 11),
    reason="the lock is made on Python 3.11: some dependencies hold only below 3.12",
)
def test_the_runtime_lock_is_what_petvision_cpu_needs_here():
    # This environment holds the whole lock: walking its metadata from petvision[cpu] must give
    # the committed file, or pyproject.toml changed without `make lock`.
    assert runtime_lock.runtime_lock(FULL) == RUN


@pytest.fixture
def makefile_copy(tmp_path):
    for name in ("Makefile", "pyproject.toml", "requirements.lock", "requirements-run.lock"):
        shutil.copy2(ROOT / name, tmp_path / name)
    return tmp_path


def _dry_run(cwd: Path, *args: str) -> str:
    # make -n prints the commands without running them: nothing is installed.
    done = subprocess.run(
        ["make", "-n", *args], cwd=cwd, capture_output=True, text=True, check=True
    )
    return done.stdout


JAX_VERSION = runtime_lock.pins(FULL)["jax"].split("==")[1]


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
@pytest.mark.parametrize("flavour", [[], ["GPU=1"], ["BACKEND=jax"], ["GPU=1", "BACKEND=jax"]])
def test_make_run_installs_the_runtime_and_the_test_targets_the_whole_lock(makefile_copy, flavour):
    # GPU=1 (TensorFlow's CUDA build) installs the locks without their tensorflow-cpu pin (copies
    # made in .venv); BACKEND=jax keeps tensorflow-cpu and adds JAX, with CUDA under GPU=1.
    gpu, jax = "GPU=1" in flavour, "BACKEND=jax" in flavour
    run_lock, lock = (
        (".venv/requirements-run-gpu.lock", ".venv/requirements-gpu.lock")
        if gpu and not jax
        else ("requirements-run.lock", "requirements.lock")
    )
    run = _dry_run(makefile_copy, "run", *flavour)
    assert f"-r {run_lock}" in run and f"-r {lock}" not in run
    assert "dvc repro" in run
    for target in ("install", "test", "test-fast", "lint", "quality-gate", "bench"):
        out = _dry_run(makefile_copy, target, *flavour)
        assert f"-r {run_lock}" in out and f"-r {lock}" in out, target
    install = _dry_run(makefile_copy, "install", *flavour)
    assert ('"tensorflow[and-cuda]==2.21.0"' in install) == (gpu and not jax)
    assert (f'"jax[cuda12]=={JAX_VERSION}"' in install) == (gpu and jax)
    assert (f'"jax=={JAX_VERSION}"' in install) == (jax and not gpu)


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_backend_jax_runs_every_target_on_keras_jax_and_other_backends_are_refused(makefile_copy):
    def keras_backend(*args: str) -> subprocess.CompletedProcess[str]:
        show = 'show-backend: ; @echo "[$$KERAS_BACKEND]"'
        return subprocess.run(
            ["make", "--no-print-directory", f"--eval={show}", "show-backend", *args],
            cwd=makefile_copy,
            env={k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"},
            capture_output=True,
            text=True,
        )

    assert keras_backend("BACKEND=jax").stdout.strip() == "[jax]"
    assert keras_backend().stdout.strip() == "[]"
    assert keras_backend("BACKEND=tensorflow").stdout.strip() == "[]"
    refused = keras_backend("BACKEND=torch")
    assert refused.returncode != 0 and "BACKEND=torch: jax, or tensorflow" in refused.stderr


def _resolve_install(makefile_copy: Path, *make_args: str) -> list[str]:
    """What `make install <make_args>` would install, resolved by uv for an empty environment of
    this Python (metadata only: nothing is downloaded or installed): uv's answer for each of the
    two installs (install-run's, then the whole lock's)."""
    uv = str(Path(sys.executable).parent / "uv")
    empty = makefile_copy / "empty"
    subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(empty)], check=True)
    resolved = []
    for line in _dry_run(makefile_copy, "install", *make_args).splitlines():
        if line.startswith(("mkdir", "grep")):  # the filtered locks: written for real
            subprocess.run(["bash", "-c", line], cwd=makefile_copy, check=True)
        elif "uv pip install " in line and " -e ." not in line:
            args = line.split("uv pip install ", 1)[1]
            args = args.replace("--quiet ", "").replace("--python .venv/bin/python", "")
            done = subprocess.run(
                f"{uv} pip install --dry-run --python {empty}/bin/python {args}",
                shell=True,
                cwd=makefile_copy,
                capture_output=True,
                text=True,
                timeout=240,
            )
            assert done.returncode == 0, done.stderr[-3000:]
            resolved.append(done.stdout + done.stderr)
    assert len(resolved) == 2  # install-run's, then the whole lock's
    return resolved


NEEDS_UV = pytest.mark.skipif(
    shutil.which("make") is None or not (Path(sys.executable).parent / "uv").exists(),
    reason="needs make and the lock's uv",
)


@pytest.mark.slow
@pytest.mark.timeout(300)
@NEEDS_UV
def test_make_install_gpu_resolves_to_the_cuda_build_alone(makefile_copy):
    """`make install GPU=1`: TensorFlow's CUDA build with its CUDA libraries and the rest of the
    lock, and no tensorflow-cpu beside it."""
    for out in _resolve_install(makefile_copy, "GPU=1"):
        assert "tensorflow==2.21.0" in out
        assert "nvidia-cudnn" in out  # the [and-cuda] extra
        assert "tensorflow-cpu" not in out.replace("_", "-")


@pytest.mark.slow
@pytest.mark.timeout(300)
@NEEDS_UV
def test_make_install_gpu_on_jax_resolves_to_the_locked_jax_with_cuda(makefile_copy):
    """`make install GPU=1 BACKEND=jax`: the lock's JAX and jaxlib (the versions the tests run)
    with JAX's CUDA 12 plugin of the same version and its CUDA libraries, tensorflow-cpu kept,
    TensorFlow's CUDA build not installed."""
    for out in _resolve_install(makefile_copy, "GPU=1", "BACKEND=jax"):
        text = out.replace("_", "-")
        for pin in ("jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda12-pjrt"):
            assert f" {pin}=={JAX_VERSION}" in text, pin
        assert "nvidia-cudnn-cu12" in text and "nvidia-cublas-cu12" in text
        assert "tensorflow-cpu==2.21.0" in text
        assert " tensorflow==" not in text


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_a_second_make_installs_nothing(makefile_copy):
    venv = makefile_copy / ".venv"
    venv.mkdir()

    def up_to_date(target: str) -> bool:
        done = subprocess.run(["make", "-q", target], cwd=makefile_copy, check=False)
        return done.returncode == 0

    assert not up_to_date("install-run") and not up_to_date("install")
    # The stamps the recipes touch, in the order they touch them.
    (venv / ".installed-run-cpu").touch()
    assert up_to_date("install-run") and not up_to_date("install")
    (venv / ".installed-cpu").touch()
    assert up_to_date("install-run") and up_to_date("install")
    # A newer lock reinstalls what it feeds.
    (makefile_copy / "requirements.lock").touch()
    assert up_to_date("install-run") and not up_to_date("install")


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_test_fails_when_the_lint_beside_the_suite_fails(makefile_copy):
    """`make test` runs the lint in the background beside the suite: a failing lint must fail the
    target even when every test passes, and print the lint's output after the suite's. The venv
    here is a stand-in whose `python` only says it ran (nothing is installed or tested), and the
    lint is `true` or a command that prints and fails."""
    venv = makefile_copy / ".venv"
    (venv / "bin").mkdir(parents=True)
    (venv / ".installed-run-cpu").touch()
    (venv / ".installed-cpu").touch()
    python = venv / "bin" / "python"
    python.write_text('#!/bin/sh\necho "the suite ran"\nexit "${SUITE_RC:-0}"\n')
    python.chmod(0o755)

    def make_test(lint: str, suite_rc: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["make", "--no-print-directory", "test", f"LINT={lint}"],
            cwd=makefile_copy,
            env={**os.environ, "SUITE_RC": str(suite_rc)},
            capture_output=True,
            text=True,
            timeout=60,
        )

    passed = make_test("true", 0)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "the suite ran" in passed.stdout and "make lint failed" not in passed.stdout

    lint_failed = make_test("echo ruff found E501; false", 0)
    assert lint_failed.returncode != 0
    out = lint_failed.stdout
    assert "the suite ran" in out  # the suite is not cut short by the lint
    assert out.index("the suite ran") < out.index("ruff found E501") < out.index("make lint failed")

    tests_failed = make_test("true", 1)
    assert tests_failed.returncode != 0 and "make lint failed" not in tests_failed.stdout
