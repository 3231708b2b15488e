"""The two tasks' splits, computed from file names, seeds and which pairs are usable.

How skipped pairs interact with the splits: *shuffle first, filter second*
    Both splits are drawn from the list of **all** paired stems, sorted, before anything is
    decoded; unusable pairs are then removed from that order without disturbing it, and rows are
    numbered only after that, so no row is ever left empty. The result depends only on the file
    names, the seed and which files are unusable. One bad file therefore removes one row and moves
    a split boundary by one, instead of reshuffling everything as shuffling the usable list would.

    * segmentation: the sorted pairs shuffled once with ``random.Random(shuffle_seed)`` (the book
      shuffles its sorted image list and its sorted trimap list with two generators of the same
      seed, which is the same permutation), unusable ones dropped, the last ``val_count`` for
      validation and the rest for training, as in the book.
    * classification: cats and dogs (by the file name's capital letter) each sorted and shuffled
      with one ``random.Random(split_seed)``, unusable ones dropped, then taken in order for
      train, val and test, each split holding ``n // 2`` cats and ``n - n // 2`` dogs and shuffled
      with the same generator so cats and dogs are mixed. When a species has too few usable
      images, all three splits shrink by the same factor, keeping balance (the report and the log
      say so); when not even one cat and one dog per split remain, a ConfigError names the keys.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from petvision.core.errors import ConfigError
from petvision.data import layout

CLS_KEYS = {"train": "train_count", "val": "val_count", "test": "test_count"}


def segmentation_split(
    pairs: Sequence[str], usable: set[str] | frozenset[str], val_count: int, seed: int
) -> dict[str, list[str]]:
    """The book's split: sorted pairs shuffled with ``Random(seed)``, unusable ones dropped, the
    last ``val_count`` for validation."""
    order = sorted(pairs)
    random.Random(seed).shuffle(order)
    kept = [stem for stem in order if stem in usable]
    cut = len(kept) - val_count
    if cut < 1:
        raise ConfigError(
            f"data.segmentation.val_count={val_count}: must be smaller than the "
            f"{len(kept)} usable image/trimap pairs"
        )
    return {"train": kept[:cut], "val": kept[cut:]}


@dataclass(frozen=True)
class ClassificationSplit:
    splits: dict[str, list[str]]
    shrink: float  # 1.0 when the requested sizes were met
    available: dict[str, int]  # usable images per species name

    @property
    def shrunk(self) -> bool:
        return self.shrink < 1.0


def _species_counts(total: int) -> tuple[int, int]:
    return total // 2, total - total // 2


def classification_split(
    pairs: Sequence[str], usable: set[str] | frozenset[str], counts: dict[str, int], seed: int
) -> ClassificationSplit:
    """Species-balanced train/val/test of the requested sizes, shrunk proportionally when a
    species is short (see the module docstring)."""
    rng = random.Random(seed)
    pools: dict[int, list[str]] = {}
    for species in (layout.CAT, layout.DOG):
        order = sorted(s for s in pairs if layout.species_of(s) == species)
        rng.shuffle(order)
        pools[species] = [s for s in order if s in usable]
    available = {layout.SPECIES_NAMES[sp]: len(pool) for sp, pool in pools.items()}

    per_split = {name: _species_counts(n) for name, n in counts.items()}
    need_cats = sum(c for c, _ in per_split.values())
    need_dogs = sum(d for _, d in per_split.values())
    shrink = 1.0
    if need_cats > len(pools[layout.CAT]) or need_dogs > len(pools[layout.DOG]):
        # Each species can give at most what the scarcer one has; every split keeps its share.
        # Integer arithmetic, so the rounded shares never add up to more than there is.
        per_species, total = (
            min(len(pools[layout.CAT]), len(pools[layout.DOG])),
            sum(counts.values()),
        )
        shrink = 2 * per_species / total
        per_split = {name: (n * per_species // total,) * 2 for name, n in counts.items()}
        if any(c == 0 for c, _ in per_split.values()):
            asked = ", ".join(f"data.classification.{CLS_KEYS[n]}={v}" for n, v in counts.items())
            raise ConfigError(
                f"{asked}: a species-balanced split needs at least one cat and one dog per split, even "
                f"shrunk; the data has {available['cat']} usable cat and {available['dog']} usable dog images"
            )

    splits: dict[str, list[str]] = {}
    taken = {layout.CAT: 0, layout.DOG: 0}
    for name, (cats, dogs) in per_split.items():
        chosen = []
        for species, n in ((layout.CAT, cats), (layout.DOG, dogs)):
            chosen += pools[species][taken[species] : taken[species] + n]
            taken[species] += n
        rng.shuffle(chosen)
        splits[name] = chosen
    return ClassificationSplit(splits, shrink, available)
