"""Hyperparameter search, the part that runs inside each trial.

A search is a Hydra multirun whose sweeper is the project's Optuna sweeper
(``hydra_plugins.petvision_optuna_sweeper``, which also holds the study side)::

    python -m petvision.train_xception -m hparams_search=classifier

The sweeper runs each trial as an ordinary stage job (Hydra's basic launcher runs jobs in the
sweeper's process), inside :func:`active_trial` (entered by the sweeper's ``study.trial_scope``).
While a trial is active, three small hooks change what the stage does, and nothing else:

* the training session adds :func:`keras_callbacks`: each epoch's validation value is reported
  to the trial, and Optuna's pruner may stop a hopeless trial there (``optuna.TrialPruned``);
* the stage's MLflow run becomes a child of the search's run
  (:func:`petvision.tracking.runs_tagged`);
* the stage's task function returns :func:`objective_value`, the validation value of the model
  the stage keeps (its best epoch by validation loss), which the sweeper tells the study.

Outside a trial (``dvc repro``, ``dvc exp run``, a plain run) every hook is a no-op. This is the
only part of the search a stage imports: the study side can change without rerunning a stage.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from petvision.core.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["ActiveTrial", "active", "active_trial", "keras_callbacks", "objective_value"]


@dataclass
class ActiveTrial:
    trial: Any  # optuna.Trial
    objective: str  # a Keras log key of the validation data, e.g. "val_accuracy"


_active: ActiveTrial | None = None


def active() -> ActiveTrial | None:
    """The trial the current job runs for, or None outside a search."""
    return _active


@contextlib.contextmanager
def active_trial(trial: Any, objective: str) -> Iterator[None]:
    """Make ``trial`` the one the stage's hooks serve (module docstring) while inside."""
    global _active
    if not objective.startswith("val_"):
        raise ConfigError(
            f"hydra.sweeper.objective={objective}: must name a validation value "
            "(val_<metric>, as Keras logs it each epoch)"
        )
    _active = ActiveTrial(trial, objective)
    try:
        yield
    finally:
        _active = None


def keras_callbacks() -> list[Any]:
    """The callbacks a training session adds to ``fit``: none outside a search."""
    if _active is None:
        return []
    return [_pruning_callback(_active.trial, _active.objective)]


def _pruning_callback(trial: Any, monitor: str) -> Any:
    import keras
    import optuna

    class ReportToTrial(keras.callbacks.Callback):
        """Report ``monitor`` after each epoch (step = 0-based epoch, as in MLflow) and stop the
        trial when the study's pruner says so. It runs after the epoch is committed and logged."""

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = logs or {}
            if monitor not in logs:
                raise ConfigError(
                    f"hydra.sweeper.objective={monitor}: training logs no such value; "
                    f"it logs {', '.join(sorted(k for k in logs if k.startswith('val_')))}"
                )
            value = float(logs[monitor])
            if not math.isfinite(value):
                return  # a NaN loss stops the stage itself (training.StopOnNonFinite)
            trial.report(value, step=epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(
                    f"trial {trial.number} pruned after epoch {epoch + 1}: {monitor}={value:.4f}"
                )

    return ReportToTrial()


def objective_value(summary: Any) -> float | None:
    """What a stage's task function returns: in a trial, the objective's value at the stage's
    best epoch (the model it keeps); None otherwise, as before."""
    if _active is None:
        return None
    name = _active.objective.removeprefix("val_")
    values = summary.get("val", {}) if isinstance(summary, dict) else {}
    if name not in values:
        raise ConfigError(
            f"hydra.sweeper.objective={_active.objective}: the stage's best epoch has no "
            f"such value; it has {', '.join('val_' + k for k in sorted(values))}"
        )
    return float(values[name])
