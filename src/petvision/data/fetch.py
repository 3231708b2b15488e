"""Getting the real Oxford-IIIT Pet archives: download, resume, verify, extract safely.

Plain functions the download stage calls (and tests call directly):

* :func:`fetch_archive` gets one archive into a cache folder from the first mirror that serves a
  good copy. It streams into ``<name>.part``, resumes a partial file with an HTTP ``Range``
  request, retries transient failures (dropped connections, timeouts, 5xx) with exponential
  backoff, moves on to the next mirror on a 404/403, and renames ``<name>.part`` to ``<name>``
  only once the size and the sha256 check out. A cached ``<name>`` is verified again before use.
* :func:`safe_extract` unpacks a tar archive (gzip or not, whatever the name says) and refuses
  any member that would land outside the target folder, any link and any device file.

Every failure a user can act on is a :class:`DownloadError` (network, checksum) or a
:class:`DataError` (an archive that is corrupt or unsafe) whose message names the URL, the file
or the member at fault.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import re
import shutil
import tarfile
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import requests
import urllib3
from tqdm import tqdm

from petvision.errors import DataError, DownloadError

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
PART_SUFFIX = ".part"
# 408 Request Timeout and 429 Too Many Requests heal by waiting, like the 5xx family.
TRANSIENT_STATUS = frozenset({408, 429})

__all__ = [
    "Archive",
    "RetryPolicy",
    "check_free_space",
    "fetch_archive",
    "mirror_url",
    "safe_extract",
    "sha256_of",
    "verify_file",
]


@dataclass(frozen=True)
class Archive:
    """One file to fetch: its name on the mirrors, its size in bytes and its sha256 (hex)."""

    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 5  # further attempts per mirror after consecutive failures without progress
    backoff_s: float = 2.0  # wait before retry k is backoff_s * 2**(k-1)
    timeout_s: float = 60.0  # connect timeout and the longest wait for the next bytes


class _Transient(Exception):
    """Worth retrying on the same mirror after a wait."""


class _MirrorFailed(Exception):
    """This mirror will not give a good copy (404, 403, wrong size, wrong checksum): try the next."""


# --------------------------------------------------------------------------- verification


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def verify_file(path: Path, archive: Archive) -> None:
    """Raise DownloadError naming the file unless it has the expected size and sha256."""
    size = path.stat().st_size
    if size != archive.size:
        raise DownloadError(
            f"{path}: size {size:,} bytes, expected {archive.size:,} bytes for {archive.name}"
        )
    actual = sha256_of(path)
    if actual != archive.sha256.lower():
        raise DownloadError(
            f"{path}: sha256 mismatch for {archive.name}: expected {archive.sha256.lower()}, got {actual}"
        )


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
    failures = 0
    while True:
        before = part.stat().st_size if part.exists() else 0
        try:
            _download_once(url, part, archive, policy.timeout_s)
            return
        except _Transient as exc:
            after = part.stat().st_size if part.exists() else 0
            # A flaky link that still moves the file forward is not failing: count only stalls.
            failures = 1 if after > before else failures + 1
            if failures > policy.retries:
                raise _MirrorFailed(
                    f"{url}: gave up after {policy.retries} retries: {exc}"
                ) from None
            wait = policy.backoff_s * 2 ** (failures - 1)
            log.warning(
                "%s: %s; retry %d/%d in %.1f s (have %s bytes)",
                url,
                exc,
                failures,
                policy.retries,
                wait,
                f"{after:,}",
            )
            time.sleep(wait)


def _reason(exc: BaseException) -> str:
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


def _is_name_resolution_error(exc: BaseException) -> bool:
    reason = (
        exc.args[0].reason
        if exc.args and isinstance(exc.args[0], urllib3.exceptions.MaxRetryError)
        else None
    )
    return isinstance(reason, urllib3.exceptions.NameResolutionError)


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


def _download_once(url: str, part: Path, archive: Archive, timeout_s: float) -> None:
    """One HTTP request: append to ``part`` from where it ends. Raises _Transient or _MirrorFailed."""
    offset = part.stat().st_size if part.exists() else 0
    # identity: a server that gzips the .tar.gz again on the fly would break size and checksum.
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        log.info("%s: resuming at byte %s of %s", url, f"{offset:,}", f"{archive.size:,}")
    else:
        log.info("%s: downloading %s bytes to %s", url, f"{archive.size:,}", part)

    try:
        response = requests.get(url, headers=headers, stream=True, timeout=(timeout_s, timeout_s))
    except (
        requests.exceptions.SSLError,
        requests.exceptions.TooManyRedirects,
        requests.exceptions.InvalidURL,
        requests.exceptions.MissingSchema,
        requests.exceptions.InvalidSchema,
    ) as exc:
        # A bad certificate, a redirect loop or a malformed URL does not heal by waiting.
        raise _MirrorFailed(f"{url}: {_reason(exc)}") from None
    except (requests.ConnectionError, requests.Timeout) as exc:
        if _is_name_resolution_error(exc):
            # Offline, or a host that no longer exists: retrying would only delay the next mirror.
            raise _MirrorFailed(f"{url}: cannot resolve the host ({_reason(exc)})") from None
        raise _Transient(f"cannot connect ({_reason(exc)})") from None

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
    written = offset
    with (
        open(part, mode) as f,
        tqdm(
            total=archive.size,
            initial=offset,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=archive.name,
            leave=False,
        ) as bar,
    ):
        try:
            # Raw bytes as sent: never let the client undo a Content-Encoding the file does not have.
            for chunk in response.raw.stream(CHUNK_BYTES, decode_content=False):
                written += len(chunk)
                if written > archive.size:
                    f.truncate(0)  # not the file we want: nothing here is worth resuming from
                    raise _MirrorFailed(
                        f"{url}: sent more than the expected {archive.size:,} bytes of {archive.name}"
                    )
                f.write(chunk)
                bar.update(len(chunk))
        except (
            urllib3.exceptions.HTTPError,
            requests.RequestException,
            ConnectionError,
            TimeoutError,
        ) as exc:
            raise _Transient(f"connection lost after {written:,} bytes ({_reason(exc)})") from None
        finally:
            f.flush()
            os.fsync(f.fileno())
    if written < archive.size:
        raise _Transient(f"the response ended after {written:,} of {archive.size:,} bytes")


# --------------------------------------------------------------------------- extraction


def _member_problem(member: tarfile.TarInfo) -> str | None:
    name = member.name
    parts = PurePosixPath(name).parts
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "has an absolute path"
    if ".." in parts or ".." in name.replace("\\", "/").split("/"):
        return "has a '..' component that escapes the target folder"
    if member.issym() or member.islnk():
        return f"is a {'symbolic' if member.issym() else 'hard'} link (to {member.linkname!r})"
    if member.ischr() or member.isblk() or member.isfifo():
        return "is a device or FIFO"
    if not (member.isfile() or member.isdir()):
        return "is not a regular file or folder"
    return None


def safe_extract(archive: Path, target: Path) -> int:
    """Extract every member of ``archive`` under ``target``; return the number of files written.

    Refuses, with a DataError naming the member, absolute paths, ``..`` components, links and
    device files. Members are checked one by one as the archive streams past (one pass over an
    800 MB gzip), so a refusal can come after earlier members were written under ``target``:
    call it inside an atomic folder, as the download stage does.
    """
    archive, target = Path(archive), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()
    files = 0
    try:
        # r:* because the "tar.gz" files may be plain tar.
        with (
            tarfile.open(archive, mode="r:*") as tar,
            tqdm(desc=f"extract {archive.name}", unit=" files", leave=False) as bar,
        ):
            for member in tar:
                problem = _member_problem(member)
                if problem is None and not (root / member.name).resolve().is_relative_to(root):
                    problem = "resolves outside the target folder"
                if problem:
                    raise DataError(f"{archive}: refusing member {member.name!r}: it {problem}")
                # The data filter is a second guard (and drops odd permission bits).
                tar.extract(member, root, filter="data")
                if member.isfile():
                    files += 1
                    bar.update()
    except tarfile.FilterError as exc:
        raise DataError(f"{archive}: refusing member {exc.tarinfo.name!r}: {exc}") from None
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(
            f"{archive}: corrupt or not a tar archive ({type(exc).__name__}: {exc})"
        ) from None
    log.info("%s: extracted %d files into %s", archive.name, files, target)
    return files
