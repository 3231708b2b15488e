"""Do the probabilities mean what they say? Expected calibration error, the reliability diagram's
data, and temperature scaling.

* **ECE** (Guo et al. 2017, "On calibration of modern neural networks", ICML): the predictions are
  put in ``bins`` equal-width bins of their confidence (the probability of the predicted class),
  and ECE is the mean over bins of |accuracy - mean confidence|, weighted by the bin's share of
  the predictions. 15 bins, as in that paper. A classifier whose 0.8 is right 80 % of the time
  has an ECE near 0.
* **Temperature scaling** (the same paper): the logits divided by one number ``T`` fitted on the
  validation split by minimizing its negative log-likelihood. ``T > 1`` softens over-confident
  probabilities; the predicted class never changes, so accuracy does not either. The NLL is
  convex in ``1/T``, so Newton's method on ``1/T`` finds the minimum in a few steps.

Binary models (one sigmoid output) are handled as two classes with logits ``(0, z)``; the
segmentation model's pixels as independent predictions of ``C`` classes. Softmax is unchanged by
adding a constant to the logits, so the log-probabilities of a softmax output serve as logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ECE_BINS = 15
# Newton's method on the inverse temperature: stops when a step changes it by less than this.
_TOLERANCE = 1e-10
_MAX_STEPS = 100
# The inverse temperature is kept inside this range: beyond it a model's probabilities are all
# 0.5 (or all 0/1), and such a fit says the logits carry no information rather than a temperature.
_BETA_RANGE = (1e-3, 1e3)
# A fitted temperature is applied only when it lowers the validation NLL by more than this share:
# at T = 1 already optimal, rounding alone must not count as an improvement.
_MIN_GAIN = 1e-9


def as_two_class_logits(logits: np.ndarray) -> np.ndarray:
    """``(N,)`` sigmoid logits -> ``(N, 2)`` softmax logits ``(0, z)``: the same probabilities."""
    z = np.asarray(logits, dtype=np.float64).reshape(-1)
    return np.stack([np.zeros_like(z), z], axis=-1)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(logits))


def logits_of_probabilities(probabilities: np.ndarray, floor: float = 1e-30) -> np.ndarray:
    """Logits reproducing a softmax output: its log-probabilities (the floor keeps a probability
    that underflowed to 0 finite)."""
    return np.log(np.maximum(np.asarray(probabilities, dtype=np.float64), floor))


def _flat(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(..., C)`` logits and ``(...)`` integer labels as ``(M, C)`` and ``(M,)``."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64).reshape(-1)
    z = z.reshape(-1, z.shape[-1])
    if len(z) != len(y):
        raise ValueError(f"{len(z)} predictions but {len(y)} labels")
    return z, y


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true classes under ``softmax(logits / temperature)``."""
    z, y = _flat(logits, labels)
    logp = log_softmax(z / temperature)
    return float(-logp[np.arange(len(y)), y].mean())


@dataclass(frozen=True)
class Reliability:
    """The reliability diagram's data: per bin of confidence, how many predictions fall in it,
    their mean confidence and their accuracy (NaN in an empty bin), and the ECE."""

    edges: np.ndarray  # (bins + 1,) from 0 to 1
    counts: np.ndarray  # (bins,)
    confidence: np.ndarray  # (bins,)
    accuracy: np.ndarray  # (bins,)
    ece: float

    def to_dict(self) -> dict:
        return {
            "ece": self.ece,
            "bins": [
                {
                    "low": float(lo),
                    "high": float(hi),
                    "count": int(n),
                    "confidence": None if n == 0 else float(c),
                    "accuracy": None if n == 0 else float(a),
                }
                for lo, hi, n, c, a in zip(
                    self.edges[:-1], self.edges[1:], self.counts, self.confidence, self.accuracy
                )
            ],
        }


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> Reliability:
    """Bin ``confidence`` (the predicted class's probability) into ``bins`` equal-width bins of
    [0, 1]; a bin holds (low, high], the first [0, high]. ``correct``: whether each prediction
    was right."""
    conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
    right = np.asarray(correct).astype(np.float64).reshape(-1)
    if len(conf) != len(right):
        raise ValueError(f"{len(conf)} confidences but {len(right)} outcomes")
    if len(conf) == 0:
        raise ValueError("no predictions to measure calibration on")
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    sum_conf = np.bincount(index, weights=conf, minlength=bins)
    sum_right = np.bincount(index, weights=right, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(counts > 0, sum_conf / counts, np.nan)
        accuracy = np.where(counts > 0, sum_right / counts, np.nan)
    ece = float(np.abs(sum_right - sum_conf).sum() / len(conf))
    return Reliability(edges, counts, mean_conf, accuracy, ece)


def reliability_of_logits(
    logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0, bins: int = ECE_BINS
) -> Reliability:
    """:func:`reliability` of the top-label predictions of ``softmax(logits / temperature)``."""
    z, y = _flat(logits, labels)
    p = softmax(z / temperature)
    predicted = p.argmax(axis=-1)
    return reliability(p.max(axis=-1), predicted == y, bins)


def expected_calibration_error(
    logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0, bins: int = ECE_BINS
) -> float:
    return reliability_of_logits(logits, labels, temperature, bins).ece


@dataclass(frozen=True)
class TemperatureFit:
    temperature: float  # the fitted T (1.0 when the fit did not lower the NLL)
    fitted: float  # the minimizer found, applied or not
    nll_before: float  # validation NLL at T = 1
    nll_after: float  # validation NLL at ``temperature``
    applied: bool  # True when the fitted T lowered the validation NLL


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> TemperatureFit:
    """The temperature minimizing the NLL of ``labels`` under ``softmax(logits / T)``; kept only
    when it lowers the NLL at T = 1 (otherwise T = 1).

    With ``b = 1/T`` and ``p = softmax(b z)``: d NLL / db = mean(E_p[z] - z_y) and
    d² NLL / db² = mean(Var_p[z]) >= 0, so the NLL is convex in ``b`` and Newton's method, kept
    inside a bracket of the minimum, converges to it.
    """
    z, y = _flat(logits, labels)
    true_logit = z[np.arange(len(y)), y]

    def derivatives(b: float) -> tuple[float, float]:
        p = softmax(b * z)
        mean = (p * z).sum(-1)
        var = (p * z * z).sum(-1) - mean**2
        return float((mean - true_logit).mean()), float(np.maximum(var, 0.0).mean())

    low, high = _BETA_RANGE
    b = 1.0
    for _ in range(_MAX_STEPS):
        grad, curvature = derivatives(b)
        if grad > 0:  # the minimum lies below b
            high = b
        else:
            low = b
        step = grad / curvature if curvature > 0 else np.inf
        candidate = b - step
        if not (low < candidate < high):  # Newton left the bracket: bisect (geometrically) instead
            candidate = float(np.sqrt(low * high))
        if abs(candidate - b) < _TOLERANCE * max(1.0, b):
            b = candidate
            break
        b = candidate
    fitted = 1.0 / b
    before, after = nll(z, y, 1.0), nll(z, y, fitted)
    applied = after < before * (1.0 - _MIN_GAIN)
    return TemperatureFit(
        temperature=fitted if applied else 1.0,
        fitted=fitted,
        nll_before=before,
        nll_after=after if applied else before,
        applied=applied,
    )


def calibration_report(
    val_logits: np.ndarray,
    val_labels: np.ndarray,
    test_logits: np.ndarray,
    test_labels: np.ndarray,
    temperature_scaling: bool = True,
    bins: int = ECE_BINS,
) -> tuple[dict, Reliability, Reliability]:
    """Fit the temperature on validation (when ``temperature_scaling``), measure ECE and NLL on
    test before and after: the summary for metrics.json and the two reliability diagrams."""
    fit = fit_temperature(val_logits, val_labels) if temperature_scaling else None
    temperature = fit.temperature if fit is not None else 1.0
    before = reliability_of_logits(test_logits, test_labels, 1.0, bins)
    after = reliability_of_logits(test_logits, test_labels, temperature, bins)
    summary = {
        "bins": bins,
        "temperature": temperature,
        "temperature_scaling": bool(temperature_scaling),
        "temperature_applied": bool(fit is not None and fit.applied),
        "fitted_temperature": None if fit is None else fit.fitted,
        "val_nll_before": nll(val_logits, val_labels, 1.0),
        "val_nll_after": nll(val_logits, val_labels, temperature),
        "test_nll_before": nll(test_logits, test_labels, 1.0),
        "test_nll": nll(test_logits, test_labels, temperature),
        "test_ece_before": before.ece,
        "test_ece": after.ece,
    }
    return summary, before, after
