"""A real SIGKILL at every point of the epoch commit protocol, through the real command line,
for both training stages.

``PETVISION_KILL_AT=<point>:<epoch>`` (petvision.training.faults) makes ``python -m
petvision.train_segmentation`` (or ``train_xception``) kill itself with SIGKILL at that point, so
no ``except``, no ``finally`` and no Keras callback runs after it. The same command is then run
again without the switch, killed again at the next point, and so on, once at each point (one of
them inside an atomic write: the commit's new ``history.json`` written, not yet renamed); the run
that finally completes must equal an uninterrupted run: the same history, the same best epoch,
the optimizer's steps counted once, each MLflow metric step logged exactly once in one run whose
params were kept, and every output whole. Each kill leaves the folder as its point says (checked
before the rerun), each killed run's log names the point at its start and at the kill, and each
rerun starts by repairing what the kill before it left.

The data makes the comparison exact enough: the whole training split is one batch, so the input
pipeline's shuffle (which starts its sequence again on a resume) only reorders the rows inside
that batch, and a resumed epoch computes the same numbers up to float rounding. The kill
lands in epoch 2 of 3 and the loss falls every epoch, so the best epoch (3) comes after the kill:
an optimizer restarted at step 0 by the resume would then show in the final model.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import ROOT, STAGE_OUTPUTS, VENV_BIN, path_overrides, write_npy
from mlflow import MlflowClient
from PIL import Image

from petvision.core.errors import ConfigError
from petvision.training import faults
from petvision.training.workdir import Workdir, _backup_epoch

EPOCHS, KILL_EPOCH, TRAIN_COUNT = 3, 2, 16
# point -> the epoch the kill names (None: after training), in the order the kills come
POINTS = {
    "after_best_saved": KILL_EPOCH,
    "mid_backup": KILL_EPOCH,
    "after_backup": KILL_EPOCH,
    "mid_commit": KILL_EPOCH,
    "after_commit": KILL_EPOCH,
    "mid_outputs": None,
}
# task -> (stage module, MLflow experiment, image size, splits, the stage's own overrides)
STAGES = {
    "segmentation": (
        "petvision.train_segmentation",
        "petvision-segmentation",
        16,
        {"train": TRAIN_COUNT, "val": 8},
        ["segmentation.train.learning_rate=0.003"],
    ),
    "classification": (
        "petvision.train_xception",
        "petvision-classification",
        32,
        {"train": TRAIN_COUNT, "val": 8, "test": 8},
        # The residual demo: no augmentation or dropout, whose random draws a resume does not
        # replay, and no batch normalization, whose moving averages kept the mini-Xception's
        # validation loss from falling in 3 steps.
        ["classification/model=residual_convnet", "classification.train.learning_rate=0.001"],
    ),
}


def stage_args(task: str, base: Path, npy: Path) -> list[str]:
    _, _, size, _, own = STAGES[task]
    return [
        *path_overrides(base),
        f"paths.npy={npy}",
        f"tracking.uri=sqlite:///{base}/mlflow.db",
        f"data.{task}.image_size={size}",
        f"{task}.train.epochs={EPOCHS}",
        f"{task}.train.batch_size={TRAIN_COUNT}",
        f"{task}.train.optimizer=adam",
        f"{task}.train.schedule=constant",
        "tracking.log_model=false",
        "trainer.device=cpu",
        "trainer.precision=float32",
        *own,
        f"hydra.run.dir={base / 'hydra'}",
    ]


def start(
    task: str, base: Path, npy: Path, kill_at: str | None, attempt: int = 0
) -> subprocess.Popen:
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    env.pop(faults.ENV, None)
    env.pop("MLFLOW_TRACKING_URI", None)
    if kill_at:
        env[faults.ENV] = kill_at
    base.mkdir(parents=True, exist_ok=True)
    log = (base / f"{attempt}-{kill_at or 'complete'}.log").open("w")
    return subprocess.Popen(
        [sys.executable, "-m", STAGES[task][0], *stage_args(task, base, npy)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def wait(process: subprocess.Popen, base: Path, expected: int) -> None:
    try:
        process.wait(timeout=600)
    except subprocess.TimeoutExpired:
        process.kill()  # our SIGKILL must not pass for the one the switch sends
        process.wait()
        pytest.fail(f"{process.args[2]} did not end in 600 s")
    logs = "\n".join(p.read_text()[-3000:] for p in sorted(base.glob("*.log")))
    assert process.returncode == expected, logs


def read_history(task: str, base: Path) -> dict[str, list[float]]:
    with (base / "reports" / task / "history.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == list(range(1, len(rows) + 1))
    return {key: [float(r[key]) for r in rows] for key in rows[0] if key != "epoch"}


def the_run(task: str, base: Path):
    client = MlflowClient(f"sqlite:///{base}/mlflow.db")
    experiment = client.get_experiment_by_name(STAGES[task][1])
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return client, runs[0]


def files_under(base: Path) -> list[str]:
    return sorted(
        str(p.relative_to(base))
        for folder in ("models", "reports")
        if (base / folder).exists()
        for p in (base / folder).rglob("*")
        if p.is_file()
    )


def state_at_kill(task: str, base: Path, point: str) -> None:
    """What the folder holds shows that the kill landed where it was named."""
    state = Workdir(base / "state" / task)
    outputs = STAGE_OUTPUTS[task]
    model = outputs[0]
    if point == "mid_outputs":
        present = [name for name in outputs if (base / name).exists()]
        assert present and len(present) < len(outputs), present  # some outputs renamed, not all
        assert model not in present
        assert state.epochs_done() == EPOCHS
        return
    metadata = state.backup / "training_metadata.json"
    committed = KILL_EPOCH if point == "after_commit" else KILL_EPOCH - 1
    assert state.epochs_done() == committed
    assert state.best_file(KILL_EPOCH).is_file()  # the improved model of the killed epoch is saved
    backup_epoch = {"after_best_saved": KILL_EPOCH - 1, "mid_backup": KILL_EPOCH - 1}.get(
        point, KILL_EPOCH
    )
    assert _backup_epoch(metadata) == backup_epoch
    if (
        point == "mid_backup"
    ):  # the new weights are written, the epoch count that goes with them not
        assert (state.backup / "latest.weights.h5").stat().st_mtime_ns > metadata.stat().st_mtime_ns
    if (
        point == "mid_commit"
    ):  # the new history whole under its temporary name, the old one in place
        [pending] = state.root.glob(".history.*.tmp.json")
        assert len(json.loads(pending.read_text())["loss"]) == KILL_EPOCH
    assert not (base / model).exists()
    if point == "after_commit":  # committed but not yet logged: MLflow has the steps before it only
        client, run = the_run(task, base)
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "loss")) == list(
            range(KILL_EPOCH - 1)
        )


def the_switch_was_announced(log: Path, spec: str, point: str) -> None:
    """A set switch is logged when the stage starts, and the kill when it comes."""
    text = log.read_text()
    assert f"{faults.ENV}={spec} is set: this process will kill itself" in text, text[-3000:]
    assert f"killing this process (SIGKILL) at {point}" in text, text[-3000:]


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("task", list(STAGES))
def test_a_sigkill_at_each_commit_point_resumes_to_the_uninterrupted_result(task, tmp_path):
    outputs = STAGE_OUTPUTS[task]
    npy = tmp_path / "npy"
    write_npy(npy, task, STAGES[task][2], STAGES[task][3])
    reference, base = tmp_path / "reference", tmp_path / "killed"
    uninterrupted = start(task, reference, npy, None)

    params_at_first_kill = None
    for attempt, (point, epoch) in enumerate(POINTS.items()):
        spec = point if epoch is None else f"{point}:{epoch}"
        wait(start(task, base, npy, spec, attempt), base, -signal.SIGKILL)
        the_switch_was_announced(base / f"{attempt}-{spec}.log", spec, point)
        state_at_kill(task, base, point)
        params_at_first_kill = params_at_first_kill or the_run(task, base)[1].data.params
    wait(start(task, base, npy, None, len(POINTS)), base, 0)
    wait(uninterrupted, reference, 0)

    expected = read_history(task, reference)
    values = expected["val_loss"]
    # The loss falls every epoch, so the best epoch is the last, after the kills (module docstring).
    assert values == sorted(values, reverse=True) and len(set(values)) == EPOCHS, values
    assert (
        json.loads((reference / "reports" / task / "metrics.json").read_text())["best_epoch"]
        == EPOCHS
    )
    expected_weights = keras.saving.load_model(reference / outputs[0]).get_weights()

    for attempt, point in enumerate(POINTS, start=1):  # each rerun repaired the folder and went on
        log = (
            next(base.glob(f"{attempt}-*.log"))
            if attempt < len(POINTS)
            else base / f"{attempt}-complete.log"
        )
        assert f"resuming {task} training after epoch" in log.read_text(), (point, log)
    assert faults.ENV not in (base / f"{len(POINTS)}-complete.log").read_text()
    history = read_history(task, base)
    assert sorted(history) == sorted(expected)
    for key in expected:  # rtol: float rounding of the rows' order inside the one batch
        np.testing.assert_allclose(history[key], expected[key], rtol=1e-4, atol=1e-6, err_msg=key)

    metrics = json.loads((base / "reports" / task / "metrics.json").read_text())
    assert metrics["best_epoch"] == EPOCHS and metrics["epochs_run"] == EPOCHS
    assert files_under(base) == sorted(outputs)  # whole: every output, no temporary file
    for picture in (name for name in outputs if name.endswith(".png")):
        with Image.open(base / picture) as image:
            image.verify()
    model = keras.saving.load_model(base / outputs[0], safe_mode=True)
    # One step per epoch: an optimizer restarted by a resume would have counted fewer.
    assert int(model.optimizer.iterations.numpy()) == EPOCHS
    for got, want, weight in zip(model.get_weights(), expected_weights, model.weights):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5, err_msg=weight.path)

    client, run = the_run(task, base)
    assert run.info.status == "FINISHED" and run.data.tags["resumed"] == "true"
    assert (
        json.loads((base / "reports" / task / "mlflow_run.json").read_text())["run_id"]
        == run.info.run_id
    )
    for key in expected:  # each epoch logged exactly once, with the history's value (6 digits)
        logged = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
        assert [m.step for m in logged] == list(range(EPOCHS)), key
        np.testing.assert_allclose([m.value for m in logged], history[key], rtol=1e-5, err_msg=key)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "best_epoch")] == [0]
    # The params logged before the first kill are all kept, unchanged, and none is missing.
    assert params_at_first_kill and run.data.params == params_at_first_kill
    assert set(run.data.params) == set(the_run(task, reference)[1].data.params)
    assert not (base / "state" / task).exists()


def test_the_switch_refuses_a_point_it_does_not_know(monkeypatch):
    for bad in ("after_comit:2", "after_commit:0", "after_commit:two"):
        monkeypatch.setenv(faults.ENV, bad)
        with pytest.raises(ConfigError, match=re.escape(f"{faults.ENV}={bad!r}")):
            faults.point("after_commit", 2)
    monkeypatch.setenv(faults.ENV, "after_commit:2")
    assert faults.armed("after_commit", 2)
    assert not faults.armed("after_commit", 1) and not faults.armed("after_backup", 2)
    monkeypatch.delenv(faults.ENV)
    assert not faults.armed("after_commit", 2)


def test_the_switch_is_checked_and_announced_when_a_stage_starts(monkeypatch, caplog):
    """runtime.setup, the training stages' first call, calls faults.announce (the CLI's side is in
    test_reliability.py::test_contradictory_settings_fail_at_start_through_the_cli)."""
    monkeypatch.setenv(faults.ENV, "mid_backup:x")
    with pytest.raises(
        ConfigError, match=r"after_best_saved, after_commit.*unset PETVISION_KILL_AT"
    ):
        faults.announce()
    for spec, where in (
        ("after_commit:2", "after_commit of epoch 2"),
        ("mid_outputs", "mid_outputs"),
    ):
        monkeypatch.setenv(faults.ENV, spec)
        caplog.clear()
        with caplog.at_level("WARNING", logger=faults.__name__):
            faults.announce()
        [record] = caplog.records
        assert record.levelname == "WARNING"
        assert (
            f"{faults.ENV}={spec} is set: this process will kill itself with SIGKILL at {where}"
            in (record.getMessage())
        )
    monkeypatch.delenv(faults.ENV)
    caplog.clear()
    faults.announce()
    assert not caplog.records
