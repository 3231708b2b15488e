"""The synthetic data source: a deterministic stand-in for the Oxford-IIIT Pet dataset.

No machine of this project reaches the internet, so the default pipeline runs on generated pictures
in the real set's layout (see :mod:`petvision.data.layout`): ``images/<Breed>_<n>.jpg``, trimaps with
1 = pet, 2 = background, 3 = a border band a few pixels wide around the outline, and
``annotations/list.txt``. Cat breeds are capitalized, dog breeds lower-case, as in the real set.

What makes the task mean something:

* Only *shape* tells the species apart. Cats have upright pointed ears, no snout and a long,
  thin, curving tail; dogs have hanging ears, a protruding snout and a shorter, straighter tail.
  Coats (solid, ticked, tabby stripes, spots, patches, colour points) and their colours come from
  one shared pool: each cat breed is paired with a dog breed that has the same typical coat.
  Details that are not shape (eyes, nose, whiskers, the rim shading) are drawn alike on both
  species: a thin line, an outline or a nose size found on one species only would tell them
  apart without any shape (tests/test_synthetic.py guards each). The ears are shaded as parts of
  their shape: a cat's far ear darker behind the head, a dog's hanging ear darker over it.
* Backgrounds are textured (value noise, stripes, tiles, gradients, spots, often a wall/floor
  split), often out of focus, in a palette where fur colours are common, with distractor shapes,
  some fur-textured (striped, spotted) and a few ear- or tail-like. Across the set no colour marks
  a pet; within one picture the surroundings avoid the pet's own coat colours, so the pet stands
  out from its background as in a photograph (a per-image contrast, which a per-pixel colour rule
  learned over the set cannot use, but a convnet can).
* Pose (standing, sitting, head close-up), facing, rotation, scale and position vary; the pet's
  bounding box spans about 65-115 % of the short side (close-ups more), some pets are cut by the
  image edge (never through the head). Images are JPEG-compressed.

The shapes are deliberately bold: they must survive resizing to 96 px, where the quick preset
trains both models on two CPU cores within a few minutes each.

Every image is drawn from its own random stream seeded by ``(seed, index)``, so the output is
byte-identical whatever the number of worker processes.
"""

from __future__ import annotations

import io
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from petvision.config import SyntheticConfig
from petvision.core.errors import ConfigError, DataError
from petvision.data import layout
from petvision.data.synthetic.breeds import BREEDS, Breed
from petvision.data.synthetic.picture import Sample, render
from petvision.util.parallel import process_map, usable_cores

__all__ = ["BREEDS", "Breed", "GenerateSummary", "Sample", "generate", "plan", "render"]


@dataclass(frozen=True)
class GenerateSummary:
    root: Path
    num_images: int
    species_counts: dict[str, int]  # {"cat": n, "dog": n}
    breed_counts: dict[str, int]
    seconds: float


def plan(cfg: SyntheticConfig) -> list[tuple[int, Breed, str]]:
    """``(index, breed, stem)`` for every image: species alternate (an exact balance), the breed
    within a species is drawn from ``(seed, index)``, and images are numbered 1, 2, ... per breed."""
    by_species = {s: [b for b in BREEDS if b.species == s] for s in (layout.CAT, layout.DOG)}
    counts: Counter[str] = Counter()
    jobs = []
    for index in range(cfg.num_images):
        choices = by_species[layout.CAT if index % 2 == 0 else layout.DOG]
        breed = choices[int(np.random.default_rng([cfg.seed, index, 1]).integers(len(choices)))]
        counts[breed.name] += 1
        jobs.append((index, breed, f"{breed.name}_{counts[breed.name]}"))
    return jobs


def _check(cfg: SyntheticConfig) -> None:
    if cfg.num_images < 1:
        raise ConfigError(f"data.synthetic.num_images={cfg.num_images!r}: must be at least 1")
    if not 64 <= cfg.min_side <= cfg.max_side:
        raise ConfigError(
            f"data.synthetic.min_side={cfg.min_side!r}, max_side={cfg.max_side!r}: "
            "need 64 <= min_side <= max_side"
        )
    if not 1 <= cfg.jpeg_quality_min <= cfg.jpeg_quality_max <= 100:
        raise ConfigError(
            f"data.synthetic.jpeg_quality_min={cfg.jpeg_quality_min!r}, "
            f"jpeg_quality_max={cfg.jpeg_quality_max!r}: need 1 <= min <= max <= 100"
        )


_WORKER_STATE: dict = {}


def _init_worker(cfg: SyntheticConfig, root: Path) -> None:
    _WORKER_STATE.update(cfg=cfg, layout=layout.Layout(root))


def _write_one(job: tuple[int, Breed, str]) -> str:
    index, breed, stem = job
    cfg, where = _WORKER_STATE["cfg"], _WORKER_STATE["layout"]
    sample = render(cfg, index, breed, stem)
    # encoded in memory, written in one call: PIL's own file writes cost more than the encoding
    jpeg, png = io.BytesIO(), io.BytesIO()
    Image.fromarray(sample.image).save(jpeg, "JPEG", quality=sample.jpeg_quality)
    Image.fromarray(sample.trimap).save(
        png, "PNG", compress_level=1
    )  # trimaps compress well anyway
    where.image_path(stem).write_bytes(jpeg.getvalue())
    where.trimap_path(stem).write_bytes(png.getvalue())
    return stem


def generate(root: Path, cfg: SyntheticConfig, workers: int = 0) -> GenerateSummary:
    """Write ``cfg.num_images`` generated pets into ``root`` in the Oxford-IIIT Pet layout.

    ``workers`` processes draw the images (0 = one per core); the bytes written do not depend on
    it. ``root`` should be an empty folder: the caller renames it into place when this returns.
    """
    _check(cfg)
    root = Path(root)
    where = layout.Layout(root)
    for folder in (where.images_dir, where.trimaps_dir):
        if folder.is_dir() and any(folder.iterdir()):
            raise DataError(
                f"{folder}: not empty; the synthetic source writes into an empty folder"
            )
        folder.mkdir(parents=True, exist_ok=True)
    jobs = plan(cfg)
    workers = min(workers or usable_cores(), len(jobs))
    started = time.perf_counter()
    progress = tqdm(total=len(jobs), desc="synthetic pets", unit="img")
    try:
        with process_map(workers, _init_worker, (cfg, root)) as pmap:
            for _ in pmap(_write_one, jobs, chunksize=8):
                progress.update()
    finally:
        progress.close()
    entries = layout.list_entries(stem for _, _, stem in jobs)
    where.list_file.write_text(layout.format_list(entries))
    species = Counter(layout.SPECIES_NAMES[b.species] for _, b, _ in jobs)
    return GenerateSummary(
        root=root,
        num_images=len(jobs),
        species_counts={name: species[name] for name in layout.SPECIES_NAMES},
        breed_counts=dict(sorted(Counter(b.name for _, b, _ in jobs).items())),
        seconds=time.perf_counter() - started,
    )
