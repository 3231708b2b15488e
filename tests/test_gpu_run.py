"""scripts/gpu_run, the prepared call for a lent GPU machine, runs end to end here in its toy
form (``--tiny``) the way it runs there: Keras on JAX, and no TensorFlow importable at all (the
machine has none), with the stages as subprocesses and every result under ``--out``.

Its stages are also the check that the training stages compile as they should on JAX, read from
JAX's compile log (``JAX_LOG_COMPILES``): no model falls back to running op by op (Keras's
warning), the training and validation steps compile once per process, and the paper part's
trainings, whose programs are the quick part's (the tiny preset's sizes, the same recipe), load
them from the persistent compilation cache the quick part filled instead of compiling them; the
visualize stage finds there what the training stages compiled for it."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tarfile

import pytest
from conftest import NO_TENSORFLOW, ROOT

FALLBACK = "Model doesn't support `jit_compile=True`"


def compile_log_reader():
    """bench/compile_time.py's reader of JAX's compile log (loaded as a file: bench/ is no
    package)."""
    spec = importlib.util.spec_from_file_location("compile_time", ROOT / "bench/compile_time.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["compile_time"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module.read_compiles


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed")
def test_the_gpu_run_runs_every_step_on_jax_without_tensorflow(tmp_path):
    blocker = tmp_path / "site"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(NO_TENSORFLOW)
    out, work = tmp_path / "out", tmp_path / "work"
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "JAX_PLATFORMS": "cpu",
        "JAX_LOG_COMPILES": "1",
        "PYTHONPATH": os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "gpu_run"),
            "--tiny",
            "--out",
            str(out),
            "--work",
            str(work),
            "--budget",
            "1000",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1100,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]

    summary = json.loads((out / "summary.json").read_text())
    assert summary["environment"]["backend"] == "jax"
    steps = {s["name"]: s for s in summary["steps"]}
    expected = [
        *(
            f"quick:{stage}"
            for stage in (
                "download",
                "preprocess",
                "train_segmentation",
                "train_xception",
                "visualize",
            )
        ),
        "quick: five stages",
        "gpu_check",
        "gpu_check:levers",
        *(
            f"paper:{stage}"
            for stage in ("download", "preprocess", "train_segmentation", "train_xception")
        ),
    ]
    assert list(steps) == expected
    assert all(s["status"] == "ok" for s in steps.values()), steps
    # The training stages report their metrics and a rate; the table carries them.
    assert steps["quick:train_segmentation"]["metrics"]["epochs"] == 1  # the tiny preset's
    assert 0 <= steps["quick:train_segmentation"]["metrics"]["val_pet_iou"] <= 1
    assert 0 <= steps["quick:train_xception"]["metrics"]["test_accuracy"] <= 1
    assert steps["paper:train_xception"]["images_per_s"] > 0
    assert "heat_ratio" in steps["quick:visualize"]["metrics"]
    # gpu_check measured all three models, compiled, and their share of the matmul ceiling.
    rows = json.loads((out / "gpu_check.json").read_text())
    assert [r["model"] for r in rows] == ["book", "mini_xception", "unet"]
    for r in rows:
        assert r["backend"] == "jax" and r["jit_compile"] and r["images_per_s"] > 0, r
        assert r["share_of_matmul"] > 0
    levers = json.loads((out / "gpu_check_levers.json").read_text())
    assert levers[0]["model"] == "book" and levers[0]["images_per_s"] > 0
    table = (out / "summary.md").read_text()
    assert "| quick: five stages | ok |" in table and "| gpu_check | ok |" in table
    # What a lent machine returns is at most eight files, none deeper than two folders.
    assert len(list(out.iterdir())) <= 8
    with tarfile.open(out / "artifacts.tar.gz") as tar:
        names = tar.getnames()
    assert "logs/quick_train_xception.log" in names
    assert "quick/reports/classification/metrics.json" in names
    assert "paper/reports/segmentation/learning_curves.png" in names

    # The training stages on JAX, from their logs (module docstring).
    read_compiles = compile_log_reader()
    logs = {path.stem: path.read_text() for path in (work / "logs").glob("*.log")}
    for name, text in logs.items():
        assert FALLBACK not in text, f"{name} ran a model op by op:\n{text[-3000:]}"
    for stage in ("train_segmentation", "train_xception"):
        first = read_compiles(logs[f"quick_{stage}"])
        assert first.by_name.get("train_step") == 1, (stage, first.by_name)
        assert first.by_name.get("test_step") == 1, (stage, first.by_name)
        assert first.hits_by_name.get("train_step") is None, (stage, first.hits_by_name)
        again = read_compiles(logs[f"paper_{stage}"])
        assert again.hits_by_name.get("train_step") == 1, (stage, again.hits_by_name)
    # visualize uses the same cache: loading the models runs their weight initializers, which the
    # training stages compiled for the same shapes.
    shown = read_compiles(logs["quick_visualize"])
    assert shown.hits_by_name.get("_uniform", 0) > 0, shown.hits_by_name
    # ... and runs its models compiled: a model called op by op on JAX compiles each operation of
    # each shape on its own (the layer activations, the masks and the Grad-CAM passes did: some
    # 90 single convolutions and 70 additions in this stage).
    single_ops = {name: shown.by_name.get(name, 0) for name in ("conv_general_dilated", "add")}
    assert not any(single_ops.values()), single_ops
