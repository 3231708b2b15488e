"""The architectures a configuration can name, one entry each.

Adding a model is its builder function in :mod:`petvision.models` plus one entry here plus its
YAML in ``conf/``: the config's check of ``segmentation.model.name`` /
``classification.model.name``, the builders (:func:`petvision.models.registry.builder`) and the
interpretation stage's layer choices all read this table. It imports no Keras and no model code,
so the configuration is checked before the heavy imports, and a change to a builder does not
touch the stages that only read the configuration (download, preprocess).
"""

from __future__ import annotations

from dataclasses import dataclass

from petvision.core.tasks import Task


@dataclass(frozen=True)
class Architecture:
    builder: str  # "<module in petvision.models>:<function>"
    # Classifiers: Grad-CAM's target, the last convolutional feature map (the book's choice) ...
    last_conv_layer: str | None = None
    # ... and each block's output, shallow to deep, for maps at every depth.
    block_outputs: tuple[str, ...] = ()
    # The layers whose pooled features the unlike-the-training-data detector reads
    # (petvision.evaluation.ood); chosen on the quick preset's models (docs/trust.md). Empty: the
    # block outputs.
    trust_layers: tuple[str, ...] = ()


ARCHITECTURES: dict[Task, dict[str, Architecture]] = {
    Task.segmentation: {
        # The book's encoder-decoder (chapter 9.1): the default.
        "book": Architecture(
            "segmentation:book_model",
            trust_layers=(
                "down2_conv",
                "down3_conv",
                "up3_convt",
                "up2_convt",
                "up1_convt_stride2",
            ),
        ),
        "unet": Architecture(
            "segmentation:unet_model",
            trust_layers=("down2b_relu", "down3b_relu", "bottom_b_relu", "up2b_relu", "up1b_relu"),
        ),
    },
    Task.classification: {
        "mini_xception": Architecture(
            "classification:mini_xception",
            last_conv_layer="block5_add",
            block_outputs=tuple(f"block{i}_add" for i in range(1, 6)),
            trust_layers=("block3_add", "block4_add", "block5_add"),
        ),
        "simple_convnet": Architecture(
            "classification:simple_convnet",
            last_conv_layer="conv5",
            block_outputs=tuple(f"conv{i}" for i in range(1, 6)),
        ),
        "residual_convnet": Architecture(
            "classification:residual_convnet",
            last_conv_layer="block3_add",
            block_outputs=tuple(f"block{i}_add" for i in range(1, 4)),
        ),
    },
}

# Names that mean the same architecture. "seed" was this project's first name for the book's
# segmentation model; configurations that say so keep working.
ALIASES: dict[Task, dict[str, str]] = {Task.segmentation: {"seed": "book"}, Task.classification: {}}


def names(task: Task) -> tuple[str, ...]:
    """Every name the configuration accepts for ``task``'s model, aliases included."""
    return (*ARCHITECTURES[task], *ALIASES[task])


def lookup(task: Task, name: str) -> Architecture:
    try:
        return ARCHITECTURES[task][ALIASES[task].get(name, name)]
    except KeyError:
        raise KeyError(
            f"{task}.model.name={name!r}: must be one of {', '.join(names(task))}"
        ) from None


def last_conv_layer(name: str) -> str:
    """Grad-CAM's target layer in the classifier ``name`` (the book's choice: the last one)."""
    layer = lookup(Task.classification, name).last_conv_layer
    if layer is None:
        raise KeyError(f"classification.model.name={name!r}: no convolutional layer registered")
    return layer


def gradcam_layers() -> tuple[str, ...]:
    """Grad-CAM's target layer of every registered classifier (to find it in a model of unknown
    architecture)."""
    return tuple(
        a.last_conv_layer
        for a in ARCHITECTURES[Task.classification].values()
        if a.last_conv_layer is not None
    )
