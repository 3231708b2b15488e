"""What the schema's types cannot say: ranges, model names (from the architectures table) and
settings that contradict each other; each failure names the key and the value."""

from __future__ import annotations

from typing import Any

from petvision.config import architectures
from petvision.config.schema import Config, VisualizeConfig
from petvision.config.tasks import task_config
from petvision.core.errors import ConfigError
from petvision.core.tasks import Task

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
    """Model names come from the architectures table (the other choices are Enums in the schema)."""
    for task in Task:
        value = task_config(cfg, task).model.name
        if value not in architectures.names(task):
            raise _fail(
                f"{task}.model.name",
                value,
                f"must be one of {', '.join(architectures.names(task))}",
            )


# Counts and sizes: an int must be at least 1, a float (a time, a rate) above 0.
POSITIVE = (
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
    "visualize.faithfulness.steps",
    "visualize.localization.min_stride",
    "predict.batch_size",
    "trainer.steps_per_execution",
    "trust.k",
)
# Floats that must be above 0 (learning rates).
ABOVE_ZERO = (
    "segmentation.train.learning_rate",
    "classification.train.learning_rate",
    "visualize.filters.learning_rate",
)
# Counts, an index and margins for which 0 is a valid value (data.preprocess.workers=0: one
# worker per core).
NOT_NEGATIVE = (
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
    "visualize.faithfulness.images",
    "visualize.faithfulness.occlusion_images",
    "visualize.sanity.images",
    "visualize.localization.layer_images",
)


def _check_ranges(cfg: Config) -> None:
    for key in POSITIVE:
        value = _get(cfg, key)
        if value < 1 if isinstance(value, int) else value <= 0:
            raise _fail(
                key, value, "must be at least 1" if isinstance(value, int) else "must be positive"
            )
    for key in ABOVE_ZERO:
        if _get(cfg, key) <= 0:
            raise _fail(key, _get(cfg, key), "must be positive")
    for key in NOT_NEGATIVE:
        if _get(cfg, key) < 0:
            raise _fail(key, _get(cfg, key), "must not be negative")

    if not 0 < cfg.trust.quantile < 1:
        raise _fail("trust.quantile", cfg.trust.quantile, "must lie strictly between 0 and 1")

    for task in Task:
        train = task_config(cfg, task).train
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
    _check_interpretation(cfg.visualize)
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


def _check_interpretation(v: VisualizeConfig) -> None:
    loc = v.localization
    if loc.max_stride < loc.min_stride:
        raise _fail(
            "visualize.localization.max_stride",
            loc.max_stride,
            f"must not be below visualize.localization.min_stride={loc.min_stride}",
        )
    if not 0 <= v.faithfulness.fill <= 255:
        raise _fail("visualize.faithfulness.fill", v.faithfulness.fill, "must be a level in 0..255")
    if not -1 <= v.sanity.max_correlation <= 1:
        raise _fail(
            "visualize.sanity.max_correlation", v.sanity.max_correlation, "must be in [-1, 1]"
        )
    edges = list(v.segmentation.pet_size_edges)
    if any(not 0 < e < 1 for e in edges) or edges != sorted(set(edges)):
        raise _fail(
            "visualize.segmentation.pet_size_edges",
            edges,
            "must be increasing shares of the image, each in (0, 1)",
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
