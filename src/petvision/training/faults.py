"""Fault injection for the reliability tests: a real SIGKILL at a named point of a stage.

``PETVISION_KILL_AT=<point>`` (or ``<point>:<epoch>``, 1-based) makes the process kill itself
with SIGKILL when it reaches that point (of that epoch), so that no ``except``/``finally``, no
``atexit`` and no Keras ``on_train_end`` runs: exactly what an out-of-memory killer, a preempted
machine or ``kill -9`` does. Unset (always, outside the tests), every call is a dictionary
lookup and nothing else.

The points of a training epoch's end follow the commit protocol of :mod:`petvision.training.loop`:

- ``after_best_saved``: the improved model is saved as ``best-<epoch>.keras``; nothing else yet;
- ``mid_backup``: Keras's backup has copied its previous pair and written the new weights, not
  yet the epoch count that goes with them;
- ``after_backup``: the backup is complete, ``history.json`` (the commit) not yet written;
- ``after_commit``: the epoch is committed, not yet logged to MLflow;

and of the outputs (:meth:`petvision.training.session.TrainingSession.finish`):

- ``mid_outputs``: the first staged report file has been renamed into place, the others and
  the model not yet.
"""

from __future__ import annotations

import functools
import os
import signal
from collections.abc import Callable
from typing import Any, TypeVar

ENV = "PETVISION_KILL_AT"
POINTS = frozenset(
    {"after_best_saved", "mid_backup", "after_backup", "after_commit", "mid_outputs"}
)

F = TypeVar("F", bound=Callable[..., Any])


def _target() -> tuple[str, int | None] | None:
    spec = os.environ.get(ENV, "").strip()
    if not spec:
        return None
    name, _, epoch = spec.partition(":")
    # A misspelt point would never fire and a test would pass for the wrong reason: refuse it.
    if name not in POINTS or (epoch and not epoch.isdigit()):
        raise ValueError(f"{ENV}={spec!r}: expected one of {sorted(POINTS)}, optionally ':<epoch>'")
    return name, int(epoch) if epoch else None


def armed(point: str, epoch: int | None = None) -> bool:
    """Whether ``PETVISION_KILL_AT`` names this point (and this 1-based epoch, if it names one)."""
    target = _target()
    if target is None or target[0] != point:
        return False
    return target[1] is None or target[1] == epoch


def point(point: str, epoch: int | None = None) -> None:
    """Die here, by SIGKILL, if ``PETVISION_KILL_AT`` names this point."""
    if armed(point, epoch):
        os.kill(os.getpid(), signal.SIGKILL)


def after(function: F, name: str, epoch: int | None = None) -> F:
    """``function``, then :func:`point` (for a point inside a library's own sequence of writes)."""

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        result = function(*args, **kwargs)
        point(name, epoch)
        return result

    return call  # type: ignore[return-value]
