"""A content digest of the data a run read: the same files give the same digest wherever they lie."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from pathlib import Path

from petvision.core.errors import DataError
from petvision.util.hashing import update_with_file

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- data


def data_digest(files: Iterable[Path]) -> str:
    """A short content digest of input files: their names, sizes and bytes (streamed), in name
    order, so the same data gives the same digest wherever it lies."""
    digest = hashlib.sha256()
    for path in sorted((Path(p) for p in files), key=lambda p: (p.name, str(p))):
        try:
            size = path.stat().st_size
            digest.update(f"{path.name}\0{size}\0".encode())
            update_with_file(digest, path)
        except OSError as exc:
            raise DataError(
                f"{path}: cannot read it to compute the data digest ({exc.strerror})"
            ) from None
    return digest.hexdigest()[:16]
