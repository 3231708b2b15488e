"""DVC experiments over Hydra overrides, and their MLflow runs: `dvc exp run -S`, queued
experiments running two at a time, `dvc exp show`, and one MLflow store that a user can filter by
experiment name. Each test works on a copy of the tiny repro'd project (project_copy.py)."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
import yaml
from conftest import run_module
from project_copy import (
    VENV_BIN,
    copy_project,
    downstream,
    dvc,
    env,
    load_params,
    mlflow_runs,
    ran_stages,
    run,
    tracked_stages,
)

EXP_NAME_TAG = "dvc.exp_name"  # set by petvision.tracking from $DVC_EXP_NAME


def runs_of(project, exp_name: str) -> dict[str, object]:
    """The MLflow runs of one DVC experiment, by stage: what the UI's filter
    tags.`dvc.exp_name` = '<name>' shows."""
    found = mlflow_runs(project, f"tags.`{EXP_NAME_TAG}` = '{exp_name}'")
    stages = [r.data.tags["dvc.stage"] for r in found]
    assert len(stages) == len(set(stages)), (
        f"experiment {exp_name}: more than one run for a stage: {stages}"
    )
    return {r.data.tags["dvc.stage"]: r for r in found}


def experiments_shown(project) -> dict[str, dict]:
    """`dvc exp show --json`: {experiment name: its data (params, metrics)}."""
    rows = json.loads(dvc(project, "exp", "show", "--json").stdout)
    named = {}
    for baseline in rows:
        for exp in baseline.get("experiments") or []:
            for rev in exp["revs"]:
                named[rev["name"]] = rev["data"]
    return named


def direct_config(project, *args: str) -> dict:
    """The configuration `python -m petvision.train_xception <args>` would run, printed by Hydra
    (`--cfg job --resolve`) without running anything."""
    done = run(
        [
            str(VENV_BIN / "python"),
            "-m",
            "petvision.train_xception",
            *args,
            "--cfg",
            "job",
            "--resolve",
        ],
        cwd=project,
        extra_env={"PYTHONPATH": "src"},
        timeout=120,
    )
    return yaml.safe_load(done.stdout)


# --------------------------------------------------------------------------- at start


@pytest.mark.slow
def test_a_bad_value_fails_at_start_naming_the_key(tmp_path):
    done = run_module(
        "petvision.train_xception", "classification.train.epochs=0", hydra_dir=tmp_path, timeout=120
    )
    assert done.returncode == 2
    assert "classification.train.epochs=0" in done.stderr and "must be at least 1" in done.stderr
    assert "Traceback" not in done.stderr


# --------------------------------------------------------------------------- one experiment


OVERRIDES = ["classification/model=residual_convnet", "classification.train.epochs=2"]


@pytest.fixture(scope="module")
def workspace_experiment(repro_project, tmp_path_factory):
    """`dvc exp run -n resnet2 -S <OVERRIDES>` in a copy of the project: (project, its output)."""
    project = copy_project(repro_project, tmp_path_factory.mktemp("exp") / "project")
    sets = [arg for override in OVERRIDES for arg in ("-S", override)]
    done = dvc(project, "exp", "run", "-n", "resnet2", *sets, timeout=900)
    return project, done.stdout


@pytest.mark.slow
def test_exp_run_sets_values_and_groups_and_reruns_only_the_classifier(workspace_experiment):
    project, output = workspace_experiment
    assert sorted(ran_stages(output)) == sorted(downstream(project, "train_xception")), output
    params = load_params(project)
    assert params["classification"]["model"]["name"] == "residual_convnet"
    assert params["classification"]["train"]["epochs"] == 2

    shown = experiments_shown(project)["resnet2"]
    assert (
        shown["params"]["params.yaml"]["data"]["classification"]["model"]["name"]
        == "residual_convnet"
    )
    dvc_metrics = shown["metrics"]["reports/classification/metrics.json"]["data"]

    # From the `dvc exp show` row to its MLflow runs, in the workspace's own store, and back.
    runs = runs_of(project, "resnet2")
    assert set(runs) == downstream(project, "train_xception") & set(tracked_stages(project))
    trained = runs["train_xception"]
    assert trained.data.params["classification.model.name"] == "residual_convnet"
    assert trained.data.metrics["best.test.accuracy"] == pytest.approx(
        dvc_metrics["test"]["accuracy"]
    )
    assert (
        trained.data.tags["dvc.exp_baseline"]
        == run(["git", "rev-parse", "HEAD"], cwd=project).stdout.strip()
    )
    assert trained.info.artifact_uri.startswith((project / "mlruns").as_uri())


@pytest.mark.slow
def test_direct_route_and_exp_run_compose_the_same_configuration(workspace_experiment):
    project, _ = workspace_experiment
    composed_by_dvc = load_params(project)  # what `dvc exp run -S` wrote
    assert direct_config(project, *OVERRIDES) == composed_by_dvc
    # ...and what the stage reads back from it, as dvc.yaml runs it.
    assert direct_config(project, "--config-dir", ".", "--config-name", "params") == composed_by_dvc


@pytest.mark.slow
def test_exp_apply_brings_an_experiment_back_into_the_workspace(workspace_experiment, tmp_path):
    import hashlib

    project = copy_project(workspace_experiment[0], tmp_path / "project")
    shown = experiments_shown(project)["resnet2"]["metrics"]["reports/classification/metrics.json"][
        "data"
    ]
    # Back to the baseline: git's params.yaml, dvc.lock and metrics, and the outputs dvc.lock records.
    run(["git", "checkout", "--", "."], cwd=project)
    dvc(project, "checkout", "--force")
    assert load_params(project)["classification"]["model"]["name"] != "residual_convnet"
    model = project / "models" / "classifier.keras"
    baseline_model = hashlib.md5(model.read_bytes()).hexdigest()

    dvc(project, "exp", "apply", "resnet2")
    params = load_params(project)
    assert params["classification"]["model"]["name"] == "residual_convnet"
    assert params["classification"]["train"]["epochs"] == 2
    assert (
        json.loads((project / "reports" / "classification" / "metrics.json").read_text()) == shown
    )
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]["train_xception"]
    recorded = {out["path"]: out["md5"] for out in lock["outs"]}["models/classifier.keras"]
    applied = hashlib.md5(model.read_bytes()).hexdigest()
    assert applied == recorded != baseline_model  # the experiment's model, not the baseline's


# --------------------------------------------------------------------------- queued, two at once


QUEUED = {
    "resnet-lr": [
        "classification/model=residual_convnet",
        "classification.train.learning_rate=0.003",
    ],
    "lr01": ["classification.train.learning_rate=0.01"],
}
QUEUED_EPOCHS = 2


def wait_for_queue(project, timeout_s: float = 600) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        status = dvc(project, "queue", "status").stdout
        if not any(word in status for word in ("Queued", "Running")):
            return status
        if time.monotonic() > deadline:
            raise AssertionError(
                f"queued experiments still running after {timeout_s:.0f} s:\n{status}"
            )
        time.sleep(10)  # each `dvc queue status` costs a second of CPU the experiments need


@pytest.mark.slow
def test_queued_experiments_run_two_at_once_and_lose_no_run_or_metric(repro_project, tmp_path):
    project = copy_project(repro_project, tmp_path / "project")
    for name, overrides in QUEUED.items():
        sets = [
            arg
            for override in [*overrides, f"classification.train.epochs={QUEUED_EPOCHS}"]
            for arg in ("-S", override)
        ]
        dvc(project, "exp", "run", "--queue", "-n", name, *sets)
    log = tmp_path / "queue-start.log"
    try:
        # The workers outlive `dvc queue start` and keep its output open: not a pipe to wait on.
        with log.open("w") as out:
            subprocess.run(
                [str(VENV_BIN / "dvc"), "queue", "start", "-j", "2"],
                cwd=project,
                env=env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=120,
                check=True,
            )
        status = wait_for_queue(project)
    finally:
        dvc(project, "queue", "stop", check=False)
    assert status.count("Success") == len(QUEUED), status

    shown = experiments_shown(project)
    params = shown["resnet-lr"]["params"]["params.yaml"]["data"]
    assert params["classification"]["model"]["name"] == "residual_convnet"
    assert params["classification"]["train"]["learning_rate"] == 0.003

    spans = {}
    for name in QUEUED:
        runs = runs_of(project, name)
        assert set(runs) == downstream(project, "train_xception") & set(tracked_stages(project)), (
            name,
            sorted(runs),
        )
        for stage, r in runs.items():
            assert r.info.status == "FINISHED", (name, stage, r.info.status)
            assert r.info.artifact_uri.startswith((project / "mlruns").as_uri()), (
                r.info.artifact_uri
            )
        trained = runs["train_xception"]
        dvc_metrics = shown[name]["metrics"]["reports/classification/metrics.json"]["data"]
        assert "tracking_lost" not in dvc_metrics
        assert trained.data.metrics["best.test.accuracy"] == pytest.approx(
            dvc_metrics["test"]["accuracy"]
        )
        history = {
            key: mlflow_history(project, trained.info.run_id, key) for key in dvc_metrics["val"]
        }
        for key, steps in history.items():
            assert steps == list(range(QUEUED_EPOCHS)), (
                f"{name}: val_{key} logged at epochs {steps}"
            )
        spans[name] = (
            min(r.info.start_time for r in runs.values()),
            max(r.info.end_time for r in runs.values()),
        )
    (a_start, a_end), (b_start, b_end) = spans.values()
    assert a_start < b_end and b_start < a_end, (
        f"the experiments did not run at the same time: {spans}"
    )


def mlflow_history(project, run_id: str, val_key: str) -> list[int]:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    return sorted(m.step for m in client.get_metric_history(run_id, f"val_{val_key}"))
