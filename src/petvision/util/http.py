"""Streaming an HTTP response into a file, and saying in a few words why a request failed.

The two downloads of the project (the dataset archives, ImageNet Xception's weights) both copy
the body as the server sent it, with a progress bar and bounded waits, and verify a digest after.
"""

from __future__ import annotations

import os
from typing import IO

import requests
import urllib3
from tqdm import tqdm

CHUNK_BYTES = 1 << 20
# identity: a server that gzips a .tar.gz or .h5 again on the fly would break size and digest.
HEADERS = {"Accept-Encoding": "identity"}


class TooLong(Exception):
    """The response went on past the size the file should have."""


class ConnectionLost(Exception):
    """The connection broke or went silent in the middle of the body."""

    def __init__(self, written: int, reason: str) -> None:
        super().__init__(f"connection lost after {written:,} bytes ({reason})")
        self.written = written


def get(url: str, timeout_s: float, headers: dict[str, str] | None = None) -> requests.Response:
    """A streamed GET whose every wait (connect, and each read) is bounded by ``timeout_s``."""
    return requests.get(
        url, headers={**HEADERS, **(headers or {})}, stream=True, timeout=(timeout_s, timeout_s)
    )


def stream_into(
    response: requests.Response,
    f: IO[bytes],
    *,
    desc: str,
    total: int | None,
    initial: int = 0,
    limit: int | None = None,
) -> int:
    """Append the body to ``f`` as sent (no Content-Encoding undone) with a progress bar, and
    fsync it; return ``initial`` plus the bytes written. :class:`TooLong` past ``limit`` bytes,
    :class:`ConnectionLost` when the network fails halfway."""
    written = initial
    with tqdm(
        total=total,
        initial=initial,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=desc,
        leave=False,
    ) as bar:
        try:
            for chunk in response.raw.stream(CHUNK_BYTES, decode_content=False):
                written += len(chunk)
                if limit is not None and written > limit:
                    raise TooLong(f"sent more than the expected {limit:,} bytes")
                f.write(chunk)
                bar.update(len(chunk))
        except (
            urllib3.exceptions.HTTPError,
            requests.RequestException,
            ConnectionError,
            TimeoutError,
        ) as exc:
            raise ConnectionLost(written, reason(exc)) from None
        finally:
            f.flush()
            os.fsync(f.fileno())
    return written


def reason(exc: BaseException) -> str:
    """The root cause in a few words: requests wraps urllib3, which wraps the socket error."""
    inner = exc
    if (
        exc.args
        and isinstance(exc.args[0], urllib3.exceptions.MaxRetryError)
        and exc.args[0].reason
    ):
        inner = exc.args[0].reason
    while inner.__cause__ is not None:
        inner = inner.__cause__
    if isinstance(inner, OSError) and inner.strerror:
        return inner.strerror
    return f"{type(inner).__name__}: {inner}"


def is_name_resolution_error(exc: BaseException) -> bool:
    """Offline, or a host that no longer exists: waiting will not help."""
    cause = (
        exc.args[0].reason
        if exc.args and isinstance(exc.args[0], urllib3.exceptions.MaxRetryError)
        else None
    )
    return isinstance(cause, urllib3.exceptions.NameResolutionError)
