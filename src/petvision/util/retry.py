"""Calling again after a failure that heals by waiting, with exponential backoff.

Written here rather than taken from a library: the download counts only failures that made no
progress (a flaky link that still moves the file forward is not failing), which the common retry
libraries do not express without more code than this.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def with_retries(
    call: Callable[[], T],
    *,
    retryable: Callable[[BaseException], bool],
    retries: int,
    backoff_s: float,
    progressed: Callable[[], bool] | None = None,
    on_retry: Callable[[BaseException, int, float], None] | None = None,
) -> T:
    """``call()``, called again up to ``retries`` times while it raises what ``retryable`` accepts.

    Retry ``k`` (1, 2, ...) waits ``backoff_s * 2**(k-1)`` seconds, after
    ``on_retry(exc, k, wait)``. When ``progressed()`` says the failed call got somewhere, the
    count starts again at 1. The last failure is raised as it is.
    """
    failures = 0
    while True:
        try:
            return call()
        except Exception as exc:
            if not retryable(exc):
                raise
            failures = 1 if progressed is not None and progressed() else failures + 1
            if failures > retries:
                raise
            wait = backoff_s * 2 ** (failures - 1)
            if on_retry is not None:
                on_retry(exc, failures, wait)
            time.sleep(wait)
