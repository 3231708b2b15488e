"""The preprocess stage's work: check every image/trimap pair, convert the usable ones into the
memory-mapped ``.npy`` arrays in worker processes, and return the report of what was skipped
(the order of the work is described in :mod:`petvision.preprocess`; the check of one pair and
the report are in :mod:`petvision.data.checks`)."""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from tqdm import tqdm

from petvision.config import Config, DataConfig, check_split_sizes
from petvision.core import atomic
from petvision.core.errors import DataError
from petvision.core.tasks import Task
from petvision.data import images, layout, npy_dataset
from petvision.data.checks import Checked, check_pair, log_skipped, make_report, skipped_files
from petvision.data.splits import ClassificationSplit, classification_split, segmentation_split
from petvision.util import parallel

log = logging.getLogger("petvision.preprocess")

SEG, CLS = Task.segmentation, Task.classification

# --------------------------------------------------------------------------- the per-file work


def _check_chunk(job: tuple[Path, list[str]]) -> list[Checked]:
    root, stems = job
    return [check_pair(root, stem) for stem in stems]


@dataclass(frozen=True)
class Row:
    """Where one pair goes: its segmentation row and, if chosen, its classification row."""

    stem: str
    seg: tuple[str, int]
    cls: tuple[str, int] | None


@dataclass(frozen=True)
class ConvertSpec:
    """What a worker needs to convert rows: where the pairs are, where the arrays are, and each
    task's image size and interpolation."""

    root: Path
    out: Path
    seg_size: int
    seg_interpolation: str
    cls_size: int
    cls_interpolation: str

    @classmethod
    def of(cls, d: DataConfig, root: Path, out: Path) -> ConvertSpec:
        seg, c = d.segmentation, d.classification
        return cls(root, out, seg.image_size, seg.interpolation, c.image_size, c.interpolation)


def _convert_chunk(job: tuple[ConvertSpec, list[Row]]) -> list[str]:
    """Decode, resize and write a chunk of rows into the memory maps, opened here (in the worker)
    and closed at the end of the chunk, so a worker's mapped pages never outgrow one chunk."""
    spec, rows = job
    lay = layout.Layout(spec.root)
    opened: dict[Path, np.ndarray] = {}

    def array(task: Task, split: str, name: str) -> np.ndarray:
        path = npy_dataset.array_path(spec.out, task, split, name)
        if path not in opened:
            opened[path] = np.load(path, mmap_mode="r+", allow_pickle=False)
        return opened[path]

    try:
        for row in rows:
            try:
                rgb, _ = images.load_rgb(lay.image_path(row.stem))
                mask = images.load_trimap(lay.trimap_path(row.stem)) - 1
            except DataError as exc:
                raise DataError(
                    f"{exc} (it decoded in the check pass: did the dataset change "
                    "while preprocess ran?)"
                ) from None
            if rgb.shape[:2] != mask.shape:
                raise DataError(f"{lay.image_path(row.stem)}: size changed while preprocess ran")
            split, i = row.seg
            array(SEG, split, "images")[i] = images.resize_image(
                rgb, spec.seg_size, spec.seg_interpolation
            )
            array(SEG, split, "masks")[i, :, :, 0] = images.resize_mask(mask, spec.seg_size)
            if row.cls is not None:
                split, i = row.cls
                array(CLS, split, "images")[i] = images.resize_image(
                    rgb, spec.cls_size, spec.cls_interpolation
                )
                array(CLS, split, "masks")[i, :, :, 0] = images.resize_mask(mask, spec.cls_size)
    finally:
        # Unmapping is enough: the written pages are the file's pages in the kernel's cache, seen
        # by every later reader; an msync here would only stall the worker on the disk.
        opened.clear()
    return [row.stem for row in rows]


# --------------------------------------------------------------------------- running the work


def worker_count(configured: int) -> int:
    """``data.preprocess.workers``, 0 meaning one per core this process may use."""
    return configured if configured > 0 else parallel.usable_cores()


def _chunks(items: Sequence[Any], size: int) -> list[list[Any]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def _run(
    pmap: parallel.Mapper,
    fn: Callable[[Any], list[Any]],
    jobs: list[Any],
    total: int,
    desc: str,
) -> Iterator[Any]:
    """Results of ``fn`` over ``jobs``, item by item, with a progress bar."""
    with tqdm(total=total, desc=desc, unit="img", file=sys.stderr, mininterval=0.5) as bar:
        for chunk in pmap(fn, jobs):
            bar.update(len(chunk))
            yield from chunk


def _create_arrays(out: Path, task: Task, splits: dict[str, list[str]], size: int) -> None:
    """Allocate every array of a task on disk (zero-filled, sparse until written)."""
    (out / task).mkdir(parents=True, exist_ok=True)
    for split, stems in splits.items():
        for name in npy_dataset.ARRAYS[task]:
            shape = npy_dataset.expected_shape(name, len(stems), size)
            mapped = np.lib.format.open_memmap(
                npy_dataset.array_path(out, task, split, name),
                mode="w+",
                dtype=np.uint8,
                shape=shape,
            )
            if name == "labels":
                mapped[:] = [layout.species_of(stem) for stem in stems]
            mapped.flush()
            del mapped


def _rows(seg: dict[str, list[str]], cls: dict[str, list[str]]) -> list[Row]:
    cls_rows = {stem: (split, i) for split, stems in cls.items() for i, stem in enumerate(stems)}
    return [
        Row(stem, (split, i), cls_rows.get(stem))
        for split, stems in seg.items()
        for i, stem in enumerate(stems)
    ]


# --------------------------------------------------------------------------- the whole conversion


def check_dataset(root: Path) -> layout.Scan:
    if not root.is_dir():
        raise DataError(
            f"{root}: no dataset folder; run the download stage first (dvc repro download)"
        )
    lay = layout.Layout(root)
    if not lay.is_complete():
        raise DataError(
            f"{root}: incomplete dataset (no {lay.marker.name} marker): the download did not "
            "finish; rerun the download stage (dvc repro download)"
        )
    found = layout.scan(root)
    if not found.pairs:
        raise DataError(
            f"{root}: no image/trimap pairs ({layout.IMAGES_DIR}/<stem>.jpg with "
            f"{layout.TRIMAPS_DIR}/<stem>.png)"
        )
    return found


class Splits(NamedTuple):
    """Where the usable pairs go, and what the report says about it."""

    seg: dict[str, list[str]]  # segmentation stems by split
    cls: ClassificationSplit
    notes: list[str]  # for the report: the classification split shrunk, and why


def convert_dataset(cfg: Config) -> dict[str, Any]:
    """Convert the dataset folder to the .npy arrays; returns the report (the stage writes it)."""
    root, out = cfg.paths.resolve("raw"), cfg.paths.resolve("npy")
    found = check_dataset(root)
    # Cheap: fail on impossible split sizes before decoding anything.
    check_split_sizes(cfg, len(found.pairs), f"{len(found.pairs)} image/trimap pairs in {root}")

    workers = worker_count(cfg.data.preprocess.workers)
    chunk = max(1, min(32, math.ceil(len(found.pairs) / (workers * 4))))
    workers = min(workers, math.ceil(len(found.pairs) / chunk))
    # The workers serve both passes: spawning one costs about a second.
    with parallel.process_map(workers) as pmap:
        checked = list(
            _run(
                pmap,
                _check_chunk,
                [(root, c) for c in _chunks(found.pairs, chunk)],
                len(found.pairs),
                "preprocess: check",
            )
        )
        checked.sort(key=lambda item: item.stem)
        usable = frozenset(item.stem for item in checked if item.kind)
        named = skipped_files(root, found, checked)
        log_skipped(named)
        skipped = len(found.pairs) - len(usable)
        check_split_sizes(
            cfg,
            len(usable),
            f"{len(usable)} usable pairs in {root}; {skipped} unusable, named in the log",
        )
        splits = split_usable(cfg.data, found.pairs, usable)
        _write_arrays(pmap, cfg.data, root, out, splits, chunk)

    report = make_report(root, found, checked, splits.seg, splits.cls, named, splits.notes)
    log.info(
        "preprocess: %d pairs, %d usable; segmentation %s; classification %s -> %s",
        len(found.pairs),
        len(usable),
        {k: len(v) for k, v in splits.seg.items()},
        {k: len(v) for k, v in splits.cls.splits.items()},
        out,
    )
    return report


def split_usable(d: DataConfig, pairs: Sequence[str], usable: frozenset[str]) -> Splits:
    """The segmentation and classification splits of the usable pairs (data.segmentation and
    data.classification's sizes and seeds); a shrunk classification split is logged."""
    seg = segmentation_split(pairs, usable, d.segmentation.val_count, d.segmentation.shuffle_seed)
    c = d.classification
    cls = classification_split(
        pairs,
        usable,
        {"train": c.train_count, "val": c.val_count, "test": c.test_count},
        c.split_seed,
    )
    notes = []
    if cls.shrunk:
        sizes = ", ".join(f"{name} {len(stems)}" for name, stems in cls.splits.items())
        notes.append(
            f"classification shrunk by {cls.shrink:.4f} to stay species-balanced: {cls.available['cat']} "
            f"usable cats and {cls.available['dog']} dogs for the requested train_count={c.train_count}, "
            f"val_count={c.val_count}, test_count={c.test_count}; now {sizes}"
        )
        log.warning("data.classification: %s", notes[-1])
    return Splits(seg, cls, notes)


def _write_arrays(
    pmap: parallel.Mapper,
    d: DataConfig,
    root: Path,
    out: Path,
    splits: Splits,
    chunk: int,
) -> None:
    """Every array and index of both tasks, from the pairs in ``root``, written aside and renamed
    to ``out`` whole."""
    rows = _rows(splits.seg, splits.cls.splits)
    with atomic.atomic_dir(out) as tmp:
        spec = ConvertSpec.of(d, root, tmp)
        _create_arrays(tmp, SEG, splits.seg, d.segmentation.image_size)
        _create_arrays(tmp, CLS, splits.cls.splits, d.classification.image_size)
        written = sum(
            1
            for _ in _run(
                pmap,
                _convert_chunk,
                [(spec, rs) for rs in _chunks(rows, chunk)],
                len(rows),
                "preprocess: convert",
            )
        )
        if written != len(rows):  # a worker lost rows: never commit an array with empty rows
            raise DataError(f"{out}: wrote {written} of {len(rows)} rows")
        _write_indexes(tmp, d, splits)


def _write_indexes(folder: Path, d: DataConfig, splits: Splits) -> None:
    seg, c = d.segmentation, d.classification
    atomic.write_json(
        folder / SEG / npy_dataset.INDEX_FILE,
        npy_dataset.make_index(
            SEG,
            seg.image_size,
            splits.seg,
            interpolation=seg.interpolation,
            shuffle_seed=seg.shuffle_seed,
        ),
    )
    atomic.write_json(
        folder / CLS / npy_dataset.INDEX_FILE,
        npy_dataset.make_index(
            CLS,
            c.image_size,
            splits.cls.splits,
            interpolation=c.interpolation,
            split_seed=c.split_seed,
            labels={name: i for i, name in enumerate(layout.SPECIES_NAMES)},
        ),
    )
