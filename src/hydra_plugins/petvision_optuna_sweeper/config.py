"""The sweeper's configuration schema, registered as ``hydra/sweeper=petvision_optuna``."""

# No ``from __future__ import annotations``: Hydra imports plugins without registering them in
# sys.modules, where dataclasses would look string annotations up.
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class PetvisionOptunaSweeperConf:
    _target_: str = "hydra_plugins.petvision_optuna_sweeper.sweeper.PetvisionOptunaSweeper"
    # sampler and pruner reach the sweeper as configurations: it makes a sampler per trial.
    _recursive_: bool = False
    # Which stage's MLflow experiment holds the search's run (tracking.experiments.<task>).
    task: str = "classification"
    # The validation value each epoch reports and the trial returns (a Keras log key).
    objective: str = "val_accuracy"
    direction: str = "maximize"
    study_name: str | None = None
    # Relative SQLite paths are taken against the project root; any SQLAlchemy URL for a team.
    storage: str = "sqlite:///optuna.db"
    # The budget, study-wide (all workers together): trials, seconds per worker, or both.
    n_trials: int | None = 20
    timeout: float | None = None
    # Stop this worker when more than this share of its trials failed (0: at the first failure).
    max_failure_rate: float = 0.0
    heartbeat_interval: int = 60
    sampler: Any = field(
        default_factory=lambda: {"_target_": "optuna.samplers.TPESampler", "seed": None}
    )
    pruner: Any = field(default_factory=lambda: {"_target_": "optuna.pruners.MedianPruner"})
    params: dict[str, Any] | None = None


ConfigStore.instance().store(
    group="hydra/sweeper",
    name="petvision_optuna",
    node=PetvisionOptunaSweeperConf,
    provider="petvision",
)
