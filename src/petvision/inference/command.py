"""``python -m petvision.predict``: every photo through both models, written as masks, overlays
and one table; an unreadable photo is named, skipped and counted."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from petvision.config import Config, task_config
from petvision.core.errors import ConfigError, DataError
from petvision.core.tasks import Task
from petvision.inference.models import (
    LoadedModel,
    answer_photos,
    gradcam_overlays,
    label_of,
    load_model,
    mask_overlay,
    probabilities_to_trimap,
)
from petvision.inference.photos import Inputs, collect_inputs, output_names, read_photo

log = logging.getLogger("petvision.inference")

# --------------------------------------------------------------------------- the predict command

TABLE_FIELDS = (
    "file",
    "status",
    "label",
    "probability",
    "p_cat",
    "p_dog",
    "pet_fraction",
    "unlike_training_data",  # either model's detector flags the photo (docs/trust.md)
    "ood_score",  # the classifier's detector score; above its threshold = unlike
    "seg_ood_score",  # the segmentation model's
    "trained_on",
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


class Models(NamedTuple):
    classifier: LoadedModel
    segmenter: LoadedModel


@dataclass(frozen=True)
class Pictures:
    """Where and how predict draws each photo: the output folder (its masks/, overlays/ and
    gradcam/), each photo's file name there, the overlays' opacity and Grad-CAM's (None: no
    Grad-CAM pictures)."""

    folder: Path
    names: dict[Path, str]
    alpha: float
    gradcam_alpha: float | None


def run_predict(cfg: Config) -> dict[str, Any]:
    """Predict every photo named by ``predict.input`` into ``predict.output``; return the table
    (also written there as predictions.json and predictions.csv)."""
    from petvision.core import atomic

    p = cfg.predict
    found = collect_inputs(p.input)
    out = Path(p.output).expanduser().absolute()
    _check_output(out, found)
    models = _load_models(cfg)
    with atomic.atomic_dir(out) as tmp:
        for folder in ["masks", "overlays", *(["gradcam"] if p.gradcam else [])]:
            (tmp / folder).mkdir()
        pictures = Pictures(
            tmp,
            dict(zip(found.files, output_names(found.files))),
            p.overlay_alpha,
            cfg.visualize.gradcam.alpha if p.gradcam else None,
        )
        rows, skipped = _predict_all(found.files, models, pictures, p.batch_size)
        ok = [r for r in rows if r["status"] == "ok"]
        if not ok:
            raise DataError(
                f"predict.input: none of the {len(found.files)} file(s) could be read as a photo: "
                + "; ".join(s["error"] for s in skipped[:5])
            )
        table = {
            "models": {m.task: _model_entry(m) for m in models},
            "counts": {
                "files": len(found.files),
                "predicted": len(ok),
                "skipped": len(skipped),
                "ignored_hidden": len(found.ignored),
            },
            "photos": rows,
        }
        _write_table(tmp, table)
    _say_what_happened(out, len(found.files), ok, skipped)
    return table


def _load_models(cfg: Config) -> Models:
    p = cfg.predict
    classifier = load_model(task_config(cfg, Task.classification), p.classifier, cfg.tracking)
    segmenter = load_model(task_config(cfg, Task.segmentation), p.segmenter, cfg.tracking)
    log.info(
        "classifier %s (%d px, %s), segmentation model %s (%d px, %s)",
        classifier.source,
        classifier.size,
        classifier.interpolation,
        segmenter.source,
        segmenter.size,
        segmenter.interpolation,
    )
    _say_what_they_were_trained_on(classifier, segmenter)
    return Models(classifier, segmenter)


def _predict_all(
    files: list[Path], models: Models, pictures: Pictures, batch_size: int
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Every file, a batch at a time: the table's rows in the files' order, and the files
    skipped as unreadable."""
    import sys

    from tqdm import tqdm

    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    with tqdm(
        total=len(files),
        desc="predict",
        unit="photo",
        file=sys.stderr,
        mininterval=0.5,
        disable=len(files) < 2,
    ) as bar:
        for start in range(0, len(files), batch_size):
            batch: list[tuple[Path, np.ndarray, str]] = []
            for path in files[start : start + batch_size]:
                try:
                    photo, kind = read_photo(path)
                except DataError as exc:
                    log.warning("skipped: %s", exc)
                    skipped.append({"file": str(path), "error": str(exc)})
                    rows.append({"file": str(path), "status": "skipped", "error": str(exc)})
                    bar.update(1)
                    continue
                batch.append((path, photo, kind))
            rows += _predict_batch(batch, models, pictures)
            bar.update(len(batch))
    return rows, skipped


def _write_table(folder: Path, table: dict[str, Any]) -> None:
    import csv

    from petvision.core import atomic

    atomic.write_json(folder / TABLE_JSON, table)
    with open(folder / TABLE_CSV, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=TABLE_FIELDS, lineterminator="\n")
        writer.writeheader()
        for row in table["photos"]:
            writer.writerow({k: row.get(k, "") for k in TABLE_FIELDS})


def _say_what_happened(
    out: Path, files: int, ok: list[dict[str, Any]], skipped: list[dict[str, str]]
) -> None:
    """The skipped files and the photos unlike the training data in the log; the counts on
    stdout."""
    if skipped:
        log.warning(
            "predict: %d of %d file(s) skipped (unreadable), listed in %s: %s",
            len(skipped),
            files,
            out / TABLE_CSV,
            "; ".join(Path(s["file"]).name for s in skipped[:10]),
        )
    unlike = [r for r in ok if r.get("unlike_training_data") is True]
    if unlike:
        log.warning(
            "predict: %d of %d photo(s) are unlike the models' training data; their answers "
            "mean little: %s",
            len(unlike),
            len(ok),
            "; ".join(Path(r["file"]).name for r in unlike[:10]),
        )
    log.info("predict: %d photo(s) -> %s", len(ok), out)
    print(
        f"predicted {len(ok)} photo(s), skipped {len(skipped)} unreadable file(s): "
        f"{out / TABLE_CSV}"
    )


def _say_what_they_were_trained_on(*models: LoadedModel) -> None:
    """Each model's provenance in the log, and one plain warning when any was trained on the
    generated stand-in."""
    from petvision.evaluation import trust

    for m in models:
        log.info("%s model trained on: %s", m.task, trust.describe(m.provenance))
    if any(trust.is_generated(m.provenance) for m in models):
        log.warning("%s", trust.GENERATED_WARNING)


def _model_entry(m: LoadedModel) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "source": m.source,
        "input_size": m.size,
        "interpolation": m.interpolation,
        "trained_on": m.provenance,
    }
    if m.trust is not None:
        entry["temperature"] = m.trust.temperature
        d = m.trust.detector
        if d is not None:
            entry["detector"] = {"threshold": d.threshold, "quantile": d.quantile, "k": d.k}
    return entry


def _mark_unlike(picture: np.ndarray) -> np.ndarray:
    """A red frame and a banner on a photo's overlay: unlike the training data."""
    from PIL import ImageDraw

    image = Image.fromarray(picture)
    draw = ImageDraw.Draw(image)
    w, h = image.size
    width = max(2, min(w, h) // 40)
    draw.rectangle([0, 0, w - 1, h - 1], outline=(220, 0, 0), width=width)
    banner = max(12, h // 12)
    draw.rectangle([0, 0, w - 1, banner], fill=(220, 0, 0))
    draw.text(
        (width + 2, max(1, banner // 2 - 5)), "UNLIKE THE TRAINING DATA", fill=(255, 255, 255)
    )
    return np.asarray(image)


def _predict_batch(
    batch: list[tuple[Path, np.ndarray, str]], models: Models, pictures: Pictures
) -> list[dict]:
    from petvision.evaluation import trust

    if not batch:
        return []
    classifier, segmenter = models
    photos = [photo for _, photo, _ in batch]
    c_answer, s_answer = answer_photos(classifier, photos), answer_photos(segmenter, photos)
    p_dog = c_answer.outputs.reshape(len(photos))
    masks = [
        probabilities_to_trimap(probs, *photo.shape[:2])
        for probs, photo in zip(s_answer.outputs, photos)
    ]
    trained_on = trust.trained_on(
        {"classifier": classifier.provenance, "segmentation": segmenter.provenance}
    )
    cams = (
        gradcam_overlays(classifier, photos, pictures.gradcam_alpha)
        if pictures.gradcam_alpha is not None
        else None
    )
    rows = []
    for i, (path, photo, kind) in enumerate(batch):
        name, out = pictures.names[path], pictures.folder
        label, probability = label_of(float(p_dog[i]))
        flags = [a.unlike[i] for a in (c_answer, s_answer) if a.unlike is not None]
        unlike = bool(any(flags)) if flags else ""
        overlay = mask_overlay(photo, masks[i], pictures.alpha)
        if unlike is True:
            overlay = _mark_unlike(overlay)
        row = {
            "file": str(path),
            "status": "ok",
            "label": label,
            "probability": round(probability, 6),
            "p_cat": round(1.0 - float(p_dog[i]), 6),
            "p_dog": round(float(p_dog[i]), 6),
            "pet_fraction": round(float(np.mean(masks[i] != 2)), 6),
            "unlike_training_data": unlike,
            "ood_score": _score(c_answer.ood_score, i),
            "seg_ood_score": _score(s_answer.ood_score, i),
            "trained_on": trained_on,
            "width": photo.shape[1],
            "height": photo.shape[0],
            "decoded_as": kind,
            "mask": "masks/" + _save_png(masks[i], out / "masks" / f"{name}.png"),
            "overlay": "overlays/" + _save_jpeg(overlay, out / "overlays" / f"{name}.jpg"),
        }
        if cams is not None:
            row["gradcam"] = "gradcam/" + _save_jpeg(cams[i], out / "gradcam" / f"{name}.jpg")
        rows.append(row)
    return rows


def _score(scores: np.ndarray | None, i: int) -> float | str:
    return "" if scores is None else round(float(scores[i]), 6)
