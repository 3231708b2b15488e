"""One way to map a function over worker processes.

``concurrent.futures.ProcessPoolExecutor`` rather than ``multiprocessing.Pool``: a worker that dies
(killed for memory) raises ``BrokenProcessPool`` instead of hanging the map forever. Workers are
spawned, not forked: the caller may run threads (tqdm, TensorFlow, MLflow) that a fork would copy
in an unknown state.

Workers die with the process that started them: a SIGKILLed parent (or one that `dvc repro`'s
SIGTERM ended) would otherwise leave them running as orphans until they finish their whole share.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
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


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _kernel_signals_parent_death() -> bool:
    """Linux: have the kernel send this process SIGTERM when its parent dies. False elsewhere or
    when prctl fails."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid: int, interval: float = 1.0) -> None:
    """Where the kernel cannot signal it: a daemon thread that SIGTERMs this process once its
    parent is no longer ``parent_pid`` (an orphan is adopted by another process)."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


def _die_with_parent(parent_pid: int) -> None:
    if not _kernel_signals_parent_death():
        _watch_parent(parent_pid)
    # The parent may have died before prctl ran: the kernel would then never send the signal.
    elif os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGTERM)


def _init_worker(
    parent_pid: int, initializer: Callable[..., Any] | None, initargs: tuple[Any, ...]
) -> None:
    _die_with_parent(parent_pid)
    if initializer is not None:
        initializer(*initargs)


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
    # PR_SET_PDEATHSIG fires when the *thread* that started a worker ends. The pool starts its
    # workers at the first map, in the thread that calls it: map from the thread that holds the
    # block, not from a short-lived one.
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(os.getpid(), initializer, initargs),
    )
    try:
        yield lambda fn, items, chunksize=1: pool.map(fn, items, chunksize=chunksize)
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
