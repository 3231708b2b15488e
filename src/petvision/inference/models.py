"""Trained models for inference: loaded from a .keras file or an MLflow URI, and their answers
on photos already resized like the training data (P(dog), trimaps at the photo's size, Grad-CAM)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from petvision.config import TaskConfig, TrackingConfig, architectures
from petvision.core.errors import DataError
from petvision.core.tasks import Task
from petvision.data import images

log = logging.getLogger("petvision.inference")

MLFLOW_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")
OUTPUT_LAYER = "dog_probability"


@dataclass
class LoadedModel:
    """A model ready for photos: the network (float32), where it came from, and how its training
    images were resized (size and interpolation)."""

    task: Task
    model: Any  # keras.Model
    source: str
    size: int
    interpolation: str
    # What it was trained on, its temperature and its unlike-the-training-data detector
    # (petvision.evaluation.trust); None for a model without a trust file.
    trust: Any = None

    @property
    def provenance(self) -> dict | None:
        """What the model was trained on (its trust file's), None when unknown."""
        return self.trust.provenance if self.trust is not None else None

    def prepare(self, photo: np.ndarray) -> np.ndarray:
        """The photo as the model's input: the preprocess stage's own resize."""
        return images.resize_image(photo, self.size, self.interpolation)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        from petvision.evaluation import batched

        # Few input shapes: on JAX each new one compiles the model again (a served photo at a time).
        return np.asarray(batched.predict(self.model, batch), dtype=np.float32)

    def answer(self, batch: np.ndarray) -> Answer:
        """The model's probabilities at its trust file's temperature, and each image's score
        of the unlike-the-training-data detector (None without a trust file or detector)."""
        if self.trust is None:
            return Answer(self(batch), None, None)
        from petvision.evaluation import calibration, features

        detector = self.trust.detector
        fwd = features.forward(self.model, batch, detector.layers if detector else [])
        t = float(self.trust.temperature)
        if fwd.binary:
            outputs = 1.0 / (1.0 + np.exp(-np.asarray(fwd.logits) / t))
        else:
            outputs = calibration.softmax(np.asarray(fwd.logits) / t)
        shaped = np.asarray(outputs, np.float32)
        if fwd.binary:
            shaped = shaped.reshape(len(batch), 1)
        if detector is None:
            return Answer(shaped, None, None)
        scores = detector.score(fwd.features)
        return Answer(shaped, scores, detector.flag(scores))


@dataclass(frozen=True)
class Answer:
    outputs: np.ndarray  # (N, 1) P(dog), or (N, s, s, C) per-pixel class probabilities
    ood_score: np.ndarray | None  # (N,) the detector's score; higher is more unlike
    unlike: np.ndarray | None  # (N,) bool: above the detector's threshold


# --------------------------------------------------------------------------- loading


def is_mlflow_uri(spec: str) -> bool:
    return spec.startswith(MLFLOW_SCHEMES)


def load_model(task: TaskConfig, spec: str, tracking: TrackingConfig) -> LoadedModel:
    """The model for ``task`` named by ``spec``: "" for the pipeline's own file under
    ``paths.models``, a ``.keras`` path, or an MLflow model URI (of the store ``tracking``
    names)."""
    from petvision.evaluation import trust
    from petvision.models import loading
    from petvision.tracking.flavor import EXTRA_FILES_DIR

    interpolation: str = task.data.interpolation
    if is_mlflow_uri(spec):
        model, trained_with, found = _load_from_mlflow(tracking, task.task, spec)
        interpolation = trained_with or interpolation
        source = spec
    else:
        path = Path(spec).expanduser() if spec else task.model_file
        model = loading.load_trained(path, task.stage)
        source = str(path)
    size = loading.input_size(model)
    _check_shape(model, task.task, source)
    if not is_mlflow_uri(spec):
        found = trust.find(Path(source))
    if found is None:
        log.warning(
            "%s: no trust file (%s): what it was trained on is unknown, its probabilities are "
            "not calibrated and photos unlike its training data are not flagged; retrain it",
            source,
            f"{EXTRA_FILES_DIR}/*{trust.SUFFIX} in the MLflow model"
            if is_mlflow_uri(spec)
            else trust.trust_file(Path(source)),
        )
    return LoadedModel(task.task, model, source, size, interpolation, found)


def _check_shape(model: Any, task: Task, source: str) -> None:
    out = tuple(model.outputs[0].shape[1:])
    if task == Task.classification and out != (1,):
        raise DataError(f"{source}: outputs {out}, not one P(dog): is it the segmentation model?")
    if task == Task.segmentation and len(out) != 3:
        raise DataError(
            f"{source}: outputs {out}, not a per-pixel class map: is it the classifier?"
        )


def _load_from_mlflow(
    tracking: TrackingConfig, task: Task, uri: str
) -> tuple[Any, str | None, Any]:
    """The Keras model behind an MLflow URI, the interpolation its run's data was resized with
    (the run's ``data.<task>.interpolation`` param), if the run says, and the trust file logged
    inside the model (None if there is none)."""
    import tempfile

    import mlflow
    import mlflow.keras

    from petvision.evaluation import trust
    from petvision.models import loading, xla
    from petvision.tracking import tracking_uri

    store = tracking_uri(tracking)
    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(store)
    try:
        try:
            # Downloaded once, for the network and the files beside it; both are read into
            # memory, so the copy goes when they are.
            with tempfile.TemporaryDirectory(prefix="petvision-model-") as tmp:
                local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
                with xla.loading():
                    model = mlflow.keras.load_model(str(local))
                found = trust.find(local)
        except DataError:
            raise
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(
                f"{uri}: cannot load it as a Keras model from the MLflow store {store} "
                f"({first[:300]})"
            ) from None
        interpolation = None
        try:
            run_id = mlflow.models.get_model_info(uri).run_id
            if run_id:
                params = mlflow.MlflowClient(store).get_run(run_id).data.params
                interpolation = params.get(f"data.{task}.interpolation")
        except Exception as exc:
            log.info("%s: no training run to read the interpolation from (%s)", uri, exc)
    finally:
        mlflow.set_tracking_uri(previous)  # type: ignore[arg-type]  # None: back to the default
    if interpolation is not None and interpolation not in images.INTERPOLATIONS:
        interpolation = None
    return loading.float32_copy(model), interpolation, found


# --------------------------------------------------------------------------- the models' answers


def answer_photos(model: LoadedModel, photos: Sequence[np.ndarray]) -> Answer:
    """:meth:`LoadedModel.answer` for photos of any size (resized as in training)."""
    batch = np.stack([model.prepare(p) for p in photos])
    return model.answer(batch)


def label_of(p_dog: float) -> tuple[str, float]:
    """The species and its probability: ``("dog", p)`` if P(dog) >= 0.5, else ``("cat", 1 - p)``."""
    return ("dog", float(p_dog)) if p_dog >= 0.5 else ("cat", float(1.0 - p_dog))


def probabilities_to_trimap(probabilities: np.ndarray, height: int, width: int) -> np.ndarray:
    """``(s, s, C)`` class probabilities -> ``(height, width)`` uint8 trimap (class index + 1),
    each class's probability map resized bilinearly before the argmax."""
    probabilities = np.asarray(probabilities, dtype=np.float32)
    if probabilities.shape[:2] == (height, width):
        up = probabilities
    else:
        up = np.stack(
            [
                np.asarray(
                    Image.fromarray(np.ascontiguousarray(probabilities[..., c]), mode="F").resize(
                        (width, height), Image.Resampling.BILINEAR
                    ),
                    dtype=np.float32,
                )
                for c in range(probabilities.shape[-1])
            ],
            axis=-1,
        )
    return (np.argmax(up, axis=-1) + 1).astype(np.uint8)


def trimaps(segmenter: LoadedModel, photos: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The predicted trimap (1 pet, 2 background, 3 border) of each photo, at the photo's size."""
    if not photos:
        return []
    probabilities = answer_photos(segmenter, photos).outputs
    return [
        probabilities_to_trimap(probs, *photo.shape[:2])
        for probs, photo in zip(probabilities, photos)
    ]


def mask_overlay(photo: np.ndarray, trimap: np.ndarray, alpha: float) -> np.ndarray:
    """The photo with the pet in orange and the border in yellow (the visualize stage's colours)."""
    from petvision.render.images import mask_overlay as overlay

    return overlay(photo, np.asarray(trimap) - 1, alpha)


def gradcam_layer(classifier: LoadedModel) -> str:
    """The classifier's last convolutional block, whichever of the project's architectures it is."""
    names = {layer.name for layer in classifier.model.layers}
    candidates = architectures.gradcam_layers()
    for layer in candidates:
        if layer in names:
            return layer
    raise DataError(
        f"{classifier.source}: none of the Grad-CAM layers {sorted(candidates)}; "
        "is it one of the project's classifiers?"
    )


def gradcam_overlays(
    classifier: LoadedModel, photos: Sequence[np.ndarray], alpha: float
) -> list[np.ndarray]:
    """The book's Grad-CAM picture for the predicted class of each photo, at the photo's size."""
    from petvision.interpret.methods import gradcam
    from petvision.render.images import jet_overlay

    cam = gradcam.split_model(classifier.model, gradcam_layer(classifier), OUTPUT_LAYER)
    batch = np.stack([classifier.prepare(p) for p in photos])
    result = gradcam.heatmaps(cam, batch)
    return [jet_overlay(photo, heat, alpha) for photo, heat in zip(photos, result.heatmaps)]
