"""``data.source=local``: the Oxford-IIIT Pet dataset from a folder on this machine, no network.

``data.local.path`` names either

* an **extracted** copy: ``images/``, ``annotations/trimaps/`` and ``annotations/list.txt``
  (what the two archives unpack to), copied as it is into the download stage's output; or
* a folder holding the two **archives** (``data.oxford_pets.archives``: images.tar.gz and
  annotations.tar.gz), each verified against its size and sha256 *before* it is extracted, then
  unpacked by the download code's own safe extraction (:func:`petvision.data.archives.safe_extract`).

Either way the result is the folder the download stage writes for the other sources, so
preprocess sees no difference. The copy (rather than a link) keeps DVC, which makes its cached
files read-only, away from the user's own files.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

from petvision.core.errors import DataError, DownloadError
from petvision.data import layout
from petvision.data.archives import Archive, safe_extract, verify_file

log = logging.getLogger(__name__)

EXTRACTED, ARCHIVES = "extracted", "archives"
REQUIRED = (layout.IMAGES_DIR, layout.TRIMAPS_DIR, layout.LIST_FILE)


def kind_of(folder: Path, archives: Sequence[Archive]) -> str:
    """EXTRACTED or ARCHIVES; a DataError naming what is missing when the folder is neither."""
    if not folder.is_dir():
        raise DataError(f"data.local.path={folder}: no such folder")
    lay = layout.Layout(folder)
    present = {
        rel: p.exists()
        for rel, p in zip(REQUIRED, (lay.images_dir, lay.trimaps_dir, lay.list_file))
    }
    has_archive = [a.name for a in archives if (folder / a.name).is_file()]
    if all(present.values()):
        return EXTRACTED
    if has_archive and not any(present.values()):
        missing = [a.name for a in archives if a.name not in has_archive]
        if missing:
            raise DataError(
                f"data.local.path={folder}: holds {', '.join(has_archive)} but not "
                f"{', '.join(missing)}: both archives of the dataset are needed"
            )
        return ARCHIVES
    if any(present.values()):
        missing = [rel for rel, ok in present.items() if not ok]
        raise DataError(
            f"data.local.path={folder}: not a complete Oxford-IIIT Pet folder: no "
            f"{', '.join(missing)} (an extracted copy needs {', '.join(REQUIRED)})"
        )
    raise DataError(
        f"data.local.path={folder}: neither an extracted Oxford-IIIT Pet folder (no "
        f"{', '.join(REQUIRED)}) nor a folder holding its archives "
        f"({', '.join(a.name for a in archives)})"
    )


def copy_extracted(folder: Path, out: Path) -> None:
    """``images/`` and ``annotations/`` of ``folder`` into ``out``; links are followed, so the
    output holds files only."""
    for name in (layout.IMAGES_DIR, layout.TRIMAPS_DIR.split("/")[0]):
        shutil.copytree(folder / name, out / name, symlinks=False, copy_function=shutil.copyfile)


def extract_archives(folder: Path, archives: Sequence[Archive], out: Path) -> None:
    """Verify every archive first (size and sha256), then extract them all safely into ``out``."""
    for archive in archives:
        path = folder / archive.name
        log.info("%s: checking size and sha256", path)
        try:
            verify_file(path, archive)
        except DownloadError as exc:
            raise DataError(
                f"{exc}: not the original archive (data.oxford_pets.archives lists its size "
                "and sha256); nothing was extracted"
            ) from None
    for archive in archives:
        log.info("extracting %s", folder / archive.name)
        safe_extract(folder / archive.name, out)


def write(folder: Path, archives: Sequence[Archive], out: Path) -> str:
    """Fill ``out`` (an empty folder) from ``folder``; return the kind of folder it was."""
    kind = kind_of(folder, archives)
    if kind == EXTRACTED:
        log.info("copying the extracted dataset from %s", folder)
        copy_extracted(folder, out)
    else:
        extract_archives(folder, archives, out)
    return kind
