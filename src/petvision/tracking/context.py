"""What a run records besides metrics: MLflow-safe params, the tags that place a run (git commit,
package versions, the DVC stage and experiment), and what a logged model needs to be served."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import warnings
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from petvision.config import Config
from petvision.core import paths
from petvision.core.tasks import Task
from petvision.tracking import flavor

log = logging.getLogger(__name__)

TASK_TAG = "petvision.task"  # on runs and on registered model versions


# --------------------------------------------------------------------------- params and tags


def param_key(key: str) -> str:
    """MLflow keys allow letters, digits, ``_-. /:``; the config's ``archives[0].name`` becomes
    ``archives.0.name``."""
    key = re.sub(r"\[(\d+)\]", r".\1", key)
    return re.sub(r"[^\w.\- /:]", "_", key)


def param_value(value: Any, limit: int) -> str:
    """A param or tag value as MLflow stores it: text, lists and dicts as JSON, cut to ``limit``
    characters with a note saying where the whole value is."""
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, (list, tuple, dict)):
        text = json.dumps(value, default=str)
    else:
        text = str(value)
    if len(text) > limit:
        note = f"... ({len(text)} characters; the whole value is in config.yaml)"
        text = text[: limit - len(note)] + note
    return text


def _git(*args: str) -> str | None:
    try:
        result = subprocess.run(
            ["git", "-C", str(paths.project_root()), *args],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def _package_version(*names: str) -> str:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "not installed"


def context_tags(cfg: Config, task: Task | None, stage: str) -> dict[str, str]:
    """The tags that place a run: its task (if it trains or serves one), stage, preset, the git
    commit and whether the work tree differed from it, package versions, host, DVC stage and
    experiment."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    tags = {
        **({TASK_TAG: str(task)} if task is not None else {}),
        "petvision.cli.stage": stage,
        "preset": cfg.preset,
        "git.commit": commit or "unknown",
        "git.dirty": "unknown" if status is None else str(bool(status)).lower(),
        "tensorflow.version": _package_version("tensorflow", "tensorflow-cpu", "tensorflow-macos"),
        "keras.version": _package_version("keras"),
        "host": socket.gethostname(),
    }
    if os.environ.get("DVC_STAGE"):
        tags["dvc.stage"] = os.environ["DVC_STAGE"]
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc.exp_name"] = os.environ["DVC_EXP_NAME"]
    if os.environ.get("DVC_EXP_BASELINE_REV"):
        tags["dvc.exp_baseline"] = os.environ["DVC_EXP_BASELINE_REV"]
    return tags


def _pip_requirements() -> list[str]:
    """What a served model needs, pinned to what trained it. Listing it ourselves spares MLflow
    inferring it, which imports the model in a subprocess (TensorFlow: tens of seconds)."""
    import keras

    backend = keras.backend.backend()
    packages = {
        "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-macos"),
        "jax": ("jax",),
        "torch": ("torch",),
    }.get(backend, ())
    reqs = [f"keras=={keras.__version__}", f"numpy=={np.__version__}"]
    for name in packages:
        try:
            reqs.append(f"{name}=={metadata.version(name)}")
            break
        except metadata.PackageNotFoundError:
            continue
    return reqs


# --------------------------------------------------------------------------- logged models and data


def log_keras_model(
    run_id: str,
    model: Any,
    example: np.ndarray,
    name: str,
    photos: dict[str, str] | None = None,
    extra_files: Sequence[Path] = (),
) -> str:
    """Log ``model`` in run ``run_id`` through MLflow's Keras flavor with an input example;
    return its URI (``models:/<id>``). ``photos`` (:func:`petvision.tracking.flavor.model_config`)
    makes its python_function flavor take encoded photos as well as arrays, and drops the
    signature (one signature cannot describe both); without it the model keeps a signature."""
    import keras
    from mlflow.models import Model, infer_signature

    example = np.asarray(example)
    output = np.asarray(keras.ops.convert_to_numpy(model.predict(example, verbose=0)))
    if output.dtype not in (np.float16, np.float32, np.float64):
        output = output.astype(np.float32)  # bfloat16 outputs (mixed precision) have no MLflow type
    info = Model.log(
        artifact_path=None,
        name=name,
        flavor=flavor.KerasPhotoFlavor,
        flavor_name="mlflow.keras",
        run_id=run_id,
        model=model,
        signature=infer_signature(example, output),
        input_example=example,
        pip_requirements=_pip_requirements(),
        **({"petvision": photos} if photos else {}),
        **({"petvision_files": [str(f) for f in extra_files]} if extra_files else {}),
    )
    return info.model_uri


def dataset_input(
    name: str, digest: str, source: str, context: str, shape_info: dict | None
) -> Any:
    """An MLflow dataset input: name, digest, source, role, and ``shape_info`` as its profile."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    class ProfiledDataset(MetaDataset):
        @property
        def profile(self) -> Any:
            return shape_info

        def to_dict(self) -> dict[str, str]:
            config = super().to_dict()
            if shape_info:
                config["profile"] = json.dumps(shape_info, default=str)
            return config

    with warnings.catch_warnings():  # "can be interpreted in multiple ways": it is a local path
        warnings.simplefilter("ignore")
        dataset_source = resolve_dataset_source(source)
    dataset = ProfiledDataset(dataset_source, name=name, digest=digest)
    return DatasetInput(
        dataset._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)]
    )
