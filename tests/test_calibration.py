"""petvision.evaluation.calibration against values worked out by hand: the ECE of a few
predictions in 15 bins, the temperature that minimizes a validation NLL, and the reliability
diagram drawn from them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from petvision.evaluation import calibration as cal


def test_ece_of_five_predictions_worked_by_hand():
    # 15 bins of width 1/15 = 0.0667: 0.55 falls in bin 8 (0.533, 0.6], 0.62 and 0.65 in bin 9
    # (0.6, 0.667], 0.95 and 0.99 in bin 14 (0.933, 1].
    confidence = np.array([0.55, 0.62, 0.65, 0.95, 0.99])
    correct = np.array([1, 0, 1, 1, 1])
    # bin 8: |1 - 0.55| = 0.45 x 1; bin 9: |0.5 - 0.635| x 2 = 0.27; bin 14: |1 - 0.97| x 2 = 0.06
    expected = (0.45 + 0.27 + 0.06) / 5
    rel = cal.reliability(confidence, correct)
    assert rel.ece == pytest.approx(expected)
    assert rel.counts.tolist() == [0] * 8 + [1, 2] + [0] * 4 + [2]
    assert rel.accuracy[9] == pytest.approx(0.5) and rel.confidence[9] == pytest.approx(0.635)
    assert math.isnan(rel.accuracy[0])  # an empty bin has no accuracy, not 0
    # A bin holds (low, high]: exactly 0.6 belongs to bin 8, not 9.
    assert cal.reliability(np.array([0.6]), np.array([1])).counts[8] == 1


def test_ece_of_logits_takes_the_predicted_class_probability():
    # Sigmoid logits as two classes (0, z): P(dog) = sigmoid(z). z = ln 3 -> P(dog) = 0.75,
    # predicted dog; z = -ln 3.5 -> P(dog) = 1/4.5, predicted cat with confidence 3.5/4.5.
    logits = cal.as_two_class_logits(np.array([math.log(3), -math.log(3.5)]))
    labels = np.array([1, 1])  # the first right, the second wrong
    # 0.75 and 0.778 both in bin 11 (0.733, 0.8]: mean confidence (0.75 + 0.778) / 2,
    # accuracy 0.5
    assert cal.expected_calibration_error(logits, labels) == pytest.approx(
        abs(0.5 - (0.75 + 3.5 / 4.5) / 2)
    )
    # At temperature 2, z/2: sqrt(3)/(1+sqrt(3)) = 0.634 for the dog and
    # sqrt(3.5)/(1+sqrt(3.5)) = 0.652 for the cat, both in bin 9 (0.6, 0.667]
    p1, p2 = math.sqrt(3) / (1 + math.sqrt(3)), math.sqrt(3.5) / (1 + math.sqrt(3.5))
    rel = cal.reliability_of_logits(logits, labels, temperature=2.0)
    assert rel.ece == pytest.approx(abs(0.5 - (p1 + p2) / 2))


def test_nll_worked_by_hand():
    logits = cal.as_two_class_logits(np.array([math.log(3), -math.log(3.5)]))
    labels = np.array([1, 1])
    assert cal.nll(logits, labels) == pytest.approx(-(math.log(0.75) + math.log(1 / 4.5)) / 2)


def test_the_temperature_fit_finds_the_nll_minimum_worked_by_hand():
    # Two predictions with logit z = 2 (dog), one right, one wrong, and one with z = -2 (cat),
    # right. With b = 1/T: NLL(b) = [ln(1+e^-2b) + ln(1+e^2b) + ln(1+e^-2b)] / 3. Setting its
    # derivative to zero: -2s(-2b) + 2s(2b) - 2s(-2b) = 0 with s the sigmoid, so
    # s(2b) = 2 s(-2b) = 2 (1 - s(2b)): s(2b) = 2/3, 2b = ln 2, T = 2 / ln 2.
    logits = cal.as_two_class_logits(np.array([2.0, 2.0, -2.0]))
    labels = np.array([1, 0, 0])
    fit = cal.fit_temperature(logits, labels)
    assert fit.fitted == pytest.approx(2 / math.log(2), rel=1e-8)
    assert fit.applied and fit.temperature == fit.fitted
    assert fit.nll_after < fit.nll_before
    # the minimum: no temperature nearby does better
    for t in (fit.fitted * 0.99, fit.fitted * 1.01):
        assert cal.nll(logits, labels, t) > fit.nll_after


def test_a_temperature_that_does_not_lower_the_nll_is_not_applied():
    # Logits already at their best temperature (the fit of the test above, scaled): T = 1.
    b = math.log(2) / 2
    logits = cal.as_two_class_logits(np.array([2.0, 2.0, -2.0]) * b)
    fit = cal.fit_temperature(logits, np.array([1, 0, 0]))
    assert fit.fitted == pytest.approx(1.0, rel=1e-8)
    assert not fit.applied and fit.temperature == 1.0 and fit.nll_after == fit.nll_before


def test_temperature_scaling_of_an_overconfident_softmax_model_lowers_ece():
    # Three classes; the true logits are a draw of a calibrated model, then multiplied by 3
    # (over-confident). The fitted temperature undoes the factor and the ECE drops.
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 1.5, size=(20000, 3))
    p = cal.softmax(true_logits)
    labels = np.array([rng.choice(3, p=row) for row in p])
    over = true_logits * 3.0
    fit = cal.fit_temperature(over[:10000], labels[:10000])
    assert fit.temperature == pytest.approx(3.0, rel=0.05)
    summary, before, after = cal.calibration_report(
        over[:10000], labels[:10000], over[10000:], labels[10000:]
    )
    assert summary["test_ece"] < 0.02 < summary["test_ece_before"]
    assert summary["temperature_applied"] and after.ece == summary["test_ece"]
    assert before.ece == summary["test_ece_before"]
    # per pixel: the same logits shaped as (images, height, width, classes) give the same fit
    pixels = cal.fit_temperature(
        over[:10000].reshape(100, 10, 10, 3), labels[:10000].reshape(100, 10, 10)
    )
    assert pixels.fitted == pytest.approx(fit.fitted)


def test_temperature_scaling_off_keeps_t_1():
    logits = cal.as_two_class_logits(np.array([2.0, 2.0, -2.0]))
    labels = np.array([1, 0, 0])
    summary, before, after = cal.calibration_report(
        logits, labels, logits, labels, temperature_scaling=False
    )
    assert summary["temperature"] == 1.0 and not summary["temperature_applied"]
    assert summary["fitted_temperature"] is None and summary["test_ece"] == before.ece == after.ece


def test_log_probabilities_are_logits_of_a_softmax_at_any_temperature():
    z = np.array([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    logp = cal.logits_of_probabilities(cal.softmax(z))
    np.testing.assert_allclose(cal.softmax(logp / 1.7), cal.softmax(z / 1.7), rtol=1e-12)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="3 predictions but 2 labels"):
        cal.nll(np.zeros((3, 2)), np.array([0, 1]))
    with pytest.raises(ValueError, match="no predictions"):
        cal.reliability(np.array([]), np.array([]))


def test_the_reliability_diagram_is_drawn(tmp_path):
    from PIL import Image

    from petvision.render import plots

    rel = cal.reliability(np.array([0.55, 0.62, 0.65, 0.95, 0.99]), np.array([1, 0, 1, 1, 1]))
    path = plots.reliability_diagram(
        {"before": rel, "after": rel}, tmp_path / "reliability.png", "test split"
    )
    with Image.open(path) as picture:
        assert picture.size[0] > picture.size[1] > 100  # two panels side by side
    assert rel.to_dict()["bins"][9] == {
        "low": pytest.approx(9 / 15),
        "high": pytest.approx(10 / 15),
        "count": 2,
        "confidence": pytest.approx(0.635),
        "accuracy": 0.5,
    }
