"""The learning-rate schedule option: constant by default (the book's way), warm-up then cosine on
request, checked against the formula computed here by hand; bad values name their key."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from petvision import config
from petvision.config import TrainConfig
from petvision.core.errors import ConfigError
from petvision.training import loop, schedules


def _train(**changes) -> TrainConfig:
    base = {
        "optimizer": "adam",
        "learning_rate": 2e-3,
        "batch_size": 8,
        "epochs": 4,
        "early_stopping_patience": 0,
        "schedule": "cosine",
        "warmup_epochs": 0.5,
    }
    return TrainConfig(**{**base, **changes})


def test_constant_is_the_default_and_passes_the_rate_through():
    assert (
        TrainConfig(
            optimizer="adam", learning_rate=1e-3, batch_size=8, epochs=2, early_stopping_patience=0
        ).schedule
        == "constant"
    )
    base = config.load(config.compose(["experiment=paper"]))
    assert base.segmentation.train.schedule == base.classification.train.schedule == "constant"
    assert schedules.learning_rate(_train(schedule="constant")) == 2e-3
    optimizer = loop.make_optimizer(_train(schedule="constant"))
    assert math.isclose(float(optimizer.learning_rate), 2e-3, rel_tol=1e-6)


def test_the_quick_preset_uses_warmup_and_cosine():
    quick = config.load(config.compose(["experiment=quick"]))
    for train in (quick.segmentation.train, quick.classification.train):
        assert train.schedule == "cosine" and 0 < train.warmup_epochs < train.epochs


def test_cosine_warms_up_linearly_then_decays_to_zero():
    steps, train = 10, _train()
    schedule = schedules.learning_rate(train, steps)
    total, warmup = train.epochs * steps, 5  # 0.5 epoch of 10 steps
    peak, start = train.learning_rate, train.learning_rate / 10

    def expected(step: int) -> float:
        if step < warmup:
            return start + (peak - start) * step / warmup
        return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))

    for step in (0, 2, 4, 5, 12, 25, 39, total):
        assert math.isclose(float(schedule(step)), expected(step), rel_tol=1e-4, abs_tol=1e-9), step
    assert float(schedule(total)) < 1e-9


def test_the_schedule_follows_the_optimizer_steps_so_a_resume_continues_on_the_curve():
    """The rate is read from the optimizer's step counter, which Keras's backup restores."""
    train = _train(warmup_epochs=0)
    optimizer = loop.make_optimizer(train, steps_per_epoch=3)
    weight = keras.Variable(np.ones(2, np.float32))
    optimizer.build([weight])
    for _ in range(5):
        optimizer.apply_gradients([(keras.ops.ones_like(weight), weight)])
    assert int(optimizer.iterations) == 5
    now = float(optimizer.learning_rate)
    assert math.isclose(now, float(schedules.learning_rate(train, 3)(5)), rel_tol=1e-5)
    assert now < train.learning_rate


def test_steps_per_epoch_counts_the_partial_batch():
    assert schedules.steps_per_epoch(1300, 8) == 163
    assert schedules.steps_per_epoch(16, 8) == 2
    assert schedules.steps_per_epoch(3, 8) == 1


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("segmentation.train.schedule=linear", "segmentation.train.schedule"),
        ("classification.train.warmup_epochs=100", "classification.train.warmup_epochs"),
        ("segmentation.train.warmup_epochs=-1", "segmentation.train.warmup_epochs"),
    ],
)
def test_bad_schedule_settings_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config.load(config.compose([override]))
