"""The trained models on photos: what ``python -m petvision.predict`` and the served models do.

A photo goes through exactly what a training image went through in the preprocess stage: decoded
by :func:`petvision.data.images.load_rgb` (any format and mode it accepts) and resized by
:func:`petvision.data.images.resize_image` to the model's input size with the interpolation its
training data was resized with. Then:

* the classifier gives P(dog) (its sigmoid output; P(cat) = 1 - P(dog));
* the segmentation model gives per-pixel class probabilities at its input size; they are
  resized bilinearly to the photo's own size before the argmax (a nearest-neighbour enlargement
  of a 64x64 label map would draw blocky outlines), and the labels written with the Oxford
  trimap values: 1 pet, 2 background, 3 border;
* on request, a Grad-CAM heatmap of the classifier's last convolutional block
  (:mod:`petvision.interpret.gradcam`), overlaid on the photo at its own size.

Models are ``.keras`` files (the pipeline's ``models/`` by default) or MLflow model URIs
(``models:/petvision-classifier@champion``, ``runs:/<id>/model``, ``models:/<model id>``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from petvision.config import Config
from petvision.data import images
from petvision.errors import ConfigError, DataError

log = logging.getLogger(__name__)

TASKS = ("classification", "segmentation")
TRAINING_STAGES = {"classification": "train_xception", "segmentation": "train_segmentation"}
SPECIES = ("cat", "dog")
MLFLOW_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")
OUTPUT_LAYER = "dog_probability"


@dataclass
class LoadedModel:
    """A model ready for photos: the network (float32), where it came from, and how its training
    images were resized (size and interpolation)."""

    task: str
    model: Any  # keras.Model
    source: str
    size: int
    interpolation: str

    def prepare(self, photo: np.ndarray) -> np.ndarray:
        """The photo as the model's input: the preprocess stage's own resize."""
        return images.resize_image(photo, self.size, self.interpolation)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import keras

        x = np.asarray(batch, dtype=np.float32)
        return np.asarray(
            keras.ops.convert_to_numpy(self.model(x, training=False)), dtype=np.float32
        )


# --------------------------------------------------------------------------- loading


def is_mlflow_uri(spec: str) -> bool:
    return spec.startswith(MLFLOW_SCHEMES)


def load_model(cfg: Config, task: str, spec: str = "") -> LoadedModel:
    """The model for ``task`` named by ``spec``: "" for the pipeline's own file under
    ``paths.models``, a ``.keras`` path, or an MLflow model URI."""
    from petvision.interpret import loading

    interpolation = getattr(cfg.data, task).interpolation
    if is_mlflow_uri(spec):
        model, trained_with = _load_from_mlflow(cfg, task, spec)
        interpolation = trained_with or interpolation
        source = spec
    else:
        path = Path(spec).expanduser() if spec else cfg.paths.model_file(task)
        model = loading.load_trained(path, TRAINING_STAGES[task])
        source = str(path)
    size = loading.input_size(model)
    _check_shape(model, task, source)
    return LoadedModel(task, model, source, size, interpolation)


def _check_shape(model: Any, task: str, source: str) -> None:
    out = tuple(model.outputs[0].shape[1:])
    if task == "classification" and out != (1,):
        raise DataError(f"{source}: outputs {out}, not one P(dog): is it the segmentation model?")
    if task == "segmentation" and len(out) != 3:
        raise DataError(
            f"{source}: outputs {out}, not a per-pixel class map: is it the classifier?"
        )


def _load_from_mlflow(cfg: Config, task: str, uri: str) -> tuple[Any, str | None]:
    """The Keras model behind an MLflow URI, and the interpolation its run's data was resized with
    (the run's ``data.<task>.interpolation`` param), if the run says."""
    import mlflow
    import mlflow.keras

    from petvision import tracking
    from petvision.interpret import loading

    store = tracking.tracking_uri(cfg.tracking)
    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(store)
    try:
        try:
            model = mlflow.keras.load_model(uri)
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
    return loading.float32_copy(model), interpolation


# --------------------------------------------------------------------------- the models' answers


def dog_probabilities(classifier: LoadedModel, photos: Sequence[np.ndarray]) -> np.ndarray:
    """P(dog) for each photo (any size, uint8 RGB)."""
    if not photos:
        return np.zeros((0,), np.float32)
    batch = np.stack([classifier.prepare(p) for p in photos])
    return classifier(batch).reshape(len(photos))


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
    batch = np.stack([segmenter.prepare(p) for p in photos])
    probabilities = segmenter(batch)
    return [
        probabilities_to_trimap(probs, *photo.shape[:2])
        for probs, photo in zip(probabilities, photos)
    ]


def mask_overlay(photo: np.ndarray, trimap: np.ndarray, alpha: float) -> np.ndarray:
    """The photo with the pet in orange and the border in yellow (the visualize stage's colours)."""
    from petvision.interpret.segmentation_views import mask_overlay as overlay

    return overlay(photo, np.asarray(trimap) - 1, alpha)


def gradcam_layer(classifier: LoadedModel) -> str:
    """The classifier's last convolutional block, whichever of the project's architectures it is."""
    from petvision.models import registry

    names = {layer.name for layer in classifier.model.layers}
    candidates = [a.last_conv_layer for a in registry.ARCHITECTURES["classification"].values()]
    for layer in candidates:
        if layer is not None and layer in names:
            return layer
    raise DataError(
        f"{classifier.source}: none of the Grad-CAM layers {sorted(filter(None, candidates))}; "
        "is it one of the project's classifiers?"
    )


def gradcam_overlays(
    classifier: LoadedModel, photos: Sequence[np.ndarray], alpha: float
) -> list[np.ndarray]:
    """The book's Grad-CAM picture for the predicted class of each photo, at the photo's size."""
    from petvision.interpret import gradcam

    cam = gradcam.split_model(classifier.model, gradcam_layer(classifier), OUTPUT_LAYER)
    batch = np.stack([classifier.prepare(p) for p in photos])
    result = gradcam.heatmaps(cam, batch)
    return [gradcam.jet_overlay(photo, heat, alpha) for photo, heat in zip(photos, result.heatmaps)]


# --------------------------------------------------------------------------- inputs


@dataclass
class Inputs:
    files: list[Path] = field(default_factory=list)  # in the order given; folders expanded, sorted
    ignored: list[Path] = field(
        default_factory=list
    )  # hidden files (.*, ._* AppleDouble) in folders


def collect_inputs(spec: str | float | Sequence[str], cwd: Path | None = None) -> Inputs:
    """The files named by ``predict.input``: photos as given, folders' files (not subfolders),
    sorted. A path that does not exist is a ConfigError naming it."""
    given = [str(g) for g in ([spec] if isinstance(spec, (str, int, float)) else spec)]
    given = [g for g in given if g.strip()]
    if not given:
        raise ConfigError(
            "predict.input='': name a photo, a folder of photos, or a list of them "
            "(predict.input=photos/ or predict.input=[a.jpg,b.png])"
        )
    found = Inputs()
    seen: set[Path] = set()
    for item in given:
        path = Path(item).expanduser()
        path = path if path.is_absolute() else (cwd or Path.cwd()) / path
        if path.is_dir():
            for entry in sorted(path.iterdir()):
                if not entry.is_file():
                    continue
                if entry.name.startswith("."):
                    found.ignored.append(entry)
                elif entry.resolve() not in seen:
                    seen.add(entry.resolve())
                    found.files.append(entry)
        elif path.is_file():
            if path.resolve() not in seen:
                seen.add(path.resolve())
                found.files.append(path)
        else:
            raise ConfigError(f"predict.input: {item} does not exist")
    return found


def output_names(files: Sequence[Path]) -> list[str]:
    """A distinct, file-system-safe base name per input: its stem, with its suffix added when two
    inputs share a stem (a.jpg and a.png), and a number when they still collide (two folders)."""
    stems = [f.stem or f.name for f in files]
    counts: dict[str, int] = {}
    for s in stems:
        counts[s] = counts.get(s, 0) + 1
    names, used = [], set()
    for f, s in zip(files, stems):
        name = s if counts[s] == 1 else f"{s}_{f.suffix.lstrip('.').lower() or 'file'}"
        base, n = name, 2
        while name in used:
            name, n = f"{base}_{n}", n + 1
        used.add(name)
        names.append(name)
    return names


def read_photo(path: Path) -> tuple[np.ndarray, str]:
    """The photo as uint8 RGB and how it was decoded (``jpeg``, ``png+rgba``...): the training
    data's loader. DataError names the file if it cannot be decoded."""
    return images.load_rgb(path)


# --------------------------------------------------------------------------- the predict command

TABLE_FIELDS = (
    "file",
    "status",
    "label",
    "probability",
    "p_cat",
    "p_dog",
    "pet_fraction",
    "width",
    "height",
    "decoded_as",
    "mask",
    "overlay",
    "gradcam",
    "error",
)
TABLE_JSON = "predictions.json"
TABLE_CSV = "predictions.csv"


def _check_output(out: Path, inputs: Inputs) -> None:
    """Refuse to replace a folder predict did not write, or one that holds an input."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"predict.output={out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / TABLE_JSON).is_file():
        raise ConfigError(
            f"predict.output={out}: the folder holds files predict did not write; it would "
            "be replaced whole: choose another folder or empty it"
        )
    resolved = out.resolve()
    for f in inputs.files:
        if resolved in f.resolve().parents:
            raise ConfigError(
                f"predict.output={out}: holds the input {f}, and the output folder is "
                "replaced whole: choose an output folder outside the inputs"
            )


def _save_png(array: np.ndarray, path: Path) -> str:
    Image.fromarray(array).save(path, format="PNG")
    return path.name


def _save_jpeg(array: np.ndarray, path: Path) -> str:
    Image.fromarray(array).save(path, format="JPEG", quality=92)
    return path.name


def run_predict(cfg: Config) -> dict[str, Any]:
    """Predict every photo named by ``predict.input`` into ``predict.output``; return the table
    (also written there as predictions.json and predictions.csv)."""
    import csv
    import sys

    from tqdm import tqdm

    from petvision import atomic

    p = cfg.predict
    found = collect_inputs(p.input)
    out = Path(p.output).expanduser().absolute()
    _check_output(out, found)
    classifier = load_model(cfg, "classification", p.classifier)
    segmenter = load_model(cfg, "segmentation", p.segmenter)
    log.info(
        "classifier %s (%d px, %s), segmentation model %s (%d px, %s)",
        classifier.source,
        classifier.size,
        classifier.interpolation,
        segmenter.source,
        segmenter.size,
        segmenter.interpolation,
    )

    names = dict(zip(found.files, output_names(found.files)))
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    with atomic.atomic_dir(out) as tmp:
        folders = ["masks", "overlays", *(["gradcam"] if p.gradcam else [])]
        for folder in folders:
            (tmp / folder).mkdir()
        with tqdm(
            total=len(found.files),
            desc="predict",
            unit="photo",
            file=sys.stderr,
            mininterval=0.5,
            disable=len(found.files) < 2,
        ) as bar:
            for start in range(0, len(found.files), p.batch_size):
                batch: list[tuple[Path, np.ndarray, str]] = []
                for path in found.files[start : start + p.batch_size]:
                    try:
                        photo, kind = read_photo(path)
                    except DataError as exc:
                        log.warning("skipped: %s", exc)
                        skipped.append({"file": str(path), "error": str(exc)})
                        rows.append({"file": str(path), "status": "skipped", "error": str(exc)})
                        bar.update(1)
                        continue
                    batch.append((path, photo, kind))
                rows += _predict_batch(
                    batch,
                    classifier,
                    segmenter,
                    names,
                    tmp,
                    p.overlay_alpha,
                    cfg.visualize.gradcam.alpha if p.gradcam else None,
                )
                bar.update(len(batch))
        ok = [r for r in rows if r["status"] == "ok"]
        if not ok:
            raise DataError(
                f"predict.input: none of the {len(found.files)} file(s) could be read as a photo: "
                + "; ".join(s["error"] for s in skipped[:5])
            )
        table = {
            "models": {
                task: {"source": m.source, "input_size": m.size, "interpolation": m.interpolation}
                for task, m in (("classification", classifier), ("segmentation", segmenter))
            },
            "counts": {
                "files": len(found.files),
                "predicted": len(ok),
                "skipped": len(skipped),
                "ignored_hidden": len(found.ignored),
            },
            "photos": rows,
        }
        atomic.write_json(tmp / TABLE_JSON, table)
        with open(tmp / TABLE_CSV, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=TABLE_FIELDS, lineterminator="\n")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: row.get(k, "") for k in TABLE_FIELDS})
    if skipped:
        log.warning(
            "predict: %d of %d file(s) skipped (unreadable), listed in %s: %s",
            len(skipped),
            len(found.files),
            out / TABLE_CSV,
            "; ".join(Path(s["file"]).name for s in skipped[:10]),
        )
    log.info("predict: %d photo(s) -> %s", len(ok), out)
    print(
        f"predicted {len(ok)} photo(s), skipped {len(skipped)} unreadable file(s): "
        f"{out / TABLE_CSV}"
    )
    return table


def _predict_batch(
    batch: list[tuple[Path, np.ndarray, str]],
    classifier: LoadedModel,
    segmenter: LoadedModel,
    names: dict[Path, str],
    out: Path,
    alpha: float,
    gradcam_alpha: float | None,
) -> list[dict]:
    if not batch:
        return []
    photos = [photo for _, photo, _ in batch]
    p_dog = dog_probabilities(classifier, photos)
    masks = trimaps(segmenter, photos)
    cams = (
        gradcam_overlays(classifier, photos, gradcam_alpha) if gradcam_alpha is not None else None
    )
    rows = []
    for i, (path, photo, kind) in enumerate(batch):
        name = names[path]
        label, probability = label_of(float(p_dog[i]))
        row = {
            "file": str(path),
            "status": "ok",
            "label": label,
            "probability": round(probability, 6),
            "p_cat": round(1.0 - float(p_dog[i]), 6),
            "p_dog": round(float(p_dog[i]), 6),
            "pet_fraction": round(float(np.mean(masks[i] != 2)), 6),
            "width": photo.shape[1],
            "height": photo.shape[0],
            "decoded_as": kind,
            "mask": "masks/" + _save_png(masks[i], out / "masks" / f"{name}.png"),
            "overlay": "overlays/"
            + _save_jpeg(mask_overlay(photo, masks[i], alpha), out / "overlays" / f"{name}.jpg"),
        }
        if cams is not None:
            row["gradcam"] = "gradcam/" + _save_jpeg(cams[i], out / "gradcam" / f"{name}.jpg")
        rows.append(row)
    return rows
