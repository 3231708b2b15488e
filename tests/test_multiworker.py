"""Scale-out: ``trainer.strategy=multi_worker`` trains one model across processes that find each
other through ``TF_CONFIG`` (``tf.distribute.MultiWorkerMirroredStrategy``).

Two worker processes on 127.0.0.1 run ``python -m petvision.train_segmentation`` for one short
epoch on tiny data, sharing the data, the training-state folder and the MLflow store as workers on
a shared file system would. Only the chief (worker 0) may log to MLflow and write the DVC outputs;
worker 1 is given its own ``paths.models`` and ``paths.reports`` so that anything it wrote there
would show. The result must look like a single-worker run's: same files, same metric names, same
model shapes.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, VENV_BIN, free_port, path_overrides, write_npy

SIZE, TRAIN, VAL = 16, 18, 7  # odd counts: the last batches split unevenly across workers


def stage_args(base, npy, tracking_db, *extra: str) -> list[str]:
    return [
        *path_overrides(base),
        f"paths.npy={npy}",
        f"tracking.uri=sqlite:///{tracking_db}",
        "tracking.log_model=false",
        f"data.segmentation.image_size={SIZE}",
        "segmentation.train.epochs=1",
        "segmentation.train.batch_size=4",
        "trainer.device=cpu",
        "trainer.precision=float32",
        *extra,
    ]


def start_stage(args: list[str], hydra_dir, env: dict | None = None) -> subprocess.Popen:
    full_env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "HYDRA_FULL_ERROR": "1",
    }
    full_env.pop("TF_CONFIG", None)  # a single worker must not join a cluster from the environment
    full_env.update(env or {})
    return subprocess.Popen(
        [sys.executable, "-m", "petvision.train_segmentation", *args, f"hydra.run.dir={hydra_dir}"],
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(process: subprocess.Popen, timeout: float) -> str:
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
        pytest.fail(f"stage did not finish in {timeout} s:\n{out[-4000:]}")
    assert process.returncode == 0, out[-12000:]
    return out


def history_columns(reports) -> list[str]:
    with (reports / "segmentation" / "history.csv").open() as f:
        return next(csv.reader(f))


def model_shapes(path) -> tuple:
    import keras

    model = keras.saving.load_model(path, safe_mode=True)
    return tuple(model.output.shape), tuple(tuple(w.shape) for w in model.weights)


def mlflow_runs(tracking_db) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tracking_db}")
    experiment = client.get_experiment_by_name("petvision-segmentation")
    return client.search_runs([experiment.experiment_id]) if experiment else []


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_workers_train_like_one_and_only_the_chief_writes(tmp_path):
    npy = tmp_path / "npy"
    write_npy(
        npy,
        "segmentation",
        SIZE,
        {"train": TRAIN, "val": VAL},
        interpolation="nearest",
        shuffle_seed=1337,
    )

    single_base, single_db = tmp_path / "single", tmp_path / "single.db"
    single = start_stage(stage_args(single_base, npy, single_db), tmp_path / "hydra-single")
    finish(single, timeout=600)

    # Both workers share the data, the state folder and the MLflow store; worker 1 gets its own
    # models/ and reports/ so that any DVC output it wrote would be seen there.
    shared, db = tmp_path / "cluster", tmp_path / "cluster.db"
    ports = {free_port()}
    while len(ports) < 2:  # the system may hand out a just-released port again
        ports.add(free_port())
    cluster = {"worker": [f"127.0.0.1:{port}" for port in sorted(ports)]}
    workers = []
    for index in range(2):
        own = (
            [
                f"paths.models={tmp_path / 'worker1-models'}",
                f"paths.reports={tmp_path / 'worker1-reports'}",
            ]
            if index == 1
            else []
        )
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        workers.append(
            start_stage(
                stage_args(shared, npy, db, "trainer.strategy=multi_worker", *own),
                tmp_path / f"hydra-worker{index}",
                env={"TF_CONFIG": tf_config},
            )
        )
    try:
        logs = [finish(process, timeout=600) for process in workers]
    finally:  # one worker failing leaves the other waiting for it forever
        for process in workers:
            if process.poll() is None:
                process.kill()
                process.communicate()

    assert (
        "runtime: device=cpu" in logs[0] and "strategy=multi_worker with 2 replica(s)" in logs[0]
    ), logs[0][-3000:]
    assert "worker 1 (not chief)" in logs[1], logs[1][-3000:]

    # The chief wrote the DVC outputs, as a single worker does; worker 1 wrote none.
    chief_reports, single_reports = shared / "reports", single_base / "reports"
    assert sorted(p.name for p in (chief_reports / "segmentation").iterdir()) == sorted(
        p.name for p in (single_reports / "segmentation").iterdir()
    )
    assert not (tmp_path / "worker1-models").exists() or not any(
        (tmp_path / "worker1-models").iterdir()
    )
    assert not (tmp_path / "worker1-reports").exists() or not any(
        (tmp_path / "worker1-reports").rglob("*")
    )
    # Both work folders are cleared at the end (worker 1's was private, not inside the chief's).
    state = shared / "state"
    assert not state.exists() or not any(state.iterdir()), sorted(str(p) for p in state.rglob("*"))

    # Same metric names and history columns; same model shapes.
    chief_metrics = json.loads((chief_reports / "segmentation" / "metrics.json").read_text())
    single_metrics = json.loads((single_reports / "segmentation" / "metrics.json").read_text())
    assert set(chief_metrics) == set(single_metrics)
    assert (
        set(chief_metrics["val"]) == set(single_metrics["val"])
        and "mean_iou" in chief_metrics["val"]
    )
    assert history_columns(chief_reports) == history_columns(single_reports)
    assert model_shapes(shared / "models" / "segmentation.keras") == model_shapes(
        single_base / "models" / "segmentation.keras"
    )
    # Same weights: the same seed gives the same initial weights and the same shuffled index
    # stream, and every global batch of 4 (18 images: 4, 4, 4, 4, 2) splits evenly across the two
    # replicas, whose mean losses Keras scales by 1/2 before the all-reduce, so each step applies
    # the single worker's gradient. What may differ is float rounding (another summation order),
    # which after 5 steps stays orders below the tolerance; a worker training on the wrong share,
    # a gradient counted twice or a step lost moves weights by far more.
    import keras
    import numpy as np

    single_model = keras.saving.load_model(
        single_base / "models" / "segmentation.keras", safe_mode=True
    )
    chief_model = keras.saving.load_model(shared / "models" / "segmentation.keras", safe_mode=True)
    steps = -(-TRAIN // 4)
    assert int(single_model.optimizer.iterations.numpy()) == steps
    assert int(chief_model.optimizer.iterations.numpy()) == steps
    for single_w, chief_w, weight in zip(
        single_model.get_weights(), chief_model.get_weights(), single_model.weights
    ):
        np.testing.assert_allclose(chief_w, single_w, rtol=1e-4, atol=1e-5, err_msg=weight.path)

    # One MLflow run, the chief's, tagged as a two-replica multi-worker run with its epochs logged.
    runs = mlflow_runs(db)
    assert len(runs) == 1, [r.info.run_id for r in runs]
    tags, metrics = runs[0].data.tags, runs[0].data.metrics
    assert tags["runtime.strategy"] == "multi_worker" and tags["runtime.num_replicas"] == "2"
    assert tags["runtime.is_chief"] == "true"
    assert "val_mean_iou" in metrics and "loss" in metrics
