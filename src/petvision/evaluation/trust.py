"""What travels with a trained model so that its answers can be judged: what it was trained on
(provenance), its temperature (:mod:`.calibration`) and its unlike-the-training-data detector
(:mod:`.ood`), in one file beside the model, ``models/<model>.trust.npz``, and inside its
logged MLflow model (``petvision/<model>.trust.npz``).

The training stages fit both on the training and validation splits and measure them on images
that fitted nothing: the classifier's test split; for the segmentation model, which has no test
split, the odd-numbered half of its validation split (the even half fits the temperature and
the threshold). The unlike images are real photos (``trust.unlike_photos``, copies of
scikit-image's, data/unlike/README.md) and those held-out images with their tiles shuffled.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from petvision.config.schema import TrustConfig
from petvision.core.atomic import atomic_file
from petvision.core.errors import DataError
from petvision.evaluation import calibration, ood

log = logging.getLogger(__name__)

SUFFIX = ".trust.npz"
FORMAT = 1
SHUFFLE_GRID = 4
# data.source values whose pictures are generated, not photographed.
GENERATED_SOURCES = ("synthetic",)
GENERATED_WARNING = (
    "the models were trained on generated pictures of pets (data.source=synthetic), not on "
    "photos: their answers on real photos mean nothing"
)
# What heads a "trained_on" cell (predict's table, the served answers) for such models.
GENERATED_PREFIX = "GENERATED PETS, not photos: "


def trust_file(model_file: Path) -> Path:
    """``models/classifier.keras`` -> ``models/classifier.trust.npz``."""
    model_file = Path(model_file)
    return model_file.with_name(model_file.stem + SUFFIX)


# --------------------------------------------------------------------------- provenance


def provenance(
    *, source: str, digests: dict[str, str], preset: str, image_size: int, model: str
) -> dict[str, Any]:
    """What a model was trained on. ``dataset_digest`` is one digest of the splits' digests
    (petvision.data.digest), the same for the same arrays wherever they lie."""
    from petvision.util.hashing import json_digest

    return {
        "source": str(source),
        "dataset_digest": json_digest(dict(sorted(digests.items())))[:16],
        "split_digests": dict(sorted(digests.items())),
        "preset": str(preset),
        "image_size": int(image_size),
        "model": str(model),
    }


def describe(prov: dict[str, Any] | None) -> str:
    """One line for a table cell: ``synthetic, digest 0123abcd..., preset quick, 96 px``."""
    if not prov:
        return "unknown (no trust file beside the model)"
    return (
        f"{prov.get('source', '?')} data, digest {prov.get('dataset_digest', '?')}, "
        f"preset {prov.get('preset', '?')}, {prov.get('image_size', '?')} px"
    )


def is_generated(prov: dict[str, Any] | None) -> bool:
    return bool(prov) and str(prov.get("source")) in GENERATED_SOURCES  # type: ignore[union-attr]


def trained_on(by_model: Mapping[str, dict[str, Any] | None]) -> str:
    """One table cell saying what the models were trained on: one :func:`describe` when they
    agree, else each model's after its name; headed by :data:`GENERATED_PREFIX` when any of them
    was trained on generated pictures."""
    described = {name: describe(prov) for name, prov in by_model.items()}
    distinct = set(described.values())
    text = (
        distinct.pop()
        if len(distinct) == 1
        else "; ".join(f"{name}: {d}" for name, d in described.items())
    )
    if any(is_generated(prov) for prov in by_model.values()):
        return GENERATED_PREFIX + text
    return text


def tags(prov: dict[str, Any]) -> dict[str, str]:
    """MLflow tags (run and registered version): ``trained_on.source`` etc."""
    return {f"trained_on.{k}": str(v) for k, v in prov.items() if k != "split_digests"} | {
        f"trained_on.digest.{k}": v for k, v in prov.get("split_digests", {}).items()
    }


# --------------------------------------------------------------------------- the file


@dataclass
class Trust:
    provenance: dict[str, Any]
    temperature: float = 1.0
    detector: ood.Detector | None = None
    task: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def save(self, path: Path) -> Path:
        meta: dict[str, Any] = {
            "format": FORMAT,
            "task": self.task,
            "provenance": self.provenance,
            "temperature": float(self.temperature),
            "detector": None,
            **self.extra,
        }
        arrays: dict[str, Any] = {}
        if self.detector is not None:
            d = self.detector
            meta["detector"] = {
                "method": ood.METHOD,
                "layers": d.layers,
                "k": d.k,
                "scales": [float(s) for s in d.scales],
                "threshold": float(d.threshold),
                "quantile": float(d.quantile),
            }
            arrays |= {f"bank_{i}": np.asarray(b, np.float16) for i, b in enumerate(d.banks)}
        arrays["meta"] = np.array(json.dumps(meta))
        with atomic_file(Path(path)) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> Trust:
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                d = meta.get("detector")
                banks = [data[f"bank_{i}"] for i in range(len(d["layers"]))] if d else []
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise DataError(f"{path}: not a trust file ({type(exc).__name__}: {exc})") from None
        if meta.get("format") != FORMAT:
            raise DataError(f"{path}: trust file format {meta.get('format')}, expected {FORMAT}")
        detector = None
        if d:
            detector = ood.Detector(
                list(d["layers"]),
                int(d["k"]),
                banks,
                [float(s) for s in d["scales"]],
                float(d["threshold"]),
                float(d["quantile"]),
            )
        known = {"format", "task", "provenance", "temperature", "detector"}
        return cls(
            provenance=dict(meta.get("provenance") or {}),
            temperature=float(meta.get("temperature", 1.0)),
            detector=detector,
            task=str(meta.get("task", "")),
            extra={k: v for k, v in meta.items() if k not in known},
        )


def find(model: Path) -> Trust | None:
    """A model's trust file: beside a model file (:func:`trust_file`), or, for the folder of an
    MLflow model, the one logged inside it, among the files beside the network (in a folder of
    its own: petvision.tracking.flavor.EXTRA_FILES_DIR). None when the model has none (trained
    before trust files existed, or by other code)."""
    model = Path(model)
    if model.is_dir():
        logged = sorted(model.glob("*/*" + SUFFIX))
        return Trust.load(logged[0]) if logged else None
    path = trust_file(model)
    return Trust.load(path) if path.is_file() else None


# --------------------------------------------------------------------------- the stages' step


@dataclass(frozen=True)
class Labelled:
    images: np.ndarray
    labels: np.ndarray  # one per image, or one per pixel


@dataclass(frozen=True)
class Inputs:
    """What :func:`measure` fits on and measures with."""

    train_images: np.ndarray  # the detector's banks
    fit: Labelled  # validation images: the temperature, the detector's scales and threshold
    held: Labelled  # images that fitted nothing: the measurements
    unlike_photos: np.ndarray  # real photos unlike the training data (may be none)


@dataclass(frozen=True)
class Measured:
    summary: dict[str, Any]  # for metrics.json under "trust"
    trust: Trust
    reliability: tuple[calibration.Reliability, calibration.Reliability]  # before, after


def measure(
    model: Any,
    layers: tuple[str, ...],
    inputs: Inputs,
    settings: TrustConfig,
    *,
    prov: dict[str, Any],
    task: str,
    batch_size: int = 64,
) -> Measured:
    """Fit the temperature and, when ``settings.detector`` is on and the model has detector
    ``layers``, the detector; then measure both on the held-out images, which fitted nothing,
    and on the unlike photos. ``prov`` and ``task`` go into the trust file."""
    from petvision.evaluation import features

    detector = settings.detector and bool(layers)
    tap = list(layers) if detector else []
    fit_fwd = features.forward(model, inputs.fit.images, tap, batch_size)
    held_fwd = features.forward(model, inputs.held.images, tap, batch_size)
    cal_summary, before, after = calibration.calibration_report(
        features.two_class_logits(fit_fwd),
        inputs.fit.labels,
        features.two_class_logits(held_fwd),
        inputs.held.labels,
        settings.temperature_scaling,
    )
    summary: dict[str, Any] = {"calibration": cal_summary}
    fitted = None
    if detector:
        fitted, summary["detector"] = _fit_and_measure_detector(
            model, tap, inputs, settings, (fit_fwd, held_fwd), batch_size
        )
    trust = Trust(prov, cal_summary["temperature"], fitted, task)
    return Measured(summary, trust, (before, after))


def _fit_and_measure_detector(
    model: Any,
    tap: list[str],
    inputs: Inputs,
    settings: TrustConfig,
    fit_and_held: tuple[Any, Any],
    batch_size: int,
) -> tuple[ood.Detector, dict[str, Any]]:
    """The detector fitted on the training images (its banks) and the validation features
    (``fit_and_held``'s first: scales, threshold), and its report on the held-out images against
    the unlike photos and the held-out images with their tiles shuffled."""
    from petvision.evaluation import features

    fit_fwd, held_fwd = fit_and_held
    train_fwd = features.forward(model, inputs.train_images, tap, batch_size)
    k = min(settings.k, len(inputs.train_images))
    fitted, _ = ood.fit(tap, train_fwd.features, fit_fwd.features, k, settings.quantile)
    held_scores = fitted.score(held_fwd.features)
    unlike: dict[str, np.ndarray] = {}
    if len(inputs.unlike_photos):
        unlike["real_photos"] = fitted.score(
            features.forward(model, inputs.unlike_photos, tap, batch_size).features
        )
    shuffled = ood.shuffled_patches(np.asarray(inputs.held.images), SHUFFLE_GRID)
    unlike["shuffled_patches"] = fitted.score(
        features.forward(model, shuffled, tap, batch_size).features
    )
    report = {
        "method": ood.METHOD,
        # One string: DVC shows scalars only, and a list here would vanish from
        # `dvc exp show` and differ from metrics.json after `dvc exp apply`.
        "layers": " + ".join(tap),
        "k": k,
        "quantile": settings.quantile,
        **ood.detection_report(held_scores, unlike, fitted.threshold),
    }
    return fitted, report
