"""The logged models take the photo itself: MLflow's python_function flavor of petvision models.

The training stages log their model through MLflow's Keras flavor with one change
(:class:`petvision.tracking.flavor.KerasPhotoFlavor`): the ``python_function`` flavor loads
through :func:`_load_pyfunc` below instead of ``mlflow.keras``, so that ``mlflow models serve``
and ``mlflow.pyfunc.load_model`` accept two kinds of input:

* **encoded photos**: a column ``image`` of base64 strings (or raw bytes) of JPEG, PNG, GIF...
  files, any size and mode. Each is decoded and resized exactly as :mod:`petvision.predict`
  does (the training preprocessing), and the answer is one row per photo: ``label``,
  ``probability``, ``p_cat``, ``p_dog`` from the classifier; ``mask_png`` (base64 PNG of the
  trimap at the photo's size: 1 pet, 2 background, 3 border), ``width``, ``height`` and
  ``pet_fraction`` from the segmentation model;
* **arrays** already resized to the training size (what clients sent before): the model's raw
  output, as the Keras flavor returns it.

Bad input is refused whole, with HTTP 400: a request in which any photo cannot be read is
answered with no prediction at all and a message naming each bad row and why (``row 1: 'image'
is not base64 ...``), so that a client never takes a partial answer for a whole one and resends
the good rows. The error is an ``MlflowException``, whose message the server answers with
as it is (after its own ``Failed to predict data '<the request's table>'``); any other exception
would come back with the server's stack trace and source paths. In process
(``mlflow.pyfunc.load_model(...).predict``) the same error is a :class:`~petvision.core.errors.DataError`.

A model accepting both forms cannot have one MLflow signature (a column of strings or one
tensor), so the logged model has none; it keeps its input example. The Keras flavor is left as
it was: ``mlflow.keras.load_model`` gives the Keras model. Serving needs this package importable
(the project's environment: ``mlflow models serve --env-manager local``).

    printf '{"dataframe_split": {"columns": ["image"], "data": [["%s"]]}}' "$(base64 -w0 cat.jpg)" \\
      | curl -s http://127.0.0.1:5001/invocations -H 'Content-Type: application/json' -d @-
"""

from __future__ import annotations

import base64
import binascii
import io
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from petvision.core.errors import DataError
from petvision.core.tasks import Task
from petvision.inference import models as inference
from petvision.inference.photos import read_photo
from petvision.tracking.flavor import FLAVOR_CONFIG_KEY

IMAGE_COLUMN = "image"


class BadRequest(DataError, MlflowException):
    """Input the client must fix: HTTP 400 with this message and no stack trace from ``mlflow
    models serve`` (an ``MlflowException`` of INVALID_PARAMETER_VALUE), a ``DataError`` in process."""

    def __init__(self, message: str):
        MlflowException.__init__(self, message, error_code=INVALID_PARAMETER_VALUE)


def _load_pyfunc(path: str, model_config: dict[str, Any] | None = None) -> PhotoModel:
    """MLflow's entry point (``loader_module``): the model folder -> :class:`PhotoModel`."""
    import mlflow.keras

    from petvision.evaluation import trust
    from petvision.models import loading, xla

    settings = (model_config or {}).get(FLAVOR_CONFIG_KEY) or {}
    if settings.get("task") not in tuple(Task):
        raise DataError(
            f"{path}: no petvision task in the model's python_function config: {model_config}"
        )
    with xla.loading():
        model = loading.float32_copy(mlflow.keras.load_model(path))
    loaded = inference.LoadedModel(
        Task(settings["task"]),
        model,
        path,
        loading.input_size(model),
        settings.get("interpolation", "bilinear"),
        trust.find(Path(path)),
    )
    return PhotoModel(loaded)


# Each answer row also says whether the photo is unlike the model's training data (the model's
# detector; empty without a trust file) and what the model was trained on.
TRUST_COLUMNS = ["ood_score", "unlike_training_data", "trained_on"]


def _trust_fields(loaded: inference.LoadedModel, answer: inference.Answer, i: int) -> dict:
    from petvision.evaluation import trust

    return {
        "ood_score": None if answer.ood_score is None else float(answer.ood_score[i]),
        "unlike_training_data": None if answer.unlike is None else bool(answer.unlike[i]),
        "trained_on": trust.trained_on({str(loaded.task): loaded.provenance}),
    }


class PhotoModel:
    """The served model: encoded photos or resized arrays in (module docstring)."""

    def __init__(self, loaded: inference.LoadedModel):
        self.loaded = loaded

    def get_raw_model(self) -> Any:
        return self.loaded.model

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        encoded = _encoded_photos(data)
        if encoded is None:
            return self._predict_arrays(data)
        photos, problems = [], []
        for i, item in enumerate(encoded):
            try:
                photos.append(_decode(item, i))
            except DataError as exc:
                problems.append(str(exc))
        if problems:
            raise BadRequest(
                f"{len(problems)} of {len(encoded)} photo(s) cannot be read, so none was "
                f"predicted; send the others again without them: {'; '.join(problems)}"
            )
        return self.answer(photos)

    def answer(self, photos: list[np.ndarray]) -> Any:
        import pandas as pd

        answer = inference.answer_photos(self.loaded, photos)
        if self.loaded.task == Task.classification:
            p_dog = answer.outputs.reshape(len(photos))
            rows = []
            for i, p in enumerate(p_dog):
                label, probability = inference.label_of(float(p))
                rows.append(
                    {
                        "label": label,
                        "probability": probability,
                        "p_cat": 1.0 - float(p),
                        "p_dog": float(p),
                        **_trust_fields(self.loaded, answer, i),
                    }
                )
            return pd.DataFrame(
                rows, columns=["label", "probability", "p_cat", "p_dog", *TRUST_COLUMNS]
            )
        masks = [
            inference.probabilities_to_trimap(probs, *photo.shape[:2])
            for probs, photo in zip(answer.outputs, photos)
        ]
        return pd.DataFrame(
            [
                {
                    "mask_png": _png_base64(m),
                    "width": m.shape[1],
                    "height": m.shape[0],
                    "pet_fraction": float(np.mean(m != 2)),
                    **_trust_fields(self.loaded, answer, i),
                }
                for i, m in enumerate(masks)
            ],
            columns=["mask_png", "width", "height", "pet_fraction", *TRUST_COLUMNS],
        )

    def _predict_arrays(self, data: Any) -> np.ndarray:
        import pandas as pd

        if isinstance(data, dict) and len(data) == 1:
            data = next(iter(data.values()))
        if isinstance(data, pd.DataFrame):
            data = data.to_numpy()
        size = self.loaded.size
        expected = (
            f"expected images {size}x{size}x3 (resized as in training) or a column "
            f"'{IMAGE_COLUMN}' of base64-encoded photo files"
        )
        try:
            x = np.asarray(data, dtype=np.float32)
        except (ValueError, TypeError):
            raise BadRequest(
                f"{expected}; got {type(data).__name__} that is not an array of numbers"
            ) from None
        if x.ndim != 4 or x.shape[1:] != (size, size, 3):
            raise BadRequest(f"{expected}; got an array of shape {x.shape}")
        return self.loaded(x)


def _encoded_photos(data: Any) -> list[Any] | None:
    """The encoded photos in ``data``, or None when it is an array of pixels."""
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        if IMAGE_COLUMN in data.columns:
            return list(data[IMAGE_COLUMN])
        if len(data.columns) == 1 and data.dtypes.iloc[0].kind == "O":
            return list(data.iloc[:, 0])
        return None
    if isinstance(data, dict) and IMAGE_COLUMN in data:
        values = data[IMAGE_COLUMN]
        return list(np.atleast_1d(np.asarray(values, dtype=object)))
    if isinstance(data, (str, bytes)):
        return [data]
    if isinstance(data, list) and data and all(isinstance(v, (str, bytes)) for v in data):
        return list(data)
    if isinstance(data, np.ndarray) and data.dtype.kind in "USO" and data.ndim == 1:
        return list(data)
    return None


def _decode(item: Any, row: int) -> np.ndarray:
    """One encoded photo to uint8 RGB through the project's image loader (which reads files)."""
    if isinstance(item, str):
        try:
            item = base64.b64decode(item, validate=True)
        except (binascii.Error, ValueError):
            raise DataError(
                f"row {row}: '{IMAGE_COLUMN}' is not base64 (send the file's bytes, base64-encoded)"
            ) from None
    if not isinstance(item, (bytes, bytearray)) or not item:
        raise DataError(
            f"row {row}: '{IMAGE_COLUMN}' holds {type(item).__name__}, not an encoded photo"
        )
    with tempfile.TemporaryDirectory(prefix="petvision-serve-") as folder:
        path = Path(folder) / "photo"
        path.write_bytes(bytes(item))
        try:
            photo, _ = read_photo(path)
        except DataError as exc:
            raise DataError(
                f"row {row}: '{IMAGE_COLUMN}': {str(exc).removeprefix(f'{path}: ')}"
            ) from None
    return photo


def _png_base64(mask: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(mask).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_mask(mask_png: str) -> np.ndarray:
    """A served ``mask_png`` back to the trimap array (for clients and tests)."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(mask_png))))
