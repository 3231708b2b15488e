"""Outputs that appear whole or not at all.

Every stage writes to a temporary name beside the final one and renames at the end, so a crash,
a kill or a bad input at any point leaves the old output or none: never a half-written one that
DVC could cache as good.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _tmp_sibling(final: Path, is_dir: bool) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    # The final suffix stays last: Keras and matplotlib choose the format from it.
    prefix, suffix = f".{final.stem}.", f".tmp{final.suffix}"
    if is_dir:
        made = tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=final.parent)
    else:
        handle, made = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=final.parent)
        os.close(handle)
    # mkstemp/mkdtemp make owner-only entries; outputs get the usual permissions instead.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(made, (0o777 if is_dir else 0o666) & ~umask)
    return Path(made)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces ``final``, on error it is removed."""
    final = Path(final)
    tmp = _tmp_sibling(final, is_dir=True)
    try:
        yield tmp
        if final.exists() or final.is_symlink():
            old = final.with_name(f".{final.name}.old")
            _remove(old)
            final.rename(old)
            tmp.rename(final)
            _remove(old)
        else:
            tmp.rename(final)
    except BaseException:
        _remove(tmp)
        raise


@contextlib.contextmanager
def atomic_file(final: Path) -> Iterator[Path]:
    """Yield a temporary file path beside ``final``; on success it is renamed over ``final``."""
    final = Path(final)
    tmp = _tmp_sibling(final, is_dir=False)
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        _remove(tmp)
        raise


def remove_stale_tmp(final: Path) -> None:
    """Remove the temporary siblings of ``final`` that a killed process left (a SIGKILL runs no
    cleanup). Only for outputs that one process writes at a time."""
    final = Path(final)
    if final.parent.is_dir():
        for path in final.parent.glob(f".{final.stem}.*.tmp{final.suffix}"):
            _remove(path)


def write_json(final: Path, data: Any) -> None:
    with atomic_file(Path(final)) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def write_text(final: Path, text: str) -> None:
    with atomic_file(Path(final)) as tmp:
        tmp.write_text(text, encoding="utf-8")
