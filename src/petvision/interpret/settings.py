"""The typed schema of ``visualize.localization``, ``.faithfulness`` and ``.sanity`` (part of
:class:`petvision.config.Config`, which nests them) and their checks.

Kept apart from ``config.py`` only for its length; it imports nothing heavy, as that module must
not (DVC composes ``conf/`` without importing the package).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING

from petvision.errors import ConfigError

CAM_METHODS = ("gradcam", "gradcam_pp", "hirescam", "layercam")


@dataclass
class LocalizationConfig:
    method: str = MISSING  # the default map: gradcam | gradcam_pp | hirescam | layercam
    min_stride: int = (
        MISSING  # fuse the block outputs at min_stride <= image px per cell <= max_stride
    )
    max_stride: int = MISSING


@dataclass
class FaithfulnessConfig:
    images: int = MISSING  # test images for deletion and insertion (0: none)
    steps: int = MISSING  # points on each curve beyond the start
    fill: int = MISSING  # the grey level that replaces a removed pixel
    occlusion_images: int = MISSING  # test images for the trimap occlusion accuracies; 0 = all


@dataclass
class SanityConfig:
    images: int = MISSING  # test images whose maps are compared under randomization (0: skip)
    max_correlation: float = (
        MISSING  # maps at least this rank-correlated once all is random: warned
    )


def _fail(key: str, value: Any, why: str) -> ConfigError:
    return ConfigError(f"{key}={value!r}: {why}")


def validate(
    localization: LocalizationConfig,
    faithfulness: FaithfulnessConfig,
    sanity: SanityConfig,
    pet_size_edges: list[float],
) -> None:
    """Reject impossible values, naming the key under ``visualize.``."""
    if localization.method not in CAM_METHODS:
        raise _fail(
            "visualize.localization.method",
            localization.method,
            f"must be one of {', '.join(CAM_METHODS)}",
        )
    if not 0 < localization.min_stride <= localization.max_stride:
        raise _fail(
            "visualize.localization.min_stride",
            localization.min_stride,
            f"need 0 < min_stride <= max_stride={localization.max_stride}",
        )
    for key, value in (
        ("faithfulness.images", faithfulness.images),
        ("faithfulness.occlusion_images", faithfulness.occlusion_images),
        ("sanity.images", sanity.images),
    ):
        if value < 0:
            raise _fail(f"visualize.{key}", value, "must not be negative")
    if faithfulness.steps < 1:
        raise _fail("visualize.faithfulness.steps", faithfulness.steps, "must be at least 1")
    if not 0 <= faithfulness.fill <= 255:
        raise _fail(
            "visualize.faithfulness.fill", faithfulness.fill, "must be a grey level in 0..255"
        )
    if not -1 <= sanity.max_correlation <= 1:
        raise _fail(
            "visualize.sanity.max_correlation", sanity.max_correlation, "must be in [-1, 1]"
        )
    if any(not 0 < e < 1 for e in pet_size_edges) or list(pet_size_edges) != sorted(
        set(pet_size_edges)
    ):
        raise _fail(
            "visualize.segmentation.pet_size_edges",
            list(pet_size_edges),
            "must be increasing shares of the image, each in (0, 1)",
        )
