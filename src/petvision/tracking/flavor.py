"""How a trained model is logged: MLflow's Keras flavor, its python_function flavor pointed at
:mod:`petvision.inference.serving` so that the served model also takes encoded photos.

Only the module's name is written into the model (``loader_module``): the training stages do not
import the serving code, and a change to it does not make them rerun.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

LOADER_MODULE = "petvision.inference.serving"
FLAVOR_CONFIG_KEY = "petvision"
# Files that travel inside the logged model, beside the network (the model's trust file:
# petvision.evaluation.trust), in this folder of the model's directory.
EXTRA_FILES_DIR = "petvision"


def model_config(task: str, interpolation: str) -> dict[str, str]:
    """What the served model needs besides the network: its task and the training resize."""
    return {"task": str(task), "interpolation": str(interpolation)}  # plain str: MLmodel is YAML


class KerasPhotoFlavor:
    """``mlflow.keras`` for :meth:`mlflow.models.Model.log`, with the python_function flavor
    pointed at :mod:`petvision.inference.serving` (see its docstring). ``petvision`` is :func:`model_config`'s
    dict; without it the model is saved as plain ``mlflow.keras`` would.

    It also creates the model folder first: MLflow 3.17's ``mlflow.keras.save_model`` writes the
    input example before it creates the folder (``FileNotFoundError: .../input_example.json``).
    """

    __name__ = "mlflow.keras"

    @staticmethod
    def save_model(
        path: str,
        mlflow_model: Any = None,
        petvision: dict[str, str] | None = None,
        petvision_files: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        import mlflow.keras
        from mlflow.models import Model
        from mlflow.models.model import MLMODEL_FILE_NAME

        os.makedirs(path, exist_ok=True)
        mlflow_model = mlflow_model if mlflow_model is not None else Model()
        mlflow.keras.save_model(path=path, mlflow_model=mlflow_model, **kwargs)
        if petvision_files:
            os.makedirs(os.path.join(path, EXTRA_FILES_DIR), exist_ok=True)
            for file in petvision_files:
                shutil.copyfile(file, os.path.join(path, EXTRA_FILES_DIR, os.path.basename(file)))
        if petvision is None:
            return
        conf = mlflow_model.flavors["python_function"]
        conf["loader_module"] = LOADER_MODULE
        conf["config"] = {FLAVOR_CONFIG_KEY: dict(petvision)}
        mlflow_model.signature = None
        mlflow_model.save(os.path.join(path, MLMODEL_FILE_NAME))
