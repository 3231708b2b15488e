"""petvision's Optuna sweeper for Hydra (``hydra/sweeper=petvision_optuna``).

Why not the official ``hydra-optuna-sweeper``: its newest release (1.3.0) requires
``optuna<3``, and Optuna 2.x's SQL storage fails on SQLAlchemy 2 (facebookresearch/hydra#2562),
which MLflow 3 brings; it also runs trials without access to Optuna's trial, so a trial cannot be
pruned (facebookresearch/hydra#1954). This sweeper keeps the official one's configuration keys
(sampler, direction, study_name, storage, n_trials, max_failure_rate, params in Hydra's sweep
syntax) and adds pruner, timeout, objective and task.

The search's driver and study side are here: :mod:`.sweeper` (the Hydra sweeper, one worker),
:mod:`.study` (storage, search space, sampler, budget) and :mod:`.report` (the search's end).
What runs inside a trial is :mod:`petvision.search`, the only part a stage imports. Every module
here is kept light at import (the heavy imports are inside functions) because Hydra imports every
plugin module at every start.
"""
