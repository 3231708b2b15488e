"""Archives of the Oxford-IIIT Pet kind: what one is, whether a file is a good copy, and unpacking
it safely.

* :func:`verify_file` checks a file's size and sha256 against an :class:`Archive`.
* :func:`safe_extract` unpacks a tar archive (gzip or not, whatever the name says) and refuses
  any member that would land outside the target folder, any link and any device file.

Failures name the file or the member at fault: a :class:`DownloadError` for a file that is not
the expected copy, a :class:`DataError` for an archive that is corrupt or unsafe.
"""

from __future__ import annotations

import gzip
import logging
import re
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from petvision.core.errors import DataError, DownloadError
from petvision.util.hashing import file_digest

log = logging.getLogger(__name__)

__all__ = ["Archive", "safe_extract", "verify_file"]


@dataclass(frozen=True)
class Archive:
    """One file to fetch: its name on the mirrors, its size in bytes and its sha256 (hex)."""

    name: str
    size: int
    sha256: str


# --------------------------------------------------------------------------- verification


def verify_file(path: Path, archive: Archive) -> None:
    """Raise DownloadError naming the file unless it has the expected size and sha256."""
    size = path.stat().st_size
    if size != archive.size:
        raise DownloadError(
            f"{path}: size {size:,} bytes, expected {archive.size:,} bytes for {archive.name}"
        )
    actual = file_digest(path, "sha256")
    if actual != archive.sha256.lower():
        raise DownloadError(
            f"{path}: sha256 mismatch for {archive.name}: expected {archive.sha256.lower()}, got {actual}"
        )


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
