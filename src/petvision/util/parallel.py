"""One way to map a function over worker processes.

``concurrent.futures.ProcessPoolExecutor`` rather than ``multiprocessing.Pool``: a worker that dies
(killed for memory) raises ``BrokenProcessPool`` instead of hanging the map forever. Workers are
spawned, not forked: the caller may run threads (tqdm, TensorFlow, MLflow) that a fork would copy
in an unknown state.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Mapper(Protocol):
    def __call__(
        self, fn: Callable[[T], R], items: Iterable[T], chunksize: int = 1
    ) -> Iterator[R]: ...


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask), not all the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _in_process(fn: Callable[[T], R], items: Iterable[T], chunksize: int = 1) -> Iterator[R]:
    return map(fn, items)


@contextmanager
def process_map(
    workers: int, initializer: Callable[..., Any] | None = None, initargs: tuple[Any, ...] = ()
) -> Iterator[Mapper]:
    """A ``map(fn, items, chunksize)`` over ``workers`` processes, results in input order; with
    ``workers <= 1``, in this process (``initializer`` runs here then). Leaving the block on an
    error cancels the work not yet started."""
    if workers <= 1:
        if initializer is not None:
            initializer(*initargs)
        yield _in_process
        return
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=initializer,
        initargs=initargs,
    )
    try:
        yield lambda fn, items, chunksize=1: pool.map(fn, items, chunksize=chunksize)
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
