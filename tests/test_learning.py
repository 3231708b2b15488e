"""The quick recipe learns: each training stage, run as the pipeline runs it, beats what colour
alone achieves on the same held-out images by a margin that a broken recipe misses.

"As the pipeline runs it": generated pets through the download and preprocess stages' own
functions into ``.npy`` files, then ``run_train_segmentation`` and ``run_train_xception``, the
stages themselves: the quick preset's optimizer, learning-rate schedule (warm-up and cosine),
batch size, epochs and precision, through ``training.loop`` (compile_model, fit) and the stages'
input pipeline (``data.inputs.split_batches`` over the memory-mapped arrays). So a broken
optimizer setting, schedule, loss, target or input pipeline fails here, not only in the quality
gate (test_quality_gate.py), which trains the quick preset whole and does not run in CI on every
CPU (README, "The tests").

Smaller than the gate, so the bars are lower: 2,000 pictures instead of 3,000, both models at
64 px (the classifier at 96 in the preset). The baselines are the colour guards of
test_synthetic.py on the same images: a per-pixel colour rule for the pet mask, a
colour-histogram nearest-centroid for the species. Measured on a 2-core AVX-512-BF16 machine
shared with other jobs (load average about 5; trainer seed 1337): pet IoU 0.831 (border pixels
left out; the stage's val_pet_iou 0.782) against the colour rule's 0.394, in 129 s; test accuracy
0.865 against the colour histogram's 0.545, in 170 s; the data, 34 s. In float32, as CPUs
without native bfloat16 train (``PETVISION_LEARNING_EXTRA="trainer.precision=float32"``, the same
machine, 2026-12-04): 0.842 and 0.880. On a smaller set (1,200 pictures, the classifier on 900)
the margins were too thin to keep: pet IoU 0.741 (bfloat16) and 0.667 (float32, trainer seed 7).
Broken recipes, measured the same way by hand (README, "The tests"), miss the bars by far.

``PETVISION_LEARNING_EXTRA`` (space-separated overrides, appended to the set's) is for measuring
the bars under other settings, as above; CI leaves it unset.
"""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest
from colour_baselines import colour_histogram_accuracy, pixel_colour_iou
from conftest import path_overrides, time_bound

from petvision import config
from petvision.config import task_config
from petvision.core.tasks import Task
from petvision.data import npy_dataset
from petvision.download import run_download
from petvision.evaluation.metrics import PET
from petvision.preprocess import run_preprocess
from petvision.train_segmentation import run_train_segmentation
from petvision.train_xception import run_train_xception

BORDER = 2  # the segmentation class of the trimaps' border band (metrics.SEGMENTATION_CLASSES)

# The quick preset (the default) on fewer pictures: 1,800 / 200 for segmentation, 1,600 / 200 /
# 200 for classification. Everything else is the preset's.
SMALLER = [
    "data.synthetic.num_images=2000",
    "data.segmentation.val_count=200",
    "data.classification.image_size=64",
    "data.classification.train_count=1600",
    "data.classification.val_count=200",
    "data.classification.test_count=200",
    "tracking.log_model=false",
    *os.environ.get("PETVISION_LEARNING_EXTRA", "").split(),
]
# Above both baselines by margins that chance cannot reach on 200 images, and below what the
# recipe reached (docstring) by 0.1 or more, for other seeds and float32 CPUs.
SEGMENTATION_BAR = 0.70  # pet IoU, border left out; and at least the colour rule's + 0.25
CLASSIFICATION_BAR = 0.75  # test accuracy; and at least the colour histogram's + 0.2


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """The quick preset's configuration on the smaller set, its data made by the stages."""
    root = tmp_path_factory.mktemp("learning")
    cfg = config.load(
        config.compose(
            [*path_overrides(root), f"tracking.uri=sqlite:///{root}/mlflow.db", *SMALLER]
        )
    )
    assert cfg.preset == "quick"
    with time_bound(900, "generating and preprocessing 2,000 pets"):
        run_download(cfg)
        run_preprocess(cfg)
    return cfg


def split(cfg, task: str, name: str) -> npy_dataset.Split:
    return npy_dataset.load_split(cfg.paths.resolve("npy"), task, name)


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_the_quick_recipe_trains_the_segmentation_model_past_the_colour_rule(quick):
    summary = run_train_segmentation(quick)
    train, val = split(quick, "segmentation", "train"), split(quick, "segmentation", "val")
    images = np.concatenate([train.images, val.images])
    trimaps = np.concatenate([train.require("masks"), val.require("masks")])[..., 0] + 1
    baseline = pixel_colour_iou(images, trimaps, len(train))

    model_file = task_config(quick, Task.segmentation).model_file
    model = keras.saving.load_model(model_file, safe_mode=True)
    predicted = model.predict(np.asarray(val.images), batch_size=64, verbose=0).argmax(-1)
    truth = np.asarray(val.require("masks"))[..., 0]
    known = truth != BORDER  # as for the colour rule: the band is "not classified"
    pet, true_pet = (predicted == PET)[known], (truth == PET)[known]
    iou = float((pet & true_pet).sum() / (pet | true_pet).sum())
    print(
        f"segmentation: pet IoU {iou:.3f} (stage's val_pet_iou {summary['val']['pet_iou']:.3f}, "
        f"best epoch {summary['best_epoch']}); colour rule {baseline:.3f}"
    )
    assert iou >= max(SEGMENTATION_BAR, baseline + 0.25), (iou, baseline, summary["val"])


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_the_quick_recipe_trains_the_mini_xception_past_the_colour_histogram(quick):
    assert quick.classification.model.name == "mini_xception"
    summary = run_train_xception(quick)
    train, test = split(quick, "classification", "train"), split(quick, "classification", "test")
    baseline = colour_histogram_accuracy(
        np.concatenate([train.images, test.images]),
        np.concatenate([train.require("labels"), test.require("labels")]),
        len(train),
    )
    accuracy = summary["test"]["accuracy"]
    print(
        f"mini_xception: test accuracy {accuracy:.3f} (best epoch {summary['best_epoch']}, "
        f"val {summary['val']['accuracy']:.3f}); colour histogram {baseline:.3f}"
    )
    assert accuracy >= max(CLASSIFICATION_BAR, baseline + 0.2), (accuracy, baseline, summary)
