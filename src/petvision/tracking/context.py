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
from importlib import metadata
from typing import Any

import numpy as np

from petvision import paths
from petvision.config import Config

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- params and tags


def _param_key(key: str) -> str:
    """MLflow keys allow letters, digits, ``_-. /:``; the config's ``archives[0].name`` becomes
    ``archives.0.name``."""
    key = re.sub(r"\[(\d+)\]", r".\1", key)
    return re.sub(r"[^\w.\- /:]", "_", key)


def _param_value(value: Any, limit: int) -> str:
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


def _context_tags(cfg: Config, task: str, stage: str) -> dict[str, str]:
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    tags = {
        "petvision.task": task,
        "petvision.stage": stage,
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


class _KerasFlavorMakingDir:
    """``mlflow.keras`` with one fix, for :meth:`mlflow.models.Model.log`.

    MLflow 3.17.2's ``mlflow.keras.save_model`` writes the input example into the model folder
    before it creates the folder, so ``mlflow.keras.log_model(..., input_example=x)`` fails with
    ``FileNotFoundError: .../model/input_example.json``. ``Model.log`` (what
    ``mlflow.keras.log_model`` calls) accepts any object with a ``save_model``; this one creates
    the folder and hands over to the real Keras flavor, so the logged model is an ordinary Keras
    flavor model (loader ``mlflow.keras``) with its signature and input example.
    """

    __name__ = "mlflow.keras"

    @staticmethod
    def save_model(path: str, **kwargs: Any) -> None:
        import mlflow.keras

        os.makedirs(path, exist_ok=True)
        mlflow.keras.save_model(path=path, **kwargs)


# --------------------------------------------------------------------------- logged models and data


def log_keras_model(run_id: str, model: Any, example: np.ndarray, name: str) -> str:
    """Log ``model`` in run ``run_id`` through MLflow's Keras flavor, with a signature and an
    input example; return its URI (``models:/<id>``)."""
    import keras
    from mlflow.models import Model, infer_signature

    example = np.asarray(example)
    output = np.asarray(keras.ops.convert_to_numpy(model.predict(example, verbose=0)))
    if output.dtype not in (np.float16, np.float32, np.float64):
        output = output.astype(np.float32)  # bfloat16 outputs (mixed precision) have no MLflow type
    info = Model.log(
        artifact_path=None,
        name=name,
        flavor=_KerasFlavorMakingDir,
        flavor_name="mlflow.keras",
        run_id=run_id,
        model=model,
        signature=infer_signature(example, output),
        input_example=example,
        pip_requirements=_pip_requirements(),
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
