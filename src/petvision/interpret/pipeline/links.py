"""The visualize stage's MLflow run and its links with the training runs it explains.

The stage's run is tagged with the training runs' ids (read from ``reports/<task>/mlflow_run.json``,
which the training stages write), and each training run is tagged back with this run's id and
address: one click between a model and the pictures that explain it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from petvision import tracking
from petvision.config import Config, Task, TaskConfig

log = logging.getLogger(__name__)

FOLDERS = (
    "activations",
    "filters",
    "gradcam",
    "layers",
    "faithfulness",
    "sanity",
    Task.segmentation,
)
PAGES = (
    "metrics.json",
    "report.html",
    "localization_by_layer.csv",
    "deletion_insertion.csv",
    "sanity_cascade.csv",
)


def log_outputs(run: tracking.Run, out: Path) -> None:
    """The stage's folders and pages, as they are in ``out``, as artifacts under ``visualize/``."""
    for folder in FOLDERS:
        if (out / folder).is_dir():
            run.log_artifact(out / folder, artifact_path=f"visualize/{folder}")
    for page in PAGES:
        if (out / page).is_file():
            run.log_artifact(out / page, artifact_path="visualize")


def read_model_run(task: TaskConfig) -> dict | None:
    """``reports/<task>/mlflow_run.json`` (written by the training stage), or None with a warning."""
    path = task.reports / "mlflow_run.json"
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(info, dict) or not info.get("run_id"):
            raise ValueError("no run_id")
    except (OSError, ValueError) as exc:
        log.warning(
            "%s: cannot tell which MLflow run trained the %s model (%s); the pictures will not be "
            "linked to it",
            path,
            task.task,
            exc,
        )
        return None
    return info


def explained_tags(cfg: Config, model_runs: dict[Task, dict | None]) -> dict[str, str]:
    tags = {
        "explains.classification.model": cfg.classification.model.name,
        "explains.segmentation.model": cfg.segmentation.model.name,
        "visualize.model": cfg.visualize.model,
    }
    for task, info in model_runs.items():
        if info:
            tags[f"explains.{task}.run_id"] = str(info["run_id"])
            tags[f"explains.{task}.experiment_id"] = str(info.get("experiment_id", ""))
    return tags


def run_url(uri: str, experiment_id: str, run_id: str) -> str:
    """The MLflow UI page of one run (the local UI's address for a store without a server)."""
    base = tracking.ui_url(uri, experiment_id).split("/#/", 1)[0]
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def link_model_runs(run: tracking.Run, model_runs: dict[Task, dict | None]) -> None:
    """Tag each training run with this run's id and address, and describe this run with links
    to them: one click between a model and the pictures that explain it. A run in another store
    (a teammate's, via ``dvc pull``) or no longer there is warned about and skipped."""
    import mlflow

    here = run_url(run.uri, run.experiment_id, run.run_id)
    notes = []
    client = mlflow.MlflowClient(run.uri)
    for task, info in model_runs.items():
        if not info:
            continue
        run_id, experiment_id = str(info["run_id"]), str(info.get("experiment_id", ""))
        if info.get("tracking_uri") and info["tracking_uri"] != run.uri:
            log.warning(
                "the %s model's MLflow run %s is in another tracking store (%s), not %s; not linked",
                task,
                run_id,
                info["tracking_uri"],
                run.uri,
            )
            continue
        try:
            client.set_tag(run_id, "interpretation_run_id", run.run_id)
            client.set_tag(run_id, "interpretation_url", here)
        except Exception as exc:
            log.warning(
                "cannot tag the %s model's MLflow run %s in %s (%s); not linked",
                task,
                run_id,
                run.uri,
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
            )
            continue
        notes.append(f"- {task} model: [run {run_id}]({run_url(run.uri, experiment_id, run_id)})")
    if notes:
        run.set_tags(
            {
                "mlflow.note.content": "Pictures explaining these trained models:\n\n"
                + "\n".join(notes)
            }
        )
