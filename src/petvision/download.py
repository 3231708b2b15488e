"""Stage 1, ``download``: the dataset in the Oxford-IIIT Pet layout at ``paths.raw``.

    python -m petvision.download                          # generated stand-in (data.source=synthetic)
    python -m petvision.download data.source=oxford_pets  # the real archives (needs the internet)
    python -m petvision.download data.source=local data.local.path=/data/oxford-pets  # your copy

The real archives are kept in ``paths.downloads``, a cache outside DVC's outputs, so an
interrupted download resumes and a rerun does not fetch 800 MB again. The output folder is
built aside and renamed into place with :data:`petvision.data.layout.COMPLETE_MARKER` written last:
an interrupted run leaves no output rather than a half dataset that looks complete.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from petvision.cli import stage
from petvision.config import Config
from petvision.core import paths as project_paths
from petvision.core.atomic import atomic_dir
from petvision.core.errors import DataError
from petvision.data import fetch, layout
from petvision.data.archives import safe_extract

# Named, not __name__: run as `python -m petvision.download` this module is __main__.
log = logging.getLogger("petvision.download")


def run_download(cfg: Config) -> Path:
    """Write the configured source's dataset to ``paths.raw``; return that folder."""
    out = cfg.paths.resolve("raw")
    source = cfg.data.source
    if source == "synthetic":
        _write_synthetic(cfg, out)
    elif source == "oxford_pets":
        _write_oxford_pets(cfg, out)
    elif source == "local":
        _write_local(cfg, out)
    else:  # config.validate() rejects other values; this guards a caller that skipped it
        raise ValueError(f"data.source={source!r}")
    log.info("dataset ready at %s", out)
    return out


def _write_synthetic(cfg: Config, out: Path) -> None:
    from petvision.data import synthetic

    log.info("generating %d synthetic images into %s", cfg.data.synthetic.num_images, out)
    with atomic_dir(out) as tmp:
        summary = synthetic.generate(tmp, cfg.data.synthetic)
        log.info(
            "generated %d images (%s) in %.1f s",
            summary.num_images,
            ", ".join(f"{n} {name}s" for name, n in summary.species_counts.items()),
            summary.seconds,
        )
        _check_layout(tmp, "the synthetic generator")
        _mark_complete(tmp, {"source": "synthetic"})


def _write_oxford_pets(cfg: Config, out: Path) -> None:
    pets = cfg.data.oxford_pets
    archives = [fetch.Archive(a.name, a.size, a.sha256.lower()) for a in pets.archives]
    policy = fetch.RetryPolicy(
        retries=pets.retries, backoff_s=pets.backoff_s, timeout_s=pets.timeout_s
    )
    cache = cfg.paths.resolve("downloads")
    # Everything is downloaded and verified before the output is touched.
    paths = [fetch.fetch_archive(a, pets.mirrors, cache, policy) for a in archives]
    log.info("extracting %d archives into %s", len(paths), out)
    with atomic_dir(out) as tmp:
        for path in paths:
            safe_extract(path, tmp)
        _check_layout(tmp, ", ".join(a.name for a in archives))
        _mark_complete(
            tmp, {"source": "oxford_pets", "archives": {a.name: a.sha256 for a in archives}}
        )


def _write_local(cfg: Config, out: Path) -> None:
    from petvision.data import local as local_data

    # A relative path is taken against the project root, as dvc.yaml's dependency on it is.
    folder = project_paths.resolve(cfg.data.local.path)
    archives = [
        fetch.Archive(a.name, a.size, a.sha256.lower()) for a in cfg.data.oxford_pets.archives
    ]
    with atomic_dir(out) as tmp:
        kind = local_data.write(folder, archives, tmp)
        _check_layout(tmp, f"data.local.path={folder}")
        _mark_complete(tmp, {"source": "local", "path": str(folder), "kind": kind})


def _check_layout(root: Path, made_by: str) -> None:
    """The folder must hold image/trimap pairs and list.txt, or preprocess would fail later and
    less clearly."""
    lay = layout.Layout(root)
    missing = [
        rel
        for rel, p in [
            (layout.IMAGES_DIR, lay.images_dir),
            (layout.TRIMAPS_DIR, lay.trimaps_dir),
            (layout.LIST_FILE, lay.list_file),
        ]
        if not p.exists()
    ]
    if missing:
        raise DataError(
            f"{made_by}: no {', '.join(missing)} in the result: not the Oxford-IIIT Pet layout"
        )
    found = layout.scan(root)
    if not found.pairs:
        raise DataError(
            f"{made_by}: no image with a matching trimap under {layout.IMAGES_DIR}/ and {layout.TRIMAPS_DIR}/"
        )
    log.info(
        "%d image/trimap pairs, %d images without trimap, %d trimaps without image, %d other files",
        len(found.pairs),
        len(found.images_without_trimap),
        len(found.trimaps_without_image),
        len(found.ignored),
    )


def _mark_complete(root: Path, what: dict) -> None:
    # Last write inside the atomic folder: its presence means everything before it succeeded.
    layout.Layout(root).marker.write_text(json.dumps(what, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    stage.main(run_download, writes=["raw"])
