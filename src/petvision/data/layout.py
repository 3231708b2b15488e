"""The Oxford-IIIT Pet layout: the one place that knows where files are and what names mean.

    <root>/images/<Breed>_<n>.jpg               capitalized breed = cat, lower-case = dog
    <root>/annotations/trimaps/<same stem>.png  1 = pet, 2 = background, 3 = border
    <root>/annotations/list.txt                 "Image CLASS-ID SPECIES BREED-ID", '#' comments

Both the generator (synthetic source) and the real archives produce this layout; preprocess reads
it through :func:`scan`, which also sorts out the real set's strays (``._*`` AppleDouble files,
``.mat`` files, images without a trimap and trimaps without an image).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

IMAGES_DIR = "images"
TRIMAPS_DIR = "annotations/trimaps"
LIST_FILE = "annotations/list.txt"
# Written last by the download stage: a folder without it is an interrupted download.
COMPLETE_MARKER = ".complete"

TRIMAP_PET, TRIMAP_BACKGROUND, TRIMAP_BORDER = 1, 2, 3
CAT, DOG = 0, 1
SPECIES_NAMES = ("cat", "dog")

LIST_HEADER = """\
#Image CLASS-ID SPECIES BREED ID
#ID: 1:37 Class ids
#SPECIES: 1:Cat 2:Dog
#BREED ID: 1-25:Cat 1:12:Dog
#All images with 1st letter as captial are cat images
#images with small first letter are dog images
"""


def breed_of(stem: str) -> str:
    """``"great_pyrenees_12"`` -> ``"great_pyrenees"``."""
    return stem.rsplit("_", 1)[0]


def species_of(stem: str) -> int:
    """CAT (0) when the file name starts with a capital letter, DOG (1) otherwise."""
    return CAT if stem[:1].isupper() else DOG


@dataclass(frozen=True)
class ListEntry:
    stem: str
    class_id: int  # 1..37 over all breeds
    species: int  # 1 = cat, 2 = dog, as in the file
    breed_id: int  # 1..12 (cats) or 1..25 (dogs)


def list_entries(stems: Iterable[str]) -> list[ListEntry]:
    """The list.txt entries for these images, with ids numbered as in the official file:
    class ids over all breeds in case-insensitive alphabetical order, breed ids within a species."""
    stems = sorted(stems, key=lambda s: (breed_of(s).lower(), s))
    breeds = sorted({breed_of(s) for s in stems}, key=str.lower)
    class_ids = {b: i + 1 for i, b in enumerate(breeds)}
    breed_ids = {}
    for species in (CAT, DOG):
        same = [b for b in breeds if species_of(b) == species]
        breed_ids.update({b: i + 1 for i, b in enumerate(same)})
    return [
        ListEntry(s, class_ids[breed_of(s)], species_of(s) + 1, breed_ids[breed_of(s)])
        for s in stems
    ]


def format_list(entries: Iterable[ListEntry]) -> str:
    return LIST_HEADER + "".join(
        f"{e.stem} {e.class_id} {e.species} {e.breed_id}\n" for e in entries
    )


def parse_list(text: str) -> list[ListEntry]:
    entries = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        stem, class_id, species, breed_id = line.split()
        entries.append(ListEntry(stem, int(class_id), int(species), int(breed_id)))
    return entries


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def images_dir(self) -> Path:
        return self.root / IMAGES_DIR

    @property
    def trimaps_dir(self) -> Path:
        return self.root / TRIMAPS_DIR

    @property
    def list_file(self) -> Path:
        return self.root / LIST_FILE

    @property
    def marker(self) -> Path:
        return self.root / COMPLETE_MARKER

    def image_path(self, stem: str) -> Path:
        return self.images_dir / f"{stem}.jpg"

    def trimap_path(self, stem: str) -> Path:
        return self.trimaps_dir / f"{stem}.png"

    def is_complete(self) -> bool:
        return self.marker.is_file()


@dataclass
class Scan:
    """What a dataset folder holds, paired by stem."""

    pairs: list[str] = field(default_factory=list)  # stems with both an image and a trimap, sorted
    images_without_trimap: list[str] = field(default_factory=list)
    trimaps_without_image: list[str] = field(default_factory=list)
    ignored: list[str] = field(
        default_factory=list
    )  # relative paths of stray files (._*, .mat, ...)


def _listing(folder: Path, suffix: str, root: Path, ignored: list[str]) -> set[str]:
    stems: set[str] = set()
    if not folder.is_dir():
        return stems
    for entry in os.scandir(folder):
        name = entry.name
        if not entry.is_file() or name.startswith(".") or not name.endswith(suffix):
            # '._x.jpg' AppleDouble files, '.mat' files and anything else: named, not read.
            if entry.is_file():
                ignored.append(str(Path(entry.path).relative_to(root)))
            continue
        stems.add(name[: -len(suffix)])
    return stems


def scan(root: Path) -> Scan:
    """Pair images with trimaps by stem; list what cannot be paired and what is not data."""
    layout = Layout(root)
    result = Scan()
    images = _listing(layout.images_dir, ".jpg", root, result.ignored)
    trimaps = _listing(layout.trimaps_dir, ".png", root, result.ignored)
    result.pairs = sorted(images & trimaps)
    result.images_without_trimap = sorted(images - trimaps)
    result.trimaps_without_image = sorted(trimaps - images)
    result.ignored.sort()
    return result
