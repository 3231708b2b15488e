"""What a run records besides metrics: MLflow-safe params, the tags that place a run (git commit,
package versions, the DVC stage and experiment), and what a logged model needs to be served."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
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


def _model_name(cfg: Config, task: str) -> str:
    return {
        "segmentation": cfg.segmentation.model.name,
        "classification": cfg.classification.model.name,
        "interpretation": cfg.visualize.model,
    }[task]


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
