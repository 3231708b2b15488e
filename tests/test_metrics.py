"""petvision.evaluation.metrics against computations that share none of its code: confusion matrices and
IoUs worked out by hand, ROC AUC as the share of (positive, negative) pairs ranked right, and the
Keras metrics of every epoch against the NumPy scores."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from petvision.evaluation import metrics

# --------------------------------------------------------------------------- confusion and IoU

# Worked by hand: six pixels, three classes.
TRUE = np.array([0, 0, 1, 2, 2, 2])
PRED = np.array([0, 1, 1, 2, 0, 2])
CM = np.array(
    [
        [1, 1, 0],  # true 0: one right, one called 1
        [0, 1, 0],  # true 1: right
        [1, 0, 2],
    ]
)  # true 2: one called 0, two right
# IoU = tp / (row + column - tp): class 0 1/(2+2-1), class 1 1/(1+2-1), class 2 2/(3+2-2)
IOU = np.array([1 / 3, 1 / 2, 2 / 3])


def test_confusion_counts_true_rows_and_predicted_columns():
    np.testing.assert_array_equal(metrics.confusion(TRUE, PRED, 3), CM)
    # Shape does not matter, only the pairing of pixels (masks come as (N, H, W, 1)).
    np.testing.assert_array_equal(
        metrics.confusion(TRUE.reshape(1, 2, 3, 1), PRED.reshape(1, 2, 3), 3), CM
    )
    assert metrics.confusion(TRUE, PRED, 4).shape == (4, 4)  # an absent class still gets its row


def test_iou_per_class_from_the_confusion_matrix():
    np.testing.assert_allclose(metrics.iou_from_confusion(CM), IOU)
    absent = metrics.iou_from_confusion(metrics.confusion(TRUE, PRED, 4))
    np.testing.assert_allclose(absent[:3], IOU)
    assert math.isnan(absent[3])  # in neither truth nor prediction: undefined, not 0 or 1


def test_per_image_iou_of_the_pet_class():
    true = np.array(
        [
            [[0, 0], [1, 1]],  # pet on the top row
            [[1, 1], [1, 1]],  # no pet anywhere...
            [[0, 2], [2, 1]],
        ]
    )
    pred = np.array(
        [
            [[0, 1], [0, 1]],  # 1 of 3 pet pixels in the union right
            [[1, 1], [1, 1]],  # ...and none predicted: a perfect image
            [[1, 1], [1, 1]],
        ]
    )  # the pet missed
    np.testing.assert_allclose(metrics.per_image_iou(true[..., None], pred), [1 / 3, 1.0, 0.0])
    np.testing.assert_allclose(metrics.per_image_iou(true, pred, cls=1), [1 / 3, 1.0, 1 / 4])


# --------------------------------------------------------------------------- ROC AUC


def pairwise_auc(labels, scores) -> float:
    """The probability that a random positive scores above a random negative (ties count half),
    by counting every pair: the definition, with no ranks."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize(
    "labels, scores, expected",
    [
        (
            [0, 0, 1, 1],
            [0.1, 0.4, 0.35, 0.8],
            0.75,
        ),  # the textbook example: 3 of 4 pairs ranked right
        ([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4], 1.0),
        ([0, 0, 1, 1], [0.4, 0.3, 0.2, 0.1], 0.0),
        ([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5], 0.5),  # all tied: chance
        ([0, 0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9, 0.5], 5 / 6),
    ],
)
def test_roc_auc_on_hand_worked_cases(labels, scores, expected):
    assert metrics.roc_auc(np.array(labels), np.array(scores)) == pytest.approx(expected)


@pytest.mark.parametrize("seed", range(5))
def test_roc_auc_equals_the_pairwise_count_with_many_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 60)
    scores = np.round(rng.random(60) * 0.5 + labels * rng.random(60) * 0.5, 1)  # rounded: ties
    assert len(np.unique(scores)) < 20
    assert metrics.roc_auc(labels, scores) == pytest.approx(pairwise_auc(labels, scores))


def test_roc_auc_is_undefined_with_one_class():
    assert math.isnan(metrics.roc_auc(np.ones(4), np.linspace(0, 1, 4)))
    assert math.isnan(metrics.roc_auc(np.zeros(4), np.linspace(0, 1, 4)))


# --------------------------------------------------------------------------- the binary report


def test_binary_report_on_a_hand_worked_case():
    labels = np.array([0, 0, 0, 1, 1])
    probabilities = np.array([0.1, 0.6, 0.4, 0.9, 0.5])  # 0.5 is a dog: the threshold is inclusive
    report = metrics.binary_report(labels, probabilities)
    assert report["confusion_matrix"] == [[2, 1], [0, 2]]
    assert report["accuracy"] == pytest.approx(4 / 5)
    assert report["roc_auc"] == pytest.approx(5 / 6)
    assert report["precision_cat"] == pytest.approx(1.0) and report["recall_cat"] == pytest.approx(
        2 / 3
    )
    assert report["precision_dog"] == pytest.approx(2 / 3) and report[
        "recall_dog"
    ] == pytest.approx(1.0)


def test_binary_report_with_a_class_never_predicted_scores_it_zero():
    report = metrics.binary_report(np.array([0, 1, 1]), np.array([0.9, 0.8, 0.7]))
    assert report["confusion_matrix"] == [[0, 1], [0, 2]]
    assert report["precision_cat"] == 0.0 and report["recall_cat"] == 0.0
    assert report["precision_dog"] == pytest.approx(2 / 3)


# --------------------------------------------------------------------------- the Keras metrics of every epoch


def test_epoch_segmentation_metrics_agree_with_the_numpy_scores():
    rng = np.random.default_rng(0)
    true = rng.integers(0, 3, (4, 8, 8, 1))
    probabilities = rng.random((4, 8, 8, 3)).astype("float32")
    probabilities /= probabilities.sum(-1, keepdims=True)
    predicted = probabilities.argmax(-1)
    iou = metrics.iou_from_confusion(metrics.confusion(true, predicted, 3))
    found = {}
    for metric in metrics.segmentation_metrics():
        metric.update_state(true, probabilities)
        found[metric.name] = float(metric.result())
    # Each class's IoU under its trimap name (pet = 0, the headline), and their mean.
    assert found["pet_iou"] == pytest.approx(iou[0], rel=1e-5)
    assert found["background_iou"] == pytest.approx(iou[1], rel=1e-5)
    assert found["border_iou"] == pytest.approx(iou[2], rel=1e-5)
    assert found["mean_iou"] == pytest.approx(iou.mean(), rel=1e-5)
    assert found["pixel_accuracy"] == pytest.approx((predicted == true[..., 0]).mean(), rel=1e-5)


def test_epoch_classification_metrics_agree_with_the_binary_report():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 200)
    probabilities = np.clip(labels * 0.3 + rng.random(200) * 0.7, 0, 1).astype("float32")
    report = metrics.binary_report(labels, probabilities)
    accuracy, auc = metrics.classification_metrics()
    accuracy.update_state(labels[:, None], probabilities[:, None])
    auc.update_state(labels[:, None], probabilities[:, None])
    assert float(accuracy.result()) == pytest.approx(report["accuracy"])
    # Keras interpolates the curve over 200 thresholds: close to the exact rank statistic.
    assert float(auc.result()) == pytest.approx(report["roc_auc"], abs=0.01)
