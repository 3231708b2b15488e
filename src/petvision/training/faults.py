"""Fault injection for the reliability tests: a real SIGKILL at a named point of a stage.

``PETVISION_KILL_AT=<point>`` (or ``<point>:<epoch>``, 1-based) makes the process kill itself
with SIGKILL when it reaches that point (of that epoch), so that no ``except``/``finally``, no
``atexit`` and no Keras ``on_train_end`` runs: exactly what an out-of-memory killer, a preempted
machine or ``kill -9`` does. Unset (always, outside the tests), every call is a dictionary
lookup and nothing else. Each training stage checks the switch first thing
(:func:`announce`, from :func:`petvision.training.runtime.setup`): a malformed value stops it at
once, and a set one is logged as a warning, so that a variable inherited by accident (an exported
shell, a ``dvc queue`` worker) cannot kill a real run without a word; the kill itself is logged
too.

The points of a training epoch's end follow the commit protocol of :mod:`petvision.training.loop`:

- ``after_best_saved``: the improved model is saved as ``best-<epoch>.keras``; nothing else yet;
- ``mid_backup``: Keras's backup has copied its previous pair and written the new weights, not
  yet the epoch count that goes with them;
- ``after_backup``: the backup is complete, ``history.json`` (the commit) not yet written;
- ``mid_commit``: inside the commit's atomic write: the new ``history.json`` is written whole
  under its temporary name, not yet renamed over the old one;
- ``after_commit``: the epoch is committed, not yet logged to MLflow;

and of the outputs (:meth:`petvision.training.session.TrainingSession.finish`):

- ``mid_outputs``: the first staged report file has been renamed into place, the others and
  the model not yet.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
from collections.abc import Callable
from typing import Any, TypeVar

from petvision.core.errors import ConfigError

log = logging.getLogger(__name__)

ENV = "PETVISION_KILL_AT"
POINTS = frozenset(
    {"after_best_saved", "mid_backup", "after_backup", "mid_commit", "after_commit", "mid_outputs"}
)

F = TypeVar("F", bound=Callable[..., Any])


def _target() -> tuple[str, int | None] | None:
    spec = os.environ.get(ENV, "").strip()
    if not spec:
        return None
    name, _, epoch = spec.partition(":")
    # A misspelt point would never fire and a test would pass for the wrong reason: refuse it.
    if name not in POINTS or (epoch and not (epoch.isdigit() and int(epoch) >= 1)):
        raise ConfigError(
            f"{ENV}={spec!r}: expected one of {', '.join(sorted(POINTS))}, optionally "
            "':<epoch>' (1-based). It kills the process on purpose, for the reliability tests: "
            f"unset it (unset {ENV}) for a real run"
        )
    return name, int(epoch) if epoch else None


def _where(target: tuple[str, int | None]) -> str:
    name, epoch = target
    return f"{name}" + (f" of epoch {epoch}" if epoch is not None else "")


def announce() -> None:
    """At a training stage's start: a malformed switch is a :class:`ConfigError` now, not when the
    first point is reached (after a whole epoch); a set one is logged as a warning naming its point."""
    target = _target()
    if target is not None:
        log.warning(
            "%s=%s is set: this process will kill itself with SIGKILL at %s (fault injection "
            "for the reliability tests; unset %s for a real run)",
            ENV,
            os.environ[ENV].strip(),
            _where(target),
            ENV,
        )


def armed(point: str, epoch: int | None = None) -> bool:
    """Whether ``PETVISION_KILL_AT`` names this point (and this 1-based epoch, if it names one)."""
    target = _target()
    if target is None or target[0] != point:
        return False
    return target[1] is None or target[1] == epoch


def point(point: str, epoch: int | None = None) -> None:
    """Die here, by SIGKILL, if ``PETVISION_KILL_AT`` names this point."""
    if armed(point, epoch):
        log.warning("%s: killing this process (SIGKILL) at %s", ENV, _where((point, epoch)))
        _die()


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def after(function: F, name: str, epoch: int | None = None) -> F:
    """``function``, then :func:`point` (for a point inside a library's own sequence of writes)."""

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        result = function(*args, **kwargs)
        point(name, epoch)
        return result

    return call  # type: ignore[return-value]
