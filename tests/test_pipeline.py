"""`dvc repro` end to end, as a user runs it: every stage dvc.yaml declares, on a tiny configuration,
in a temporary git copy of the project (see project_copy.py), with its own DVC cache and MLflow store."""

from __future__ import annotations

import json
import re
import sys

import pytest
import yaml
from project_copy import (
    ROOT,
    compose_params,
    copy_project,
    declared_outputs,
    downstream,
    dvc,
    load_params,
    make_project,
    mlflow_runs,
    ran_stages,
    run,
    shared_repro_output,
    stage_names,
    tracked_stages,
)

# --------------------------------------------------------------------------- without running


def test_params_yaml_says_what_conf_says(tmp_path):
    """`dvc repro` reads params.yaml and does not compose it: a params.yaml left behind after an
    edit of conf/ would silently run the old configuration (the README's `make params`)."""
    fresh = tmp_path / "params.yaml"
    run([sys.executable, "scripts/compose_params.py", str(fresh)], cwd=ROOT)
    assert yaml.safe_load(fresh.read_text()) == yaml.safe_load(
        (ROOT / "params.yaml").read_text()
    ), "params.yaml is stale: run `make params` after editing conf/"


@pytest.mark.slow
def test_dvc_dag_shows_the_pipeline():
    stages = stage_names()
    assert stages[:4] == ["download", "preprocess", "train_segmentation", "train_xception"]
    drawn = dvc(ROOT, "dag").stdout
    for name in stages:
        assert re.search(rf"\|\s*{name}\s*\|", drawn), (
            f"`dvc dag` does not draw stage {name}:\n{drawn}"
        )

    edges = set(re.findall(r'"([\w]+)" -> "([\w]+)"', dvc(ROOT, "dag", "--dot").stdout))
    expected = {
        ("download", "preprocess"),
        ("preprocess", "train_segmentation"),
        ("preprocess", "train_xception"),
    }
    if "visualize" in stages:
        expected |= {("train_segmentation", "visualize"), ("train_xception", "visualize")}
    assert expected <= edges


# --------------------------------------------------------------------------- the whole pipeline


@pytest.mark.slow
def test_repro_runs_every_stage_and_writes_every_declared_output(repro_project):
    # The shared project is a fresh clone after `make run EXPERIMENT=tiny` (project_copy.py).
    assert ran_stages(shared_repro_output()) == stage_names(repro_project)
    for stage, files in declared_outputs(repro_project).items():
        for path in files:
            assert path.exists(), (
                f"stage {stage}: declared output {path.relative_to(repro_project)} is missing"
            )
            if path.is_dir():
                assert any(p.is_file() for p in path.rglob("*")), f"stage {stage}: {path} is empty"
            else:
                assert path.stat().st_size > 0, f"stage {stage}: {path} is empty"

    # Metrics and plots, as DVC itself reads them.
    pipeline = yaml.safe_load((repro_project / "dvc.yaml").read_text())
    shown = json.loads(dvc(repro_project, "metrics", "show", "--json").stdout)
    metrics = shown[""]["data"]  # "" is the workspace
    declared = {
        m
        for s in pipeline["stages"].values()
        for m in (next(iter(e)) if isinstance(e, dict) else e for e in s.get("metrics", []))
    }
    assert len(metrics) == len(declared)
    for name, content in metrics.items():
        assert "error" not in content and content["data"], f"{name}: {content}"
    for task in ("segmentation", "classification"):
        summary = metrics[f"reports/{task}/metrics.json"]["data"]
        assert summary["epochs_run"] == load_params(repro_project)[task]["train"]["epochs"]
        assert "tracking_lost" not in summary
    plots = json.loads(dvc(repro_project, "plots", "show", "--json").stdout)
    assert not plots.get("errors"), plots["errors"]
    for name in [next(iter(p)) for p in pipeline.get("plots", [])]:
        drawn = plots["data"].get(name)
        assert drawn and drawn[0]["content"]["data"]["values"], (
            f"`dvc plots show` draws nothing for {name!r}"
        )

    # One MLflow run per tracked stage, finished, in the project's own store, linked from the reports.
    runs = mlflow_runs(repro_project)
    by_stage = {}
    for r in runs:
        by_stage.setdefault(r.data.tags.get("dvc.stage"), []).append(r)
    assert set(by_stage) == set(tracked_stages(repro_project)), sorted(by_stage)
    for stage, found in by_stage.items():
        assert len(found) == 1 and found[0].info.status == "FINISHED", (stage, found)
        assert found[0].info.artifact_uri.startswith((repro_project / "mlruns").as_uri())
    for stage, task in tracked_stages(repro_project).items():
        link = repro_project / "reports" / task / "mlflow_run.json"
        if link.exists():
            assert json.loads(link.read_text())["run_id"] == by_stage[stage][0].info.run_id

    # Each trained model is version 1 of its registered model, and so the champion.
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{repro_project / 'mlflow.db'}")
    for name, stage in (
        ("petvision-segmentation", "train_segmentation"),
        ("petvision-classifier", "train_xception"),
    ):
        champion = client.get_model_version_by_alias(name, "champion")
        assert champion.run_id == by_stage[stage][0].info.run_id, name
        assert champion.tags["champion.decision"] == "promoted", champion.tags


@pytest.mark.slow
def test_the_tiny_preset_runs_every_stage_from_the_command_line(tmp_path):
    """`python -m petvision.<stage> experiment=tiny`, stage after stage, in a fresh clone whose
    default is the quick preset: the README's way to see everything work, without DVC."""
    clone = make_project(tmp_path / "clone", experiment="quick")
    for stage in stage_names(clone):
        run(
            [sys.executable, "-m", f"petvision.{stage}", "experiment=tiny"],
            cwd=clone,
            extra_env={"PYTHONPATH": "src"},
        )
    for stage, files in declared_outputs(clone).items():
        missing = [str(f.relative_to(clone)) for f in files if not f.exists()]
        assert not missing, f"stage {stage} wrote no {missing}"
    runs = mlflow_runs(clone)
    assert sorted(r.data.tags["petvision.cli.stage"] for r in runs) == sorted(tracked_stages(clone))
    assert {r.data.tags["preset"] for r in runs} == {"tiny"}
    assert not any("dvc.stage" in r.data.tags for r in runs)  # run by hand, not by DVC


@pytest.mark.slow
def test_second_repro_does_nothing(repro_project):
    runs_before = len(mlflow_runs(repro_project))
    done = dvc(repro_project, "repro")
    assert ran_stages(done.stdout) == []
    assert "Data and pipelines are up to date." in done.stdout
    assert "up to date" in dvc(repro_project, "status").stdout
    assert len(mlflow_runs(repro_project)) == runs_before


@pytest.mark.slow
def test_a_data_parameter_reruns_what_its_data_feeds(repro_project, tmp_path):
    """A new classification split reruns preprocess and everything downstream of the classification
    arrays; the segmentation arrays come out byte-identical, so DVC keeps that model."""
    project = copy_project(repro_project, tmp_path / "project")
    compose_params(
        project, "data.classification.split_seed=7"
    )  # what `make params` does after an edit
    ran = ran_stages(dvc(project, "repro").stdout)
    assert sorted(ran) == sorted({"preprocess"} | downstream(project, "train_xception")), ran
    assert ran[0] == "preprocess"
