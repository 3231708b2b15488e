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
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from petvision.config.checks import check_split_sizes, validate
from petvision.config.schema import (
    REMOVED_CHOICES,
    ActivationsConfig,
    ArchiveConfig,
    AugmentationConfig,
    CamMethod,
    ClassificationConfig,
    ClassificationDataConfig,
    ClassificationModelConfig,
    Config,
    DataConfig,
    Device,
    ExperimentNames,
    ExportConfig,
    FaithfulnessConfig,
    FiltersConfig,
    Flip,
    GradcamConfig,
    ImagenetConfig,
    Interpolation,
    LocalDataConfig,
    LocalizationConfig,
    Optimizer,
    OxfordPetsConfig,
    PathsConfig,
    Precision,
    PredictConfig,
    PreprocessConfig,
    RegisteredModelNames,
    SanityConfig,
    Schedule,
    SegmentationConfig,
    SegmentationDataConfig,
    SegmentationModelConfig,
    SegmentationVisualizeConfig,
    Source,
    Strategy,
    SyntheticConfig,
    TrackingConfig,
    TrainConfig,
    TrainerConfig,
    VisualizeConfig,
    VisualizedModel,
)
from petvision.config.tasks import TaskConfig, task_config
from petvision.core import paths as project_paths
from petvision.core.errors import ConfigError
from petvision.core.tasks import Task

__all__ = [
    "ActivationsConfig",
    "ArchiveConfig",
    "AugmentationConfig",
    "CamMethod",
    "ClassificationConfig",
    "ClassificationDataConfig",
    "ClassificationModelConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "Device",
    "ExperimentNames",
    "ExportConfig",
    "FaithfulnessConfig",
    "FiltersConfig",
    "Flip",
    "GradcamConfig",
    "ImagenetConfig",
    "Interpolation",
    "LocalDataConfig",
    "LocalizationConfig",
    "Optimizer",
    "OxfordPetsConfig",
    "PathsConfig",
    "Precision",
    "PredictConfig",
    "PreprocessConfig",
    "RegisteredModelNames",
    "SanityConfig",
    "Schedule",
    "SegmentationConfig",
    "SegmentationDataConfig",
    "SegmentationModelConfig",
    "SegmentationVisualizeConfig",
    "Source",
    "Strategy",
    "SyntheticConfig",
    "Task",
    "TaskConfig",
    "TrackingConfig",
    "TrainConfig",
    "TrainerConfig",
    "VisualizeConfig",
    "VisualizedModel",
    "check_split_sizes",
    "compose",
    "load",
    "task_config",
    "to_dict",
    "to_yaml",
    "validate",
]


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
        removed = REMOVED_CHOICES.get(str(key), {}).get(str(value))
        return f"{key}={value!r}: must be one of {choices}" + (f". {removed}" if removed else "")
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
