"""The quick recipe learns: each training stage, run as the pipeline runs it, beats what colour
alone achieves on the same held-out images by a margin that a broken recipe misses.

"As the pipeline runs it": the session's trained pipeline (tests/trained.py), ``dvc repro`` of
download, preprocess and both training stages in a project copy: the quick preset's optimizer,
learning-rate schedule (warm-up and cosine), batch size, epochs and precision, through the
stages' input pipeline. So a broken optimizer setting, schedule, loss, target or input pipeline
fails here on every CPU, also where the quality gate (test_quality_gate.py) is skipped.

Where bfloat16 is native the training is the quick preset itself, which clears these bars by far
(the gate's bars are higher). Elsewhere it is the quick recipe on a smaller set (2,000 pictures,
both models at 64 px, float32), and the bars below are set for it. The baselines are the colour
guards of test_synthetic.py (tests/colour_baselines.py) on the same images: a per-pixel colour
rule for the pet mask, a colour-histogram nearest-centroid for the species. Measured on the
smaller set (trainer seed 1337, 2-core AVX-512-BF16 machine): pet IoU 0.831 (border pixels left
out) against the colour rule's 0.394, test accuracy 0.865 against the colour histogram's 0.545;
in float32, as CPUs without native bfloat16 train: 0.842 and 0.880. Broken recipes (masks or
labels shuffled in the input pipeline, a 1/100 learning rate) reached 0.345, 0.525 and 0.495:
they miss the bars by far (docs/testing.md).
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from colour_baselines import colour_histogram_accuracy, pixel_colour_iou

from petvision.core.tasks import Task
from petvision.data import npy_dataset
from petvision.evaluation.metrics import PET

BORDER = 2  # the segmentation class of the trimaps' border band (metrics.SEGMENTATION_CLASSES)

# Above both baselines by margins that chance cannot reach on 200 images, and below what the
# recipe reached on the smaller set (docstring) by 0.1 or more, for other seeds and float32 CPUs.
SEGMENTATION_BAR = 0.70  # pet IoU, border left out; and at least the colour rule's + 0.25
CLASSIFICATION_BAR = 0.75  # test accuracy; and at least the colour histogram's + 0.2


def split(pipeline, task: Task, name: str) -> npy_dataset.Split:
    return npy_dataset.load_split(pipeline.path("data/npy"), task, name)


def metrics(pipeline, task: Task) -> dict:
    return json.loads(pipeline.path(f"reports/{task}/metrics.json").read_text())


@pytest.mark.slow
@pytest.mark.quality
def test_the_quick_recipe_trains_the_segmentation_model_past_the_colour_rule(trained_pipeline):
    pipeline = trained_pipeline
    summary = metrics(pipeline, Task.segmentation)
    train = split(pipeline, Task.segmentation, "train")
    val = split(pipeline, Task.segmentation, "val")
    images = np.concatenate([train.images, val.images])
    trimaps = np.concatenate([train.require("masks"), val.require("masks")])[..., 0] + 1
    baseline = pixel_colour_iou(images, trimaps, len(train))

    model = keras.saving.load_model(pipeline.path("models/segmentation.keras"), safe_mode=True)
    predicted = model.predict(np.asarray(val.images), batch_size=64, verbose=0).argmax(-1)
    truth = np.asarray(val.require("masks"))[..., 0]
    known = truth != BORDER  # as for the colour rule: the band is "not classified"
    pet, true_pet = (predicted == PET)[known], (truth == PET)[known]
    iou = float((pet & true_pet).sum() / (pet | true_pet).sum())
    print(
        f"segmentation ({pipeline.preset}): pet IoU {iou:.3f} (stage's val_pet_iou "
        f"{summary['val']['pet_iou']:.3f}, best epoch {summary['best_epoch']}); "
        f"colour rule {baseline:.3f}"
    )
    assert iou >= max(SEGMENTATION_BAR, baseline + 0.25), (iou, baseline, summary["val"])


@pytest.mark.slow
@pytest.mark.quality
def test_the_quick_recipe_trains_the_mini_xception_past_the_colour_histogram(trained_pipeline):
    pipeline = trained_pipeline
    summary = metrics(pipeline, Task.classification)
    train = split(pipeline, Task.classification, "train")
    test = split(pipeline, Task.classification, "test")
    baseline = colour_histogram_accuracy(
        np.concatenate([train.images, test.images]),
        np.concatenate([train.require("labels"), test.require("labels")]),
        len(train),
    )
    accuracy = summary["test"]["accuracy"]
    print(
        f"mini_xception ({pipeline.preset}): test accuracy {accuracy:.3f} (best epoch "
        f"{summary['best_epoch']}, val {summary['val']['accuracy']:.3f}); colour histogram "
        f"{baseline:.3f}"
    )
    assert accuracy >= max(CLASSIFICATION_BAR, baseline + 0.2), (accuracy, baseline, summary)
