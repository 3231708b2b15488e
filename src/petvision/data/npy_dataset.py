"""The preprocessed dataset on disk: which ``.npy`` files exist, their shapes, and safe loading.

    <npy>/segmentation/{train,val}_images.npy          (N, S, S, 3) uint8
    <npy>/segmentation/{train,val}_masks.npy           (N, S, S, 1) uint8, 0 = pet, 1 = background, 2 = border
    <npy>/classification/{train,val,test}_images.npy   (N, C, C, 3) uint8
    <npy>/classification/{train,val,test}_labels.npy   (N,) uint8, 0 = cat, 1 = dog
    <npy>/classification/{train,val,test}_masks.npy    (N, C, C, 1) uint8 (for Grad-CAM localization)
    <npy>/<task>/index.json                            stems per split, image size, counts

Masks are the trimap minus one, as in the book. Preprocess writes these files; training and
visualize read them memory-mapped, never with pickle, and reject a truncated file or one of the
wrong shape with a message naming it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from petvision.core.errors import DataError
from petvision.core.tasks import Task

SPLITS = {Task.segmentation: ("train", "val"), Task.classification: ("train", "val", "test")}
ARRAYS = {
    Task.segmentation: ("images", "masks"),
    Task.classification: ("images", "labels", "masks"),
}
INDEX_FILE = "index.json"


def array_path(root: Path, task: Task, split: str, array: str) -> Path:
    return Path(root) / task / f"{split}_{array}.npy"


def expected_shape(array: str, count: int, size: int) -> tuple[int, ...]:
    return {"images": (count, size, size, 3), "masks": (count, size, size, 1), "labels": (count,)}[
        array
    ]


def open_array(path: Path, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """A read-only memory map of a uint8 ``.npy`` file, checked against ``shape`` when given."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: missing; run the preprocess stage (dvc repro preprocess)")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npy file ({exc}); rerun preprocess") from None
    if array.dtype != np.uint8:
        raise DataError(f"{path}: dtype {array.dtype}, expected uint8; rerun preprocess")
    if shape is not None and tuple(array.shape) != tuple(shape):
        raise DataError(
            f"{path}: shape {tuple(array.shape)}, expected {tuple(shape)}; rerun preprocess"
        )
    return array


@dataclass(frozen=True)
class Split:
    """One split of one task, memory-mapped: ``images`` always, ``masks`` and/or ``labels``."""

    task: Task
    name: str
    stems: tuple[str, ...]
    images: np.ndarray
    masks: np.ndarray | None = None
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.stems)

    def require(self, field: str) -> np.ndarray:
        """``masks`` or ``labels``, which the task's index says this split holds."""
        value = getattr(self, field)
        if value is None:
            raise DataError(f"{self.task}/{self.name}: no {field} in this split; rerun preprocess")
        return value


def read_index(root: Path, task: Task) -> dict:
    path = Path(root) / task / INDEX_FILE
    if not path.is_file():
        raise DataError(f"{path}: missing; run the preprocess stage (dvc repro preprocess)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); rerun preprocess") from None


def load_split(root: Path, task: Task, split: str) -> Split:
    """Open one split, checking every array's shape against the index."""
    if split not in SPLITS[task]:
        raise ValueError(f"{task} has splits {SPLITS[task]}, not {split!r}")
    index = read_index(root, task)
    stems = tuple(index["splits"][split])
    size = int(index["image_size"])
    arrays = {
        name: open_array(
            array_path(root, task, split, name), expected_shape(name, len(stems), size)
        )
        for name in ARRAYS[task]
    }
    return Split(task=task, name=split, stems=stems, **arrays)


def make_index(task: Task, image_size: int, splits: dict[str, list[str]], **extra: object) -> dict:
    """The content of index.json (the caller writes it atomically with the arrays); ``extra``
    keys (how the arrays were made: interpolation, seed...) are recorded before the stem lists."""
    return {
        "task": task,
        "image_size": image_size,
        "counts": {name: len(stems) for name, stems in splits.items()},
        **extra,
        "splits": splits,
    }


def check_image_size(split: Split, expected: int, key: str) -> None:
    """The arrays on disk must match the configured size; otherwise preprocess is out of date."""
    actual = split.images.shape[1]
    if actual != expected:
        raise DataError(
            f"{split.task}/{split.name}_images.npy holds {actual}x{actual} images but {key}={expected}; "
            "rerun preprocess (dvc repro, or python -m petvision.preprocess with the same overrides)"
        )


def split_files(root: Path, split: Split) -> list[Path]:
    """The files a split was read from (for content digests)."""
    return [array_path(root, split.task, split.name, name) for name in ARRAYS[split.task]]
