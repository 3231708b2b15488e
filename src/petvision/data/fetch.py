"""Getting the real Oxford-IIIT Pet archives: download, resume, verify, extract safely.

Plain functions the download stage calls (and tests call directly):

* :func:`fetch_archive` gets one archive into a cache folder from the first mirror that serves a
  good copy. It streams into ``<name>.part``, resumes a partial file with an HTTP ``Range``
  request, retries transient failures (dropped connections, timeouts, 5xx) with exponential
  backoff, moves on to the next mirror on a 404/403, and renames ``<name>.part`` to ``<name>``
  only once the size and the sha256 check out. A cached ``<name>`` is verified again before use.

Every failure a user can act on is a :class:`DownloadError` (network, size, checksum) whose
message names the URL or the file at fault. What an archive is, its verification and its safe
extraction are in :mod:`petvision.data.archives`.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import requests

from petvision.core.errors import DownloadError
from petvision.data.archives import Archive, verify_file
from petvision.util import http
from petvision.util.retry import with_retries

log = logging.getLogger(__name__)

PART_SUFFIX = ".part"
# 408 Request Timeout and 429 Too Many Requests heal by waiting, like the 5xx family.
TRANSIENT_STATUS = frozenset({408, 429})

__all__ = [
    "Archive",
    "RetryPolicy",
    "check_free_space",
    "fetch_archive",
    "mirror_url",
    "verify_file",
]


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 5  # further attempts per mirror after consecutive failures without progress
    backoff_s: float = 2.0  # wait before retry k is backoff_s * 2**(k-1)
    timeout_s: float = 60.0  # connect timeout and the longest wait for the next bytes


class _Transient(Exception):
    """Worth retrying on the same mirror after a wait."""


class _MirrorFailed(Exception):
    """This mirror will not give a good copy (404, 403, wrong size, wrong checksum): try the next."""


# --------------------------------------------------------------------------- space


def check_free_space(folder: Path, needed: int) -> None:
    """Fail early, naming the folder, rather than with ENOSPC halfway through a large file."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise DownloadError(
            f"{folder}: {needed:,} bytes needed for the download, only {free:,} bytes free; "
            f"free some space or point paths.downloads elsewhere"
        )


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- download


def mirror_url(mirror: str, name: str) -> str:
    """``<mirror><name>``; a mirror written without its trailing slash gets one."""
    return mirror.rstrip("/") + "/" + name


def fetch_archive(
    archive: Archive, mirrors: Sequence[str], cache_dir: Path, policy: RetryPolicy = RetryPolicy()
) -> Path:
    """Return ``cache_dir/<name>``, verified; download it from the first mirror that serves a good copy.

    A partial ``<name>.part`` left by an interrupted run is resumed. A cached ``<name>`` whose
    checksum is wrong is removed and downloaded again.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    final = cache_dir / archive.name
    part = cache_dir / (archive.name + PART_SUFFIX)

    if final.exists():
        try:
            verify_file(final, archive)
            log.info("%s: cached copy verified (%s)", archive.name, final)
            return final
        except DownloadError as exc:
            log.warning("%s; removing it and downloading again", exc)
            _remove(final)

    if part.exists() and part.stat().st_size >= archive.size:
        # A run that died between the last byte and the rename: check it rather than re-fetch.
        if part.stat().st_size == archive.size and _verifies(part, archive):
            part.replace(final)
            log.info("%s: completed partial download verified", archive.name)
            return final
        log.warning("%s: partial file %s is not a good copy; starting over", archive.name, part)
        _remove(part)

    have = part.stat().st_size if part.exists() else 0
    check_free_space(cache_dir, archive.size - have)

    failures = []
    for mirror in mirrors:
        url = mirror_url(mirror, archive.name)
        try:
            _download_with_retries(url, part, archive, policy)
            verify_file(part, archive)
        except _MirrorFailed as exc:
            log.warning("%s; trying the next mirror", exc)
            failures.append(str(exc))
            continue
        except DownloadError as exc:
            # Never resume from a file that did not verify: its bytes are wrong somewhere.
            _remove(part)
            message = f"{exc} (from {url}; the file was removed)"
            log.warning("%s; trying the next mirror", message)
            failures.append(message)
            continue
        part.replace(final)
        log.info("%s: downloaded and verified from %s", archive.name, url)
        return final

    if len(failures) == 1:
        raise DownloadError(failures[0])
    raise DownloadError(f"{archive.name}: no mirror gave a good copy: " + "; ".join(failures))


def _verifies(path: Path, archive: Archive) -> bool:
    try:
        verify_file(path, archive)
    except DownloadError:
        return False
    return True


def _download_with_retries(url: str, part: Path, archive: Archive, policy: RetryPolicy) -> None:
    """Bring ``part`` up to the archive's size from ``url``, resuming and retrying as needed."""
    sizes = [_size(part)]

    def attempt() -> None:
        sizes.append(_size(part))
        _download_once(url, part, archive, policy.timeout_s)

    def log_retry(exc: BaseException, k: int, wait: float) -> None:
        log.warning(
            "%s: %s; retry %d/%d in %.1f s (have %s bytes)",
            url,
            exc,
            k,
            policy.retries,
            wait,
            f"{_size(part):,}",
        )

    try:
        with_retries(
            attempt,
            retryable=lambda exc: isinstance(exc, _Transient),
            retries=policy.retries,
            backoff_s=policy.backoff_s,
            # A flaky link that still moves the file forward is not failing: count only stalls.
            progressed=lambda: _size(part) > sizes[-1],
            on_retry=log_retry,
        )
    except _Transient as exc:
        raise _MirrorFailed(f"{url}: gave up after {policy.retries} retries: {exc}") from None


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


def _download_once(url: str, part: Path, archive: Archive, timeout_s: float) -> None:
    """One HTTP request: append to ``part`` from where it ends. Raises _Transient or _MirrorFailed."""
    offset = _size(part)
    headers = {}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        log.info("%s: resuming at byte %s of %s", url, f"{offset:,}", f"{archive.size:,}")
    else:
        log.info("%s: downloading %s bytes to %s", url, f"{archive.size:,}", part)

    try:
        response = http.get(url, timeout_s, headers)
    except (
        requests.exceptions.SSLError,
        requests.exceptions.TooManyRedirects,
        requests.exceptions.InvalidURL,
        requests.exceptions.MissingSchema,
        requests.exceptions.InvalidSchema,
    ) as exc:
        # A bad certificate, a redirect loop or a malformed URL does not heal by waiting.
        raise _MirrorFailed(f"{url}: {http.reason(exc)}") from None
    except (requests.ConnectionError, requests.Timeout) as exc:
        if http.is_name_resolution_error(exc):
            # Offline, or a host that no longer exists: retrying would only delay the next mirror.
            raise _MirrorFailed(f"{url}: cannot resolve the host ({http.reason(exc)})") from None
        raise _Transient(f"cannot connect ({http.reason(exc)})") from None

    with response:
        status = response.status_code
        if status == 206 and offset:
            mode = "ab"
            _check_content_range(url, response, offset, archive, part)
        elif status == 200:
            if offset:
                log.info("%s: the server ignored the Range request; restarting from byte 0", url)
            mode, offset = "wb", 0
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) != archive.size:
                raise _MirrorFailed(
                    f"{url}: serves {int(length):,} bytes, expected {archive.size:,} for {archive.name}"
                )
        elif status == 416:
            # Our partial file does not fit the server's file: it cannot be resumed.
            _remove(part)
            raise _Transient("416 Range Not Satisfiable for the partial file; starting over")
        elif status >= 500 or status in TRANSIENT_STATUS:
            raise _Transient(f"HTTP {status} {response.reason}")
        else:
            raise _MirrorFailed(f"{url}: HTTP {status} {response.reason}")

        _stream_to(response, part, mode, offset, archive, url)


def _check_content_range(
    url: str, response: requests.Response, offset: int, archive: Archive, part: Path
) -> None:
    match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
    if not match or int(match.group(1)) != offset:
        # Appending bytes from the wrong place would corrupt the file silently.
        _remove(part)
        got = response.headers.get("Content-Range")
        raise _Transient(
            f"206 with Content-Range {got!r} for a request from byte {offset}; starting over"
        )
    total = match.group(3)
    if total != "*" and int(total) != archive.size:
        raise _MirrorFailed(
            f"{url}: serves {int(total):,} bytes, expected {archive.size:,} for {archive.name}"
        )


def _stream_to(
    response: requests.Response, part: Path, mode: str, offset: int, archive: Archive, url: str
) -> None:
    with open(part, mode) as f:
        try:
            written = http.stream_into(
                response,
                f,
                desc=archive.name,
                total=archive.size,
                initial=offset,
                limit=archive.size,
            )
        except http.TooLong:
            f.truncate(0)  # not the file we want: nothing here is worth resuming from
            raise _MirrorFailed(
                f"{url}: sent more than the expected {archive.size:,} bytes of {archive.name}"
            ) from None
        except http.ConnectionLost as exc:
            raise _Transient(str(exc)) from None
    if written < archive.size:
        raise _Transient(f"the response ended after {written:,} of {archive.size:,} bytes")
