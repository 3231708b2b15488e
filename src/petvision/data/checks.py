"""Whether one image/trimap pair can be used, and the preprocess report of what was skipped.

The report names every file left out, by reason (:data:`SKIP_REASONS`), so a user can see what
the dataset folder held that the pipeline did not use.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from petvision.core.errors import DataError
from petvision.core.tasks import Task
from petvision.data import images, layout
from petvision.data.splits import ClassificationSplit

log = logging.getLogger("petvision.preprocess")

# Every reason a file is left out, in the report's order (only those that occurred are listed).
SKIP_REASONS = (
    "image_without_trimap",
    "trimap_without_image",
    "appledouble",
    "hidden_file",
    "mat_file",
    "other_file",
    "undecodable_image",
    "bad_trimap",
    "size_mismatch",
)
PLAIN_KIND = "jpeg"  # the expected kind: not named file by file in the report
# Files that are not data (the real annotations/trimaps/ holds a ._ twin of every trimap) are
# counted in full but named only up to this many per reason, to keep the report small.
MAX_STRAYS_NAMED = 20
STRAY_REASONS = ("appledouble", "hidden_file", "mat_file", "other_file")


# --------------------------------------------------------------------------- one pair


@dataclass(frozen=True)
class Checked:
    """One pair after the check pass: usable with its image ``kind``, or skipped for ``reason``."""

    stem: str
    kind: str | None = None
    reason: str | None = None
    detail: str = ""


def _named(root: Path, path: Path, exc: Exception) -> str:
    """``images/x.jpg: cannot decode (...)``: the file relative to the dataset, then why."""
    message, prefix = str(exc), f"{path}: "
    why = message[len(prefix) :] if message.startswith(prefix) else message
    return f"{path.relative_to(root)}: {why}"


def check_pair(root: Path, stem: str) -> Checked:
    lay = layout.Layout(root)
    image_path, trimap_path = lay.image_path(stem), lay.trimap_path(stem)
    try:
        rgb, kind = images.load_rgb(image_path)
    except DataError as exc:
        return Checked(stem, reason="undecodable_image", detail=_named(root, image_path, exc))
    try:
        trimap = images.load_trimap(trimap_path)
    except DataError as exc:
        return Checked(stem, reason="bad_trimap", detail=_named(root, trimap_path, exc))
    if rgb.shape[:2] != trimap.shape:
        (ih, iw), (th, tw) = rgb.shape[:2], trimap.shape
        return Checked(
            stem,
            reason="size_mismatch",
            detail=(
                f"{image_path.relative_to(root)}: {iw}x{ih} image, "
                f"{trimap_path.relative_to(root)}: {tw}x{th} trimap"
            ),
        )
    return Checked(stem, kind=kind)


# --------------------------------------------------------------------------- the report


def _stray_reason(relative: str) -> str:
    name = Path(relative).name
    if name.startswith("._"):
        return "appledouble"
    if name.startswith("."):
        return "hidden_file"
    if name.endswith(".mat"):
        return "mat_file"
    return "other_file"


def skipped_files(root: Path, found: layout.Scan, checked: list[Checked]) -> dict[str, list[str]]:
    lay = layout.Layout(root)
    named: dict[str, list[str]] = {reason: [] for reason in SKIP_REASONS}
    named["image_without_trimap"] = [
        str(lay.image_path(s).relative_to(root)) for s in found.images_without_trimap
    ]
    named["trimap_without_image"] = [
        str(lay.trimap_path(s).relative_to(root)) for s in found.trimaps_without_image
    ]
    for relative in found.ignored:
        named[_stray_reason(relative)].append(relative)
    for item in checked:
        if item.reason:
            named[item.reason].append(item.detail)
    return {reason: files for reason, files in named.items() if files}


def log_skipped(named: dict[str, list[str]]) -> None:
    for reason, files in named.items():
        shown = "; ".join(files[:5]) + (f"; ... ({len(files) - 5} more)" if len(files) > 5 else "")
        log.warning("skipped %d (%s): %s", len(files), reason, shown)


def make_report(
    root: Path,
    found: layout.Scan,
    checked: list[Checked],
    seg: dict[str, list[str]],
    cls: ClassificationSplit,
    named: dict[str, list[str]],
    notes: list[str],
) -> dict[str, Any]:
    """Numbers at the top, file names in lists under "files". `dvc metrics show` (and
    `dvc exp show`) display every number as a column and leave lists out, so the numbers are
    only those worth a column: sizes and settings are in index.json and params.yaml."""
    kinds = Counter(item.kind for item in checked if item.kind)
    by_kind: dict[str, list[str]] = {}
    for item in checked:
        if item.kind and item.kind != PLAIN_KIND:
            by_kind.setdefault(item.kind, []).append(
                str(layout.Layout(root).image_path(item.stem).relative_to(root))
            )
    return {
        "pairs_found": len(found.pairs),
        "usable_pairs": sum(kinds.values()),
        Task.segmentation: {split: len(stems) for split, stems in seg.items()},
        Task.classification: {
            **{split: len(stems) for split, stems in cls.splits.items()},
            "usable_cats": cls.available["cat"],
            "usable_dogs": cls.available["dog"],
            "shrink": round(cls.shrink, 4),
        },
        "converted": dict(sorted(kinds.items())),
        "skipped": {reason: len(files) for reason, files in named.items()},
        "files": {
            "converted": dict(sorted(by_kind.items())),
            "skipped": {
                reason: files
                if reason not in STRAY_REASONS or len(files) <= MAX_STRAYS_NAMED
                else [*files[:MAX_STRAYS_NAMED], f"... and {len(files) - MAX_STRAYS_NAMED} more"]
                for reason, files in named.items()
            },
        },
        "notes": notes,
    }
