"""The learning rate over a run: constant (the book's way), or a linear warm-up to the peak
followed by a cosine decay to zero over the remaining steps (``<task>.train.schedule=cosine``).

Warm-up then cosine is what lets a short run use a high peak rate: the warm-up keeps the first
steps (fresh weights, batch-norm statistics still wrong) from diverging, and the decay settles the
weights at the end instead of leaving them jumping around the optimum, which with a constant rate
makes the best epoch's validation figures a matter of luck. The schedule is a function of the
optimizer's step counter, which Keras's backup saves and restores, so a resumed run continues on
the same curve.
"""

from __future__ import annotations

import math

import keras

from petvision.config import Schedule, TrainConfig

__all__ = ["learning_rate", "steps_per_epoch"]


def steps_per_epoch(examples: int, batch_size: int) -> int:
    """Optimizer steps in one epoch of ``examples`` in batches of ``batch_size`` (the last one
    partial, as ``inputs.batches`` makes it)."""
    return max(1, math.ceil(examples / batch_size))


def learning_rate(
    train: TrainConfig, steps: int | None = None
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """What to pass as an optimizer's ``learning_rate``: the configured rate itself for the
    constant schedule, else a schedule over ``train.epochs`` epochs of ``steps`` steps each."""
    if train.schedule == Schedule.constant:
        return train.learning_rate
    if steps is None or steps < 1:
        raise ValueError(f"the {train.schedule} schedule needs the steps per epoch, got {steps!r}")
    total = train.epochs * steps
    warmup = min(round(train.warmup_epochs * steps), total - 1)
    return keras.optimizers.schedules.CosineDecay(
        # Warm-up from a tenth of the peak, not from zero: a zero step would waste a batch.
        initial_learning_rate=train.learning_rate / 10 if warmup else train.learning_rate,
        decay_steps=total - warmup,
        alpha=0.0,
        warmup_target=train.learning_rate if warmup else None,
        warmup_steps=warmup,
    )
