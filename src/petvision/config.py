"""The configuration: its typed schema, its validation, and the one way stages and tests get it.

``conf/`` is the single source of truth. Hydra composes it (``python -m petvision.<stage>``),
DVC composes it into ``params.yaml`` (``dvc exp run -S``), and tests compose it with
:func:`compose`. Whatever the route, :func:`load` checks the result against the dataclasses
below before any heavy work starts: an unknown key, a wrong type, a missing value or an
impossible one stops the stage with a :class:`ConfigError` naming the key and the value.

The schema is deliberately not part of Hydra's defaults list: DVC composes ``conf/`` without
importing this package, so a ConfigStore entry would break ``dvc exp run -S``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from petvision import paths as project_paths
from petvision.errors import ConfigError

__all__ = ["Config", "ConfigError", "compose", "load", "validate"]


# --------------------------------------------------------------------------- schema


# The allowed values of the keys that take one of a few words. OmegaConf checks them on load and
# names the key and the choices; a StrEnum still compares, prints and serializes as its word.


class Source(StrEnum):
    synthetic = "synthetic"
    oxford_pets = "oxford_pets"
    local = "local"


class Interpolation(StrEnum):
    nearest = "nearest"
    bilinear = "bilinear"
    bicubic = "bicubic"
    lanczos = "lanczos"


class Optimizer(StrEnum):
    """Keras optimizers by their ``keras.optimizers.get`` names."""

    rmsprop = "rmsprop"
    adam = "adam"
    sgd = "sgd"


class Schedule(StrEnum):
    """The learning rate over a run (``petvision.training.schedules``)."""

    constant = "constant"
    cosine = "cosine"  # a linear warm-up, then a cosine decay to zero


class Flip(StrEnum):
    horizontal = "horizontal"
    vertical = "vertical"
    horizontal_and_vertical = "horizontal_and_vertical"


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    gpu = "gpu"


class Precision(StrEnum):
    auto = "auto"
    float32 = "float32"
    mixed_bfloat16 = "mixed_bfloat16"
    mixed_float16 = "mixed_float16"


class Strategy(StrEnum):
    default = "default"
    mirrored = "mirrored"
    multi_worker = "multi_worker"


class VisualizedModel(StrEnum):
    trained = "trained"
    imagenet_xception = "imagenet_xception"


MODEL_FILES = {"segmentation": "segmentation.keras", "classification": "classifier.keras"}


@dataclass
class PathsConfig:
    raw: str = MISSING
    downloads: str = MISSING
    npy: str = MISSING
    models: str = MISSING
    reports: str = MISSING
    state: str = MISSING

    def resolve(self, name: str) -> Path:
        """The named path, absolute against the project root. The download cache resolves against
        the user's workspace instead, so temporary and queued DVC experiments (which run in a
        throwaway copy) share one cache rather than fetching the archives again."""
        if name == "downloads":
            return project_paths.resolve(getattr(self, name), root=project_paths.tracking_root())
        return project_paths.resolve(getattr(self, name))

    def model_file(self, task: str) -> Path:
        """Where a training stage keeps its best model (a DVC output)."""
        return self.resolve("models") / MODEL_FILES[task]

    def task_reports(self, task: str) -> Path:
        """A stage's report folder: metrics, history and pictures (DVC outputs)."""
        return self.resolve("reports") / task


@dataclass
class SyntheticConfig:
    num_images: int = MISSING
    seed: int = MISSING
    min_side: int = MISSING
    max_side: int = MISSING
    jpeg_quality_min: int = MISSING
    jpeg_quality_max: int = MISSING


@dataclass
class ArchiveConfig:
    name: str = MISSING
    size: int = MISSING
    sha256: str = MISSING


@dataclass
class OxfordPetsConfig:
    mirrors: list[str] = MISSING
    archives: list[ArchiveConfig] = MISSING
    retries: int = MISSING
    backoff_s: float = MISSING
    timeout_s: float = MISSING


@dataclass
class LocalDataConfig:
    path: str = MISSING


@dataclass
class SegmentationDataConfig:
    image_size: int = MISSING
    val_count: int = MISSING
    shuffle_seed: int = MISSING
    interpolation: Interpolation = MISSING


@dataclass
class ClassificationDataConfig:
    image_size: int = MISSING
    train_count: int = MISSING
    val_count: int = MISSING
    test_count: int = MISSING
    split_seed: int = MISSING
    interpolation: Interpolation = MISSING


@dataclass
class PreprocessConfig:
    workers: int = MISSING


@dataclass
class DataConfig:
    source: Source = MISSING
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    oxford_pets: OxfordPetsConfig = field(default_factory=OxfordPetsConfig)
    local: LocalDataConfig = field(default_factory=LocalDataConfig)
    segmentation: SegmentationDataConfig = field(default_factory=SegmentationDataConfig)
    classification: ClassificationDataConfig = field(default_factory=ClassificationDataConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)


@dataclass
class TrainConfig:
    optimizer: Optimizer = MISSING
    learning_rate: float = MISSING
    batch_size: int = MISSING
    epochs: int = MISSING
    early_stopping_patience: int = MISSING
    # Off by default (the seed's constant rate); petvision.training.schedules says what "cosine" does.
    schedule: Schedule = Schedule.constant
    warmup_epochs: float = 0.0  # for schedule=cosine: epochs of linear warm-up to learning_rate


@dataclass
class SegmentationModelConfig:
    name: str = MISSING
    num_classes: int = MISSING


@dataclass
class SegmentationConfig:
    model: SegmentationModelConfig = field(default_factory=SegmentationModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class AugmentationConfig:
    enabled: bool = MISSING
    flip: Flip = MISSING
    rotation: float = MISSING
    zoom: float = MISSING


@dataclass
class ClassificationModelConfig:
    name: str = MISSING
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    dropout: float = MISSING


@dataclass
class ClassificationConfig:
    model: ClassificationModelConfig = field(default_factory=ClassificationModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class TrainerConfig:
    device: Device = MISSING
    precision: Precision = MISSING
    xla: bool = MISSING
    strategy: Strategy = MISSING
    seed: int = MISSING
    deterministic: bool = MISSING
    resume: bool = MISSING


@dataclass
class ExperimentNames:
    segmentation: str = MISSING
    classification: str = MISSING
    interpretation: str = MISSING


@dataclass
class RegisteredModelNames:
    segmentation: str = MISSING
    classification: str = MISSING


@dataclass
class TrackingConfig:
    uri: str = MISSING
    experiments: ExperimentNames = field(default_factory=ExperimentNames)
    log_model: bool = MISSING
    connect_timeout_s: float = MISSING
    register: bool = MISSING
    registered_models: RegisteredModelNames = field(default_factory=RegisteredModelNames)


@dataclass
class ActivationsConfig:
    image_index: int = MISSING
    images_per_row: int = MISSING


@dataclass
class FiltersConfig:
    num_filters: int = MISSING
    steps: int = MISSING
    learning_rate: float = MISSING
    image_size: int = MISSING
    crop: int = MISSING
    margin: int = MISSING
    layers: dict[str, list[str]] = (
        MISSING  # per architecture; none listed: first, middle and last convolution
    )


@dataclass
class GradcamConfig:
    alpha: float = MISSING
    other_class: bool = MISSING
    localization_images: int = MISSING  # test images for the localization metrics; 0 = all


@dataclass
class ImagenetConfig:
    weights_url: str = MISSING
    class_index_url: str = MISSING
    timeout_s: float = MISSING


@dataclass
class SegmentationVisualizeConfig:
    worst: int = MISSING


@dataclass
class VisualizeConfig:
    model: VisualizedModel = MISSING
    num_images: int = MISSING
    activations: ActivationsConfig = field(default_factory=ActivationsConfig)
    filters: FiltersConfig = field(default_factory=FiltersConfig)
    gradcam: GradcamConfig = field(default_factory=GradcamConfig)
    segmentation: SegmentationVisualizeConfig = field(default_factory=SegmentationVisualizeConfig)
    imagenet: ImagenetConfig = field(default_factory=ImagenetConfig)


@dataclass
class PredictConfig:
    input: Any = MISSING  # a path, or a list of paths (photos and folders of photos)
    output: str = MISSING
    classifier: str = MISSING
    segmenter: str = MISSING
    gradcam: bool = MISSING
    overlay_alpha: float = MISSING
    batch_size: int = MISSING


@dataclass
class ExportConfig:
    output: str = MISSING
    classifier: str = MISSING
    segmenter: str = MISSING


@dataclass
class Config:
    preset: str = MISSING
    paths: PathsConfig = field(default_factory=PathsConfig)
    data: DataConfig = field(default_factory=DataConfig)
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    classification: ClassificationConfig = field(default_factory=ClassificationConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    visualize: VisualizeConfig = field(default_factory=VisualizeConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    export: ExportConfig = field(default_factory=ExportConfig)


# --------------------------------------------------------------------------- validation


def _get(cfg: Config, key: str) -> Any:
    value: Any = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _fail(key: str, value: Any, why: str) -> ConfigError:
    return ConfigError(f"{key}={value!r}: {why}")


def validate(cfg: Config) -> None:
    """Reject values that cannot work, naming the key and the value. Cheap: no I/O."""
    _check_choices(cfg)
    _check_ranges(cfg)
    _check_consistency(cfg)
    _check_predict_and_local(cfg)


def _check_choices(cfg: Config) -> None:
    """Model names come from the model registry (the other choices are Enums in the schema)."""
    from petvision.models import registry  # no Keras: the registry is a plain table

    for task in registry.TASKS:
        key = f"{task}.model.name"
        value = _get(cfg, key)
        if value not in registry.names(task):
            raise _fail(key, value, f"must be one of {', '.join(registry.names(task))}")


def _check_ranges(cfg: Config) -> None:
    positive = [
        "data.synthetic.num_images",
        "data.synthetic.min_side",
        "data.segmentation.image_size",
        "data.classification.image_size",
        "data.classification.train_count",
        "data.classification.val_count",
        "data.classification.test_count",
        "segmentation.model.num_classes",
        "segmentation.train.epochs",
        "segmentation.train.batch_size",
        "classification.train.epochs",
        "classification.train.batch_size",
        "visualize.num_images",
        "visualize.activations.images_per_row",
        "visualize.filters.num_filters",
        "visualize.filters.steps",
        "visualize.filters.image_size",
        "tracking.connect_timeout_s",
        "data.oxford_pets.timeout_s",
        "visualize.imagenet.timeout_s",
        "predict.batch_size",
    ]
    for key in positive:
        value = _get(cfg, key)
        if value < 1 if isinstance(value, int) else value <= 0:
            raise _fail(
                key, value, "must be at least 1" if isinstance(value, int) else "must be positive"
            )
    for key in [
        "segmentation.train.learning_rate",
        "classification.train.learning_rate",
        "visualize.filters.learning_rate",
    ]:
        if _get(cfg, key) <= 0:
            raise _fail(key, _get(cfg, key), "must be positive")
    for key in [
        "data.preprocess.workers",
        "data.segmentation.val_count",
        "data.oxford_pets.retries",
        "segmentation.train.early_stopping_patience",
        "classification.train.early_stopping_patience",
        "visualize.segmentation.worst",
        "visualize.activations.image_index",
        "visualize.filters.crop",
        "visualize.filters.margin",
        "visualize.gradcam.localization_images",
    ]:
        if _get(cfg, key) < 0:
            raise _fail(key, _get(cfg, key), "must not be negative")

    for task in ("segmentation", "classification"):
        train = getattr(cfg, task).train
        if not 0 <= train.warmup_epochs < train.epochs:
            raise _fail(
                f"{task}.train.warmup_epochs",
                train.warmup_epochs,
                f"must be at least 0 and below {task}.train.epochs={train.epochs}",
            )


def _check_consistency(cfg: Config) -> None:
    size = cfg.data.segmentation.image_size
    if size % 8:
        raise _fail(
            "data.segmentation.image_size",
            size,
            "must be a multiple of 8 (the model halves it three times and doubles it back)",
        )
    syn = cfg.data.synthetic
    if syn.max_side < syn.min_side:
        raise _fail(
            "data.synthetic.max_side",
            syn.max_side,
            f"must not be below data.synthetic.min_side={syn.min_side}",
        )
    if not 1 <= syn.jpeg_quality_min <= syn.jpeg_quality_max <= 100:
        raise _fail(
            "data.synthetic.jpeg_quality_min",
            syn.jpeg_quality_min,
            f"need 1 <= jpeg_quality_min <= jpeg_quality_max={syn.jpeg_quality_max} <= 100",
        )
    if cfg.data.source == "synthetic":
        check_split_sizes(cfg, syn.num_images, f"data.synthetic.num_images={syn.num_images}")
    if (
        cfg.classification.model.name == "simple_convnet"
        and cfg.data.classification.image_size < 78
    ):
        raise _fail(
            "data.classification.image_size",
            cfg.data.classification.image_size,
            "classification/model=simple_convnet needs at least 78 px (five valid 3x3 convolutions "
            "and four poolings)",
        )
    if not 0 <= cfg.classification.model.dropout < 1:
        raise _fail(
            "classification.model.dropout", cfg.classification.model.dropout, "must be in [0, 1)"
        )
    if not 0 < cfg.visualize.gradcam.alpha <= 1:
        raise _fail("visualize.gradcam.alpha", cfg.visualize.gradcam.alpha, "must be in (0, 1]")
    if not cfg.data.oxford_pets.mirrors:
        raise _fail("data.oxford_pets.mirrors", [], "needs at least one URL")
    for i, archive in enumerate(cfg.data.oxford_pets.archives):
        digest = archive.sha256.lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise _fail(
                f"data.oxford_pets.archives[{i}].sha256", archive.sha256, "must be 64 hex digits"
            )
    if cfg.trainer.device == "cpu" and cfg.trainer.precision == "mixed_float16":
        raise ConfigError(
            "trainer.precision='mixed_float16' with trainer.device='cpu': float16 has no fast path on CPUs; "
            "use trainer.precision=mixed_bfloat16, float32 or auto"
        )


def _check_predict_and_local(cfg: Config) -> None:
    if not 0 < cfg.predict.overlay_alpha <= 1:
        raise _fail("predict.overlay_alpha", cfg.predict.overlay_alpha, "must be in (0, 1]")
    inputs = cfg.predict.input
    # Hydra reads a folder named 2024 as a number: any scalar is a path.
    scalar = (str, int, float)
    if not (
        isinstance(inputs, scalar)
        or (isinstance(inputs, list) and all(isinstance(i, scalar) for i in inputs))
    ):
        raise _fail("predict.input", inputs, "must be a path or a list of paths")
    if cfg.data.source == "local" and not cfg.data.local.path.strip():
        raise _fail(
            "data.local.path",
            cfg.data.local.path,
            "data.source=local needs the folder of the Oxford-IIIT Pet dataset or of its archives",
        )


def check_split_sizes(cfg: Config, num_images: int, what: str) -> None:
    """The splits must fit in the dataset. Called at start for the synthetic source (its size is
    configured) and by preprocess once the real data's size is known."""
    val = cfg.data.segmentation.val_count
    if val >= num_images:
        raise _fail(
            "data.segmentation.val_count", val, f"must be smaller than the dataset ({what})"
        )
    c = cfg.data.classification
    needed = c.train_count + c.val_count + c.test_count
    if needed > num_images:
        raise ConfigError(
            f"data.classification.train_count={c.train_count} + val_count={c.val_count} + "
            f"test_count={c.test_count} = {needed} images, more than the dataset has ({what})"
        )


# --------------------------------------------------------------------------- loading


def load(raw: DictConfig | dict[str, Any]) -> Config:
    """Check a composed configuration against the schema and return it typed."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(Config), raw)
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise ConfigError(_describe(exc)) from None
    assert isinstance(cfg, Config)
    validate(cfg)
    return cfg


def _describe(exc: OmegaConfBaseException) -> str:
    key = getattr(exc, "full_key", None) or "?"
    first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    kind = type(exc).__name__
    if kind == "ConfigKeyError":
        return f"{key}: unknown key ({first_line})"
    if kind == "MissingMandatoryValue":
        return f"{key}: missing value"
    if kind == "ValidationError" and "expected one of" in first_line:
        # An Enum field: say it as every other bad value is said, key=value and the choices.
        value = getattr(exc, "value", None)
        choices = first_line.split("expected one of", 1)[1].strip(" []")
        return f"{key}={value!r}: must be one of {choices}"
    return f"{key}: {first_line}"


def compose(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Compose conf/ with Hydra overrides, exactly as DVC's ``-S`` and the stage CLI do."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(project_paths.conf_dir()), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=list(overrides))
    OmegaConf.resolve(cfg)
    return cfg


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
