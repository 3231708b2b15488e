"""scripts/gpu_run, the prepared call for a lent GPU machine, runs end to end here in its toy
form (``--tiny``) the way it runs there: Keras on JAX, and no TensorFlow importable at all (the
machine has none), with the stages as subprocesses and every result under ``--out``."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tarfile

import pytest
from conftest import NO_TENSORFLOW, ROOT


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
