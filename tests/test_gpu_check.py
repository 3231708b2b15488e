"""scripts/gpu_check, the prepared GPU run, works end to end on this machine's CPU (TensorFlow
backend) in its smoke-test form: ``--steps 3 --batch 4``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

from petvision.training import runtime


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_gpu_check_smoke_run_on_the_cpu_reports_every_model(tmp_path):
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "gpu_check"),
            "--steps",
            "3",
            "--batch",
            "4",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [r["model"] for r in results] == ["book", "mini_xception", "unet"]
    expected_precision = "mixed_bfloat16" if runtime.bf16_native("auto") else "float32"
    for r in results:
        assert r["backend"] == "tensorflow" and r["strategy"] == "default" and r["replicas"] == 1
        assert r["precision"] == expected_precision  # trainer.precision=auto, as the stages choose
        assert r["global_batch"] == 4 and r["images_per_s"] > 0 and r["share_of_matmul"] > 0
        assert r["training_gflop_per_image"] > 0
    # The table the reply shows last.
    assert "| book | 200 | 4 |" in done.stdout and "share of" in done.stdout
