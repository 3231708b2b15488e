"""Tags that every run started inside a scope receives: how a hyperparameter search makes each
trial's run a child of its search's run without the stage knowing."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

# What runs_tagged() adds to the runs started in its scope (a search's trials), and their ids.
_scoped_tags: dict[str, str] = {}
_scoped_started: list[str] = []


@contextlib.contextmanager
def runs_tagged(tags: dict[str, str]) -> Iterator[list[str]]:
    """Every run a stage starts inside this scope gets ``tags`` too; yields the list of the ids
    of those runs. A hyperparameter search (``hydra_plugins.petvision_optuna_sweeper``) makes
    each trial's run a child of its search's run this way (``mlflow.parentRunId``), without the
    stage knowing."""
    global _scoped_started
    previous = dict(_scoped_tags), _scoped_started
    _scoped_tags.update(tags)
    started: list[str] = []
    _scoped_started = started
    try:
        yield started
    finally:
        _scoped_tags.clear()
        _scoped_tags.update(previous[0])
        _scoped_started = previous[1]


def tags() -> dict[str, str]:
    """The tags of the innermost scope (none outside a scope)."""
    return dict(_scoped_tags)


def record_started(run_id: str) -> None:
    """Record a run started in the current scope."""
    _scoped_started.append(run_id)
