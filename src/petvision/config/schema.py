"""The typed schema of ``conf/``: one dataclass per config group, an Enum for every key that
takes one of a few words. OmegaConf checks a composed configuration against it on load."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from petvision.core import paths as project_paths

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


# Values a key took once and no longer does: what its error adds (config.load), key -> value -> why.
REMOVED_CHOICES = {
    "trainer.strategy": {
        "multi_worker": (
            "multi_worker was removed: Keras 3 cannot train under TensorFlow's multi-worker "
            "strategy without patching its internals. Use trainer.strategy=mirrored for the GPUs "
            "of one machine; across machines, run a search with several workers sharing one "
            "Optuna study, or queue experiments (dvc exp run --queue); see docs/architecture.md"
        )
    }
}


class VisualizedModel(StrEnum):
    trained = "trained"
    imagenet_xception = "imagenet_xception"


class CamMethod(StrEnum):  # the recipes of petvision.interpret.methods.gradcam
    gradcam = "gradcam"
    gradcam_pp = "gradcam_pp"
    hirescam = "hirescam"
    layercam = "layercam"


@dataclass
class PathsConfig:
    raw: str = MISSING
    downloads: str = MISSING
    npy: str = MISSING
    models: str = MISSING
    reports: str = MISSING
    state: str = MISSING
    compile_cache: str = ".cache/jax"  # compiled XLA programs kept between runs (JAX backend)

    def resolve(self, name: str) -> Path:
        """The named path, absolute against the project root. The download and compilation caches
        resolve against the user's workspace instead, so temporary and queued DVC experiments
        (which run in a throwaway copy) share them rather than fetching the archives or compiling
        the same training step again."""
        if name in ("downloads", "compile_cache"):
            return project_paths.resolve(getattr(self, name), root=project_paths.tracking_root())
        return project_paths.resolve(getattr(self, name))


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
    # Off by default (the book's constant rate); petvision.training.schedules says what "cosine" does.
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
    steps_per_execution: int = 1  # training steps per compiled call (GPU lever; 1 on CPUs)
    compile_cache: bool = (
        True  # JAX: keep compiled programs in paths.compile_cache across processes
    )
    xla_flags: str = ""  # JAX: added to XLA_FLAGS before the backend starts (GPU compile levers)


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
class LocalizationConfig:
    method: CamMethod = MISSING  # the default map, reported beside the book's Grad-CAM
    # the block outputs with min_stride <= image pixels per map cell <= max_stride, fused
    min_stride: int = MISSING
    max_stride: int = MISSING
    layer_images: int = MISSING  # test images for the every-block table (0: as many as above)


@dataclass
class FaithfulnessConfig:
    images: int = MISSING  # test images for deletion and insertion (0: none)
    steps: int = MISSING  # points on each curve after the first
    fill: int = MISSING  # the grey level that replaces a removed pixel
    occlusion_images: int = MISSING  # test images for the trimap occlusion accuracies; 0 = all


@dataclass
class SanityConfig:
    images: int = MISSING  # test images whose maps are compared under randomization (0: skip)
    max_correlation: float = MISSING  # maps this rank-correlated once all is random: warned


@dataclass
class SegmentationVisualizeConfig:
    worst: int = MISSING
    # IoU by pet size: the buckets' edges, shares of the image
    pet_size_edges: list[float] = MISSING


@dataclass
class VisualizeConfig:
    model: VisualizedModel = MISSING
    num_images: int = MISSING
    activations: ActivationsConfig = field(default_factory=ActivationsConfig)
    filters: FiltersConfig = field(default_factory=FiltersConfig)
    gradcam: GradcamConfig = field(default_factory=GradcamConfig)
    localization: LocalizationConfig = field(default_factory=LocalizationConfig)
    faithfulness: FaithfulnessConfig = field(default_factory=FaithfulnessConfig)
    sanity: SanityConfig = field(default_factory=SanityConfig)
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
class TrustConfig:
    """What the training stages add to each model so that its answers can be judged
    (petvision.evaluation.trust): calibration and the unlike-the-training-data detector."""

    temperature_scaling: bool = MISSING  # fit T on validation; kept only if it lowers the NLL
    detector: bool = MISSING  # fit the detector and measure it
    k: int = MISSING  # the k-th nearest training image
    quantile: float = MISSING  # of the validation scores: the threshold
    unlike_photos: str = MISSING  # real photos unlike the training data, for the measurement


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
    trust: TrustConfig = field(default_factory=TrustConfig)
