"""A tracking server for a team: a real `mlflow server` (SQL backend, proxied artifact store) on
127.0.0.1, a training stage pointed at it through MLFLOW_TRACKING_URI as the README says, and the
run read back through MLflow's client API: params, per-epoch metric history, artifacts, the model."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import path_overrides, run_module
from project_copy import tiny_overrides

EPOCHS = 2


@pytest.mark.slow
def test_a_training_stage_logs_to_a_shared_tracking_server(
    mlflow_server, make_config, tmp_path, monkeypatch
):
    import mlflow

    from petvision.data import npy_dataset
    from petvision.download import run_download
    from petvision.preprocess import run_preprocess

    uri, _ = mlflow_server
    overrides = [
        *path_overrides(tmp_path),
        *tiny_overrides(),
        f"classification.train.epochs={EPOCHS}",
    ]
    data_cfg = make_config(*overrides)
    run_download(data_cfg)
    run_preprocess(data_cfg)

    done = run_module(
        "petvision.train_xception",
        *overrides,
        cwd=tmp_path,
        hydra_dir=tmp_path / "hydra",
        env={"MLFLOW_TRACKING_URI": uri},
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(data_cfg.tracking.experiments.classification)
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["classification.train.epochs"] == str(EPOCHS)
    assert run.data.params["classification.model.name"] == "mini_xception"
    for key in ("loss", "val_loss", "val_accuracy"):
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, key)) == list(
            range(EPOCHS)
        ), key
    assert "best.test.accuracy" in run.data.metrics
    reports = {a.path for a in client.list_artifacts(run.info.run_id, "reports")}
    assert {"reports/metrics.json", "reports/history.csv"} <= reports

    # The logged model, fetched through the server's artifact proxy, loads and predicts.
    [logged] = [
        m
        for m in client.search_logged_models([experiment.experiment_id])
        if m.source_run_id == run.info.run_id
    ]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # models:/ URIs resolve through the global store
    mlflow.set_tracking_uri(uri)
    try:
        model = mlflow.pyfunc.load_model(f"models:/{logged.model_id}")
    finally:
        mlflow.set_tracking_uri(None)
    images = np.asarray(
        npy_dataset.load_split(data_cfg.paths.resolve("npy"), "classification", "test").images[:4]
    )
    predicted = np.asarray(model.predict(images), dtype=np.float32)
    assert predicted.shape == (4, 1) and ((predicted >= 0) & (predicted <= 1)).all()
