"""Digests of files and of JSON-able values, streamed so that a large file is never read whole."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Protocol

CHUNK_BYTES = 1 << 20


class _Hash(Protocol):
    def update(self, data: bytes, /) -> None: ...


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file's bytes (``hashlib.file_digest`` streams it in blocks)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def update_with_file(digest: _Hash, path: Path) -> None:
    """Feed a file's bytes into a running digest, block by block (a digest over several files)."""
    with open(path, "rb") as f:
        while block := f.read(CHUNK_BYTES):
            digest.update(block)


def json_digest(value: Any) -> str:
    """The sha256 of a value's JSON with sorted keys: equal for equal dicts whatever their order."""
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()
