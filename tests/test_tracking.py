"""The MLflow tracking layer against real stores: SQLite files under tmp_path and a real
``mlflow server`` on 127.0.0.1 started (and killed) by the test."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest
from conftest import ROOT, free_port, pythonpath, tiny_segmenter
from mlflow import MlflowClient

from petvision import config as config_lib
from petvision import tracking
from petvision.config import task_config
from petvision.core.errors import DataError, TrackingError
from petvision.core.tasks import Task
from petvision.data import digest

# The tracking layer sets variables in os.environ: every test gets a clean copy.
pytestmark = pytest.mark.usefixtures("isolated_env")


@pytest.fixture
def store_config(make_config, shared_store):
    def make(*overrides: str):
        return make_config(f"tracking.uri=sqlite:///{shared_store}/mlflow.db", *overrides)

    return make


def test_run_records_config_metrics_dataset_and_model(
    store_config, shared_store, tmp_path, monkeypatch
):
    monkeypatch.setenv("DVC_STAGE", "train_segmentation")
    monkeypatch.setenv("DVC_EXP_NAME", "lucky-dingo")
    cfg = store_config()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 8, 8, 3), dtype=np.uint8)
    masks = rng.integers(0, 3, (16, 8, 8, 1), dtype=np.uint8)
    report = tmp_path / "metrics.json"
    report.write_text('{"iou": 0.5}')

    with tracking.Run(
        cfg,
        "train_segmentation",
        task=task_config(cfg, Task.segmentation),
        run_name="seg test",
        tags={"model": "tiny"},
    ) as run:
        model = tiny_segmenter()
        model.fit(
            images,
            masks,
            validation_data=(images[:4], masks[:4]),
            epochs=3,
            batch_size=8,
            callbacks=[run.keras_callback()],
            verbose=0,
        )
        run.log_input_dataset(
            "segmentation-train",
            "0123abcd",
            str(tmp_path / "npy"),
            "training",
            {"count": 16, "image_shape": [8, 8, 3]},
        )
        run.log_params({"long.value": "x" * 10_000, "model.parameters": model.count_params()})
        run.log_artifact(report, artifact_path="reports")
        model_uri = run.log_keras_model(model, images[:2])
    assert run.lost == []

    client = MlflowClient(run.uri)
    logged = client.get_run(run.run_id)
    assert logged.info.status == "FINISHED"
    assert logged.info.run_name == "seg test"
    assert client.get_experiment(run.experiment_id).name == cfg.tracking.experiments.segmentation

    params = logged.data.params
    assert params["segmentation.train.epochs"] == str(cfg.segmentation.train.epochs)
    assert params["preset"] == cfg.preset
    assert params["data.oxford_pets.archives.0.name"] == cfg.data.oxford_pets.archives[0].name
    assert params["model.parameters"] == str(model.count_params())
    assert len(params["long.value"]) <= 6000 and "config.yaml" in params["long.value"]

    tags = logged.data.tags
    assert tags["dvc.stage"] == "train_segmentation" and tags["dvc.exp_name"] == "lucky-dingo"
    assert tags["preset"] == cfg.preset and tags["model"] == "tiny"
    assert tags["keras.version"] == keras.__version__
    assert tags["git.dirty"] in ("true", "false") and len(tags["git.commit"]) == 40
    assert tags["host"] == socket.gethostname()

    for key in ["loss", "val_loss"]:
        history = client.get_metric_history(run.run_id, key)
        assert sorted(m.step for m in history) == [0, 1, 2], key

    config_yaml = Path(client.download_artifacts(run.run_id, "config.yaml", str(tmp_path / "dl")))
    assert config_yaml.read_text() == config_lib.to_yaml(cfg)
    assert [a.path for a in client.list_artifacts(run.run_id, "reports")] == [
        "reports/metrics.json"
    ]

    (dataset_input,) = logged.inputs.dataset_inputs
    assert dataset_input.dataset.name == "segmentation-train"
    assert dataset_input.dataset.digest == "0123abcd"
    assert json.loads(dataset_input.dataset.profile) == {"count": 16, "image_shape": [8, 8, 3]}
    assert {t.key: t.value for t in dataset_input.tags}["mlflow.data.context"] == "training"

    assert model_uri.startswith("models:/")
    mlmodel = mlflow.models.Model.load(model_uri)
    assert "keras" in mlmodel.flavors
    # No signature: the python_function flavor takes arrays and encoded photos (petvision.inference.serving).
    assert mlmodel.saved_input_example_info is not None
    assert mlmodel.flavors["python_function"]["loader_module"] == "petvision.inference.serving"
    loaded = mlflow.pyfunc.load_model(model_uri)
    batch = images[:5]
    predicted = loaded.predict(batch)
    assert predicted.shape == (5, 8, 8, 3)
    np.testing.assert_allclose(predicted, model.predict(batch, verbose=0), rtol=1e-5, atol=1e-6)
    # Artifacts stay beside the store, not under the working directory.
    assert (shared_store / "mlruns" / cfg.tracking.experiments.segmentation).is_dir()


def test_run_status_follows_how_the_stage_ended(store_config):
    cfg = store_config()
    with (
        pytest.raises(RuntimeError),
        tracking.Run(cfg, "train_xception", task=task_config(cfg, Task.classification)) as failed,
    ):
        raise RuntimeError("boom")
    with (
        pytest.raises(KeyboardInterrupt),
        tracking.Run(cfg, "train_xception", task=task_config(cfg, Task.classification)) as killed,
    ):
        raise KeyboardInterrupt
    client = MlflowClient(failed.uri)
    assert client.get_run(failed.run_id).info.status == "FAILED"
    assert client.get_run(killed.run_id).info.status == "KILLED"


def test_resume_continues_the_same_run(store_config):
    cfg = store_config()
    with (
        pytest.raises(KeyboardInterrupt),
        tracking.Run(cfg, "train_xception", task=task_config(cfg, Task.classification)) as first,
    ):
        first.log_input_dataset("classification-train", "feedbeef", "/data/npy", "training")
        first.log_metrics({"loss": 1.0}, step=0)
        raise KeyboardInterrupt
    params_before = MlflowClient(first.uri).get_run(first.run_id).data.params
    with tracking.Run(
        cfg,
        "train_xception",
        task=task_config(cfg, Task.classification),
        resume_run_id=first.run_id,
    ) as second:
        second.log_input_dataset("classification-train", "feedbeef", "/data/npy", "training")
        second.log_params({"model.parameters": 123})
        second.log_metrics({"loss": 0.5}, step=1)
    assert second.run_id == first.run_id and second.resumed and second.lost == []
    client = MlflowClient(second.uri)
    resumed = client.get_run(first.run_id)
    assert resumed.info.status == "FINISHED" and resumed.data.tags["resumed"] == "true"
    assert [d.dataset.digest for d in resumed.inputs.dataset_inputs] == ["feedbeef"]
    # The params logged before the interruption are all kept, unchanged; the new one is added.
    assert "classification.train.epochs" in params_before
    assert {k: resumed.data.params.get(k) for k in params_before} == params_before
    assert set(resumed.data.params) == {*params_before, "model.parameters"}
    assert resumed.data.params["model.parameters"] == "123"
    assert [
        m.value
        for m in sorted(client.get_metric_history(first.run_id, "loss"), key=lambda m: m.step)
    ] == [1.0, 0.5]

    with tracking.Run(
        cfg, "train_xception", task=task_config(cfg, Task.classification), resume_run_id="0" * 32
    ) as fresh:
        pass
    assert fresh.run_id != first.run_id and not fresh.resumed


def fake_project(folder: Path) -> Path:
    (folder / "conf").mkdir(parents=True)
    (folder / "conf" / "config.yaml").write_text("defaults: []\n")
    (folder / "dvc.yaml").write_text("stages: {}\n")
    return folder


def test_default_store_is_in_the_tracking_root_whatever_the_cwd(make_config, tmp_path, monkeypatch):
    cfg = make_config()
    cfg.tracking.uri = ""
    project = fake_project(tmp_path / "project")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setenv("PETVISION_ROOT", str(project))
    monkeypatch.chdir(elsewhere)

    assert tracking.tracking_uri(cfg.tracking) == f"sqlite:///{project}/mlflow.db"
    with tracking.Run(cfg, "visualize", experiment=cfg.tracking.experiments.interpretation) as run:
        pass
    assert (project / "mlflow.db").is_file()
    location = MlflowClient(run.uri).get_experiment(run.experiment_id).artifact_location
    assert location == (project / "mlruns" / cfg.tracking.experiments.interpretation).as_uri()
    assert list(elsewhere.iterdir()) == []

    workspace = tmp_path / "workspace"  # what `dvc exp run --temp` names in DVC_ROOT
    workspace.mkdir()
    monkeypatch.setenv("DVC_ROOT", str(workspace))
    assert tracking.tracking_uri(cfg.tracking) == f"sqlite:///{workspace}/mlflow.db"
    cfg.tracking.uri = "sqlite:///stores/team.db"  # relative: against the root, not the cwd
    assert tracking.tracking_uri(cfg.tracking) == f"sqlite:///{workspace}/stores/team.db"
    cfg.tracking.uri = ""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert tracking.tracking_uri(cfg.tracking) == "http://tracking.example:5000"


@pytest.mark.timeout(60)
def test_unreachable_server_fails_at_start_naming_the_uri(make_config):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    cfg = make_config(f"tracking.uri={uri}", "tracking.connect_timeout_s=3")
    run = tracking.Run(cfg, "train_segmentation", task=task_config(cfg, Task.segmentation))
    with pytest.raises(TrackingError, match=re.escape(uri)):
        run.__enter__()


@pytest.mark.timeout(60)
def test_a_web_server_that_is_not_mlflow_is_named(make_config, tmp_path):
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: Quiet(*a, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        uri = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(TrackingError, match=re.escape(uri) + ".*HTTP 404"):
            tracking.check_reachable(uri, 3)
    finally:
        server.shutdown()
        server.server_close()


def test_unusable_sqlite_store_fails_naming_the_uri(make_config, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store's folder should be")
    uri = f"sqlite:///{blocker}/mlflow.db"
    with pytest.raises(TrackingError, match=re.escape(uri)):
        cfg = make_config(f"tracking.uri={uri}")
        tracking.Run(
            cfg, "train_segmentation", task=task_config(cfg, Task.segmentation)
        ).__enter__()


def test_data_digest_follows_content_not_location(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        folder.mkdir()
        (folder / "x.npy").write_bytes(b"\x00" * 3_000_000)
        (folder / "y.npy").write_bytes(b"labels")
    assert digest.data_digest([a / "x.npy", a / "y.npy"]) == digest.data_digest(
        [b / "y.npy", b / "x.npy"]
    )
    (b / "y.npy").write_bytes(b"labelz")
    assert digest.data_digest([a / "x.npy", a / "y.npy"]) != digest.data_digest(
        [b / "x.npy", b / "y.npy"]
    )
    with pytest.raises(DataError, match="missing.npy"):
        digest.data_digest([a / "missing.npy"])


def test_ui_url_opens_the_runs_table():
    assert (
        tracking.ui_url("sqlite:////x/mlflow.db", "3")
        == "http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning"
    )
    assert tracking.ui_url("http://mlflow.lan:8080/", "3").startswith(
        "http://mlflow.lan:8080/#/experiments/3/"
    )


# --------------------------------------------------------------------------- a real server


# mlflow_server: the fixture in conftest.py


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_server_dying_mid_run_loses_logs_without_stopping_training(
    make_config, mlflow_server, tmp_path
):
    uri, kill_server = mlflow_server
    cfg = make_config(f"tracking.uri={uri}", "tracking.connect_timeout_s=5")
    picture = tmp_path / "curve.png"
    picture.write_bytes(b"png")

    run = tracking.Run(cfg, "train_xception", task=task_config(cfg, Task.classification))
    with run:
        run.log_metrics({"loss": 0.9, "val_loss": 1.0}, step=0)
        run.log_artifact(picture, artifact_path="reports")
        client = MlflowClient(uri)
        assert client.get_run(run.run_id).data.params["classification.train.epochs"] == str(
            cfg.classification.train.epochs
        )
        assert [m.value for m in client.get_metric_history(run.run_id, "loss")] == [0.9]
        assert [a.path for a in client.list_artifacts(run.run_id, "reports")] == [
            "reports/curve.png"
        ]
        assert Path(
            client.download_artifacts(run.run_id, "config.yaml", str(tmp_path / "dl"))
        ).read_text() == config_lib.to_yaml(cfg)

        kill_server()
        run.log_metrics({"loss": 0.8, "val_loss": 0.95}, step=1)  # must not raise
        run.log_metrics({"loss": 0.7, "val_loss": 0.90}, step=2)
        run.log_artifact(picture, artifact_path="reports")
        run.set_tags({"best_epoch": "2"})
    lost = "\n".join(run.lost)
    assert len(run.lost) == 5, lost
    assert "step 1" in lost and "step 2" in lost and "curve.png" in lost and "end of run" in lost


# --------------------------------------------------------------------------- concurrency

WRITER = textwrap.dedent("""
    import json, sys
    from petvision import config, tracking
    uri, name, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    cfg = config.load(config.compose([f"tracking.uri={uri}"]))
    task = config.task_config(cfg, config.Task.segmentation)
    with tracking.Run(cfg, "train_segmentation", task=task, run_name=name) as run:
        for step in range(steps):
            logs = {"loss": 1.0 / (step + 1), "val_loss": 2.0 / (step + 1), "pet_iou": step / steps}
            run.log_metrics(logs, step=step)
            run.log_params({f"p{step}": step})
    print(json.dumps({"run_id": run.run_id, "lost": run.lost}))
""")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_processes_share_one_sqlite_store_without_losses(tmp_path):
    uri = f"sqlite:///{tmp_path}/shared/mlflow.db"  # fresh: both also race to create it
    steps = 60
    env = {**os.environ, "PYTHONPATH": pythonpath(ROOT / "tests")}
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, uri, f"writer {i}", str(steps)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    results = []
    for writer in writers:
        out, err = writer.communicate(timeout=240)
        assert writer.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert all(r["lost"] == [] for r in results), results

    client = MlflowClient(uri)
    runs = {
        r.info.run_name: r
        for r in client.search_runs(
            [client.get_experiment_by_name("petvision-segmentation").experiment_id]
        )
    }
    assert sorted(runs) == ["writer 0", "writer 1"]
    for run in runs.values():
        assert run.info.status == "FINISHED"
        for key in ["loss", "val_loss", "pet_iou"]:
            assert sorted(m.step for m in client.get_metric_history(run.info.run_id, key)) == list(
                range(steps)
            )
        assert {f"p{s}" for s in range(steps)} <= set(run.data.params)
