"""Stage ``preprocess``: the dataset folder (Oxford-IIIT Pet layout) to uint8 ``.npy`` arrays.

Writes what :mod:`petvision.data.npy_dataset` describes: the segmentation task at
``data.segmentation.image_size`` (train/val, the book's split) and the classification task at
``data.classification.image_size`` (species-balanced train/val/test, with masks for scoring
Grad-CAM), plus ``<paths.reports>/preprocess.json``, the report DVC shows as a metric.

How it runs
    1. ``layout.scan`` pairs images with trimaps by stem; strays (``._*`` AppleDouble files,
       ``.mat`` files), images without a trimap and trimaps without an image are skipped and named.
       The configured split sizes are checked against the pair count before anything is decoded.
    2. *Check pass*: every pair is decoded once (image and trimap) to learn which are usable: an
       undecodable image, a trimap that cannot be read or holds values outside 1..3, or an image
       and trimap of different sizes make the pair unusable (skipped, counted, named).
    3. The splits are computed (below), then the arrays are created as ``.npy`` memory maps inside
       a temporary folder that replaces ``paths.npy`` only when everything is written
       (``atomic.atomic_dir``): a failure leaves the old output or none.
    4. *Convert pass*: worker processes each take a chunk of rows, decode, resize (masks always by
       nearest neighbour) and write the rows into the memory-mapped files they open themselves;
       nothing but stem names travels back, so the image data in memory is one image per worker
       whatever the dataset's size (the bookkeeping, stems and the report, is about 1 kB per
       pair). The price of the check pass is that every image is decoded twice.

The splits are described in :mod:`petvision.data.splits`.
"""

from __future__ import annotations

import logging
from typing import Any

from petvision.cli import stage
from petvision.config import Config
from petvision.core import atomic
from petvision.data import conversion

log = logging.getLogger("petvision.preprocess")  # not __name__: that is "__main__" under python -m


REPORT_FILE = "preprocess.json"


def run_preprocess(cfg: Config) -> dict[str, Any]:
    """Convert the dataset folder to the .npy arrays and write the report; returns the report."""
    report = conversion.convert_dataset(cfg)
    atomic.write_json(cfg.paths.resolve("reports") / REPORT_FILE, report)
    return report


if __name__ == "__main__":
    stage.main(run_preprocess, writes=["npy", "reports"])
