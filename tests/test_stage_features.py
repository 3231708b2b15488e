"""Documented features of the training stages that other tests do not reach: the U-Net option
through the segmentation stage, ``trainer.resume=false``, the simple convnet's minimum image size
and a Hydra multirun sweep (README "Changing hyperparameters")."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import ROOT, SEG, VENV_BIN, Killed, path_overrides, write_npy
from mlflow import MlflowClient

from petvision.core.errors import ConfigError
from petvision.models.classification import simple_convnet
from petvision.train_segmentation import run_train_segmentation
from petvision.training import faults, loop
from petvision.training.workdir import Workdir


@pytest.fixture
def seg_data(tmp_path):
    write_npy(tmp_path / "npy", "segmentation", 32, {"train": 16, "val": 8})


def runs(tmp_path, experiment: str) -> list:
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    found = client.get_experiment_by_name(experiment)
    return (
        client.search_runs([found.experiment_id], order_by=["attributes.start_time ASC"])
        if found
        else []
    )


def test_the_unet_option_trains_through_the_segmentation_stage(tmp_path, make_config, seg_data):
    summary = run_train_segmentation(make_config(*SEG, "segmentation/model=unet"))
    assert summary["epochs_run"] == 1 and "pet_iou" in summary["val"]
    model = keras.saving.load_model(tmp_path / "models" / "segmentation.keras", safe_mode=True)
    assert model.name == "unet_segmentation"
    assert any(
        isinstance(layer, keras.layers.Concatenate) for layer in model.layers
    )  # its skip connections
    assert model.output.shape[1:] == (32, 32, 3)
    [run] = runs(tmp_path, "petvision-segmentation")
    assert run.data.params["segmentation.model.name"] == "unet" and run.data.tags["model"] == "unet"


def test_resume_false_starts_afresh_in_a_new_run(tmp_path, make_config, seg_data, monkeypatch):
    """A run killed after committing epoch 1 would resume; with trainer.resume=false it does not."""
    fits = []
    real_fit = loop.fit
    monkeypatch.setattr(loop, "fit", lambda *a, **k: fits.append(real_fit(*a, **k)) or fits[-1])

    def die_after_first_commit(point, epoch=None):
        if (point, epoch) == ("after_commit", 1):
            raise Killed(point)

    with monkeypatch.context() as patch, pytest.raises(Killed):
        patch.setattr(faults, "point", die_after_first_commit)
        run_train_segmentation(make_config(*SEG, "segmentation.train.epochs=2"))
    state = Workdir(tmp_path / "state" / "segmentation")
    assert state.epochs_done() == 1

    summary = run_train_segmentation(
        make_config(*SEG, "segmentation.train.epochs=2", "trainer.resume=false")
    )
    assert fits[-1].resumed_from == 0 and summary["epochs_run"] == 2
    first, second = runs(tmp_path, "petvision-segmentation")
    assert "resumed" not in second.data.tags and second.info.status == "FINISHED"
    assert first.info.run_id != second.info.run_id
    model = keras.saving.load_model(tmp_path / "models" / "segmentation.keras", safe_mode=True)
    steps = 16 // 8
    assert (
        int(model.optimizer.iterations.numpy()) == summary["best_epoch"] * steps
    )  # counted from 0 again
    assert not state.root.exists()


def test_simple_convnet_needs_78_px_and_trains_there(make_config):
    """Five valid 3x3 convolutions and four 2x2 poolings: 78 px leaves a 1x1 map, 77 px nothing."""
    with pytest.raises(ConfigError, match=r"data\.classification\.image_size.*77.*78 px"):
        make_config("classification/model=simple_convnet", "data.classification.image_size=77")
    cfg = make_config("classification/model=simple_convnet", "data.classification.image_size=78")
    assert cfg.data.classification.image_size == 78
    with pytest.raises(ValueError):
        simple_convnet(77)
    model = simple_convnet(78)
    assert model.get_layer("conv5").output.shape[1:3] == (1, 1)
    model.compile("rmsprop", "binary_crossentropy")
    x = np.random.default_rng(0).integers(0, 255, (4, 78, 78, 3)).astype("float32")
    loss = model.train_on_batch(x, np.array([0, 1, 0, 1]))
    assert np.isfinite(loss)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_hydra_sweep_runs_one_job_per_value_beside_the_pipeline_outputs(tmp_path):
    write_npy(tmp_path / "npy", "classification", 32, {"train": 16, "val": 8, "test": 8})
    sweep = tmp_path / "multirun"
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    env.pop(faults.ENV, None)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "petvision.train_xception",
            "-m",
            *path_overrides(tmp_path),
            f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
            "data.classification.image_size=32",
            "classification/model=residual_convnet",
            "classification.train.epochs=1",
            "classification.train.batch_size=8",
            "tracking.log_model=false",
            "classification.train.learning_rate=0.001,0.01",
            f"hydra.sweep.dir={sweep}",
        ],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=500,
    )
    assert done.returncode == 0, done.stderr[-4000:]

    # One job folder per value, each with the stage's outputs; the pipeline's own places untouched.
    for job in ("0", "1"):
        assert (sweep / job / "models" / "classifier.keras").is_file(), job
        metrics = json.loads(
            (sweep / job / "reports" / "classification" / "metrics.json").read_text()
        )
        assert metrics["epochs_run"] == 1 and "accuracy" in metrics["test"]
    assert not (tmp_path / "models").exists() and not (tmp_path / "reports").exists()
    # One MLflow run per job, each with its own learning rate.
    found = runs(tmp_path, "petvision-classification")
    assert sorted(r.data.params["classification.train.learning_rate"] for r in found) == [
        "0.001",
        "0.01",
    ]
    assert all(r.info.status == "FINISHED" for r in found)


# A stage's start as `python -m` makes it: sys.argv[0] is "-m" while Python imports the package.
GC_PROBE = """
import sys
sys.argv = ["-m", *sys.argv[1:]]
import gc, json
import petvision
import keras
during_imports = gc.isenabled()
from petvision.cli import stage

def task(cfg):
    print(json.dumps({"during_imports": during_imports, "in_the_run": gc.isenabled(),
                      "frozen": gc.get_freeze_count()}))

stage.main(task, writes=[])
"""


def test_a_stage_run_keeps_its_imports_out_of_the_garbage_collector_and_collects_the_rest(
    tmp_path,
):
    """``python -m petvision.<stage>``: nothing collected while TensorFlow, Keras and the rest
    import, those objects frozen once imported, collection on for the run; an import of petvision
    by anything else leaves the collector alone (petvision/__init__.py)."""
    package = tmp_path / "probe"
    package.mkdir()
    (package / "__init__.py").write_text("import sys\nprint(sys.argv[0])\n")
    (package / "run.py").write_text("")
    located = subprocess.run(
        [sys.executable, "-m", "probe.run"], cwd=tmp_path, capture_output=True, text=True
    )
    assert located.stdout.strip() == "-m", located  # what petvision/__init__.py relies on

    done = subprocess.run(
        [sys.executable, "-c", GC_PROBE, f"hydra.run.dir={tmp_path / 'hydra'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["during_imports"] is False and seen["in_the_run"] is True, seen
    assert seen["frozen"] > 100_000, seen  # Keras, TensorFlow, Hydra... (790,000 here)

    elsewhere = subprocess.run(
        [sys.executable, "-c", "import gc, petvision; print(gc.isenabled())"],
        capture_output=True,
        text=True,
    )
    assert elsewhere.stdout.strip() == "True", elsewhere
