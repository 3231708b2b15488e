"""Model builders: one readable function per architecture of the chapter (keras only, no tf.*)."""

from petvision.models.classification import BLOCK_OUTPUTS, LAST_CONV_LAYER, build_classifier
from petvision.models.segmentation import build_segmentation_model

__all__ = ["BLOCK_OUTPUTS", "LAST_CONV_LAYER", "build_classifier", "build_segmentation_model"]
