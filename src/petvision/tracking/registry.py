"""The MLflow Model Registry: every trained model a new version, one ``champion`` alias per task.

After a training run logs its model, :func:`register_trained_model` (called by the training
session's ``finish``) registers it as a new version of ``tracking.registered_models.<task>``
(``petvision-segmentation``, ``petvision-classifier``) and decides whether the alias
``champion`` moves to it:

* no champion yet: the first version becomes champion;
* the champion was validated on other data (its validation split's digest differs): no
  comparison is possible, the alias stays where it is;
* same data: the alias moves only if the new version's validation metric is strictly better
  (segmentation: pet IoU, classification: accuracy, both of the best epoch); a tie keeps the
  champion, as does a metric that is not a number.

The decision and its reason go into the version's tags (``champion.decision``,
``champion.reason``) and its description, next to the run id, the DVC experiment name
(``$DVC_EXP_NAME`` under ``dvc exp run``) and the validation data digest. ``tracking.register:
false`` turns registration off. A registry that fails does not fail training: the error is
logged and listed with the run's lost log calls, as any other tracking failure.

Two trainings finishing at the same moment may both compare against the same old champion; the
later alias move wins. Runs of one project are sequential (DVC runs stages one by one and queued
experiments on the same store register in turn), so this is left as it is.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any

from petvision.config import TaskConfig, TrackingConfig
from petvision.core.tasks import Task
from petvision.tracking.context import TASK_TAG
from petvision.tracking.store import first_line

log = logging.getLogger(__name__)

CHAMPION = "champion"
# The validation metric each task's champion is chosen by; higher is better for both.
SELECTION_METRIC = {Task.segmentation: "pet_iou", Task.classification: "accuracy"}
VALIDATION_SPLIT = "val"

TAG_TASK = TASK_TAG
TAG_RUN = "run_id"
TAG_DVC_EXP = "dvc.exp_name"
TAG_DIGEST = "data_digest.val"
TAG_METRIC = "metric.name"
TAG_VALUE = "metric.value"
TAG_DECISION = "champion.decision"
TAG_REASON = "champion.reason"


@dataclass(frozen=True)
class Candidate:
    """A newly logged model and what its champion decision needs."""

    task: Task
    model_uri: str  # models:/<model id>, as MLflow 3 logs it
    run_id: str
    metric: str  # e.g. "val_pet_iou"
    value: float
    data_digest: str  # of the validation split
    dvc_experiment: str  # "" when not run by dvc exp
    # More tags for the version: what the model was trained on (``trained_on.*``, see
    # petvision.evaluation.trust.provenance).
    extra_tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    name: str
    version: str
    promoted: bool
    reason: str
    previous_champion: str | None  # version number, None when there was none


def decide(candidate: Candidate, champion: Any | None) -> tuple[bool, str]:
    """Whether ``candidate`` takes the alias from ``champion`` (a ModelVersion or None), and why."""
    if champion is None:
        return True, "first version with a validation metric: no champion yet"
    tags = dict(champion.tags or {})
    if tags.get(TAG_DIGEST) != candidate.data_digest:
        return False, (
            f"not compared: validated on other data (digest {candidate.data_digest}) than champion "
            f"version {champion.version} (digest {tags.get(TAG_DIGEST, 'unknown')}); "
            "the alias stays"
        )
    if tags.get(TAG_METRIC) != candidate.metric:
        return False, (
            f"not compared: champion version {champion.version} was chosen by "
            f"{tags.get(TAG_METRIC, 'an unknown metric')}, this one by {candidate.metric}"
        )
    try:
        best = float(tags[TAG_VALUE])
    except (KeyError, ValueError):
        return False, f"not compared: champion version {champion.version} has no {TAG_VALUE} tag"
    new = candidate.value
    if not math.isfinite(new):
        return False, f"{candidate.metric} is {new}: not a number, the champion stays"
    if math.isfinite(best) and new <= best:
        return False, (
            f"{candidate.metric} {new:.6g} does not beat champion version {champion.version}'s "
            f"{best:.6g} on the same validation data"
        )
    return True, (
        f"{candidate.metric} {new:.6g} beats champion version {champion.version}'s {best:.6g} "
        "on the same validation data"
    )


def _champion(client: Any, name: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code) or "not found" in str(exc).lower():
            return None
        raise


def _ensure_registered_model(client: Any, name: str, task: Task) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        try:
            client.create_registered_model(
                name,
                tags={TAG_TASK: str(task)},
                description=f"petvision {task} models, one version per training run; the alias "
                f"'{CHAMPION}' marks the best on the validation data "
                f"(val_{SELECTION_METRIC[task]}).",
            )
        except MlflowException as exc:  # created by another process a moment ago
            if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
                raise


def register(client: Any, name: str, candidate: Candidate) -> Decision:
    """Register ``candidate`` as a new version of ``name``; move the champion alias if it wins."""
    from mlflow.utils.uri import is_models_uri

    _ensure_registered_model(client, name, candidate.task)
    model_id = (
        candidate.model_uri.removeprefix("models:/") if is_models_uri(candidate.model_uri) else None
    )
    if model_id and ("/" in model_id or "@" in model_id):
        model_id = None  # a registered model's URI, not a logged model's
    tags = {
        TAG_TASK: str(candidate.task),
        TAG_RUN: candidate.run_id,
        TAG_DVC_EXP: candidate.dvc_experiment or "none (not run by dvc exp)",
        TAG_DIGEST: candidate.data_digest,
        TAG_METRIC: candidate.metric,
        TAG_VALUE: repr(float(candidate.value)),
        **candidate.extra_tags,
    }
    version = client.create_model_version(
        name,
        source=candidate.model_uri,
        run_id=candidate.run_id or None,
        tags=tags,
        model_id=model_id,
    ).version
    champion = _champion(client, name)
    promoted, reason = decide(candidate, champion)
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
    decision = "promoted" if promoted else "kept"
    client.set_model_version_tag(name, version, TAG_DECISION, decision)
    client.set_model_version_tag(name, version, TAG_REASON, reason)
    exp = f", DVC experiment {candidate.dvc_experiment}" if candidate.dvc_experiment else ""
    client.update_model_version(
        name,
        version,
        description=(
            f"Run {candidate.run_id}{exp}; {candidate.metric} {candidate.value:.6g} on validation "
            f"data {candidate.data_digest}. {'Champion' if promoted else 'Not champion'}: {reason}."
        ),
    )
    previous = None if champion is None else str(champion.version)
    log.info(
        "MLflow registry: %s version %s %s (%s)",
        name,
        version,
        f"is now '{CHAMPION}'"
        if promoted
        else f"registered; '{CHAMPION}' stays at version {previous}",
        reason,
    )
    return Decision(name, str(version), promoted, reason, previous)


def register_trained_model(
    tracking: TrackingConfig,
    task: TaskConfig,
    run: Any,
    model_uri: str,
    summary: dict,
    digests: dict[str, str],
    extra_tags: dict[str, str] | None = None,
) -> Decision | None:
    """The training session's hook: register the run's logged model as a version of
    ``task.registered_model`` (see module docstring), unless ``tracking.register`` is off.
    Never raises: a failure is logged and added to ``run.lost``."""
    if not tracking.register or not model_uri or not getattr(run, "uri", ""):
        return None
    import mlflow

    metric = SELECTION_METRIC[task.task]
    candidate = Candidate(
        task=task.task,
        model_uri=model_uri,
        run_id=run.run_id,
        metric=f"val_{metric}",
        value=float(summary.get(VALIDATION_SPLIT, {}).get(metric, float("nan"))),
        data_digest=digests.get(VALIDATION_SPLIT, ""),
        dvc_experiment=os.environ.get("DVC_EXP_NAME", ""),
        extra_tags=dict(extra_tags or {}),
    )
    name = task.registered_model
    try:
        return register(
            mlflow.MlflowClient(tracking_uri=run.uri, registry_uri=run.uri), name, candidate
        )
    except Exception as exc:
        first = first_line(exc)
        log.warning(
            "MLflow registry %s: could not register %s as a version of %s: %s",
            run.uri,
            model_uri,
            name,
            first,
        )
        run.lost.append(f"registry {name}: {type(exc).__name__}: {first}")
        return None
