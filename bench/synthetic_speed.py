"""How fast the synthetic source draws pets: images/s on one core and on every core.

    .venv/bin/python bench/synthetic_speed.py [--images 300] [--quick]

Runs ``petvision.data.synthetic.generate`` (what the download stage runs) with the generator settings
from conf/ (the real set's 200-500 px sides, JPEG and PNG encoding and the writes included), once
with one worker process and once with one per core, each into its own temporary folder, and writes
its section of docs/benchmarks.md. The target from the foundation issue: at least 100 images/s on
one core.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

SECTION = "synthetic_speed"
TARGET_ONE_CORE = 100.0


def measure(images: int) -> dict:
    from petvision.data import synthetic

    default = common.config([]).data.synthetic  # the default (quick) preset's generator settings
    cfg = dataclasses.replace(default, num_images=images)
    rows = []
    for workers in (1, 0):
        with tempfile.TemporaryDirectory(prefix="bench-synthetic-") as tmp:
            summary = synthetic.generate(Path(tmp) / "pets", cfg, workers=workers)
        rows.append(
            {
                "workers": workers or (os.cpu_count() or 1),
                "images": summary.num_images,
                "seconds": summary.seconds,
                "images_per_s": summary.num_images / summary.seconds,
            }
        )
    return {"rows": rows, "quick_images": default.num_images}


def markdown(res: dict, info: dict[str, str]) -> str:
    one = res["rows"][0]["images_per_s"]
    table = common.table(
        [
            "worker processes",
            "images",
            "seconds",
            "images/s",
            f"the quick preset's {res['quick_images']:,} images",
        ],
        [
            [
                r["workers"],
                r["images"],
                common.fmt(r["seconds"]),
                common.fmt(r["images_per_s"]),
                f"{res['quick_images'] / r['images_per_s']:.0f} s (at this rate)",
            ]
            for r in res["rows"]
        ],
    )
    verdict = (
        "met" if one >= TARGET_ONE_CORE else f"**not met** ({one / TARGET_ONE_CORE:.2f} of it)"
    )
    return "\n".join(
        [
            "## The synthetic source's speed (bench/synthetic_speed.py)",
            "",
            f"`petvision.data.synthetic.generate` with the generator settings from conf/, measured "
            f"{datetime.now():%Y-%m-%d %H:%M}: drawing, JPEG/PNG encoding and writing included.",
            "",
            table,
            "",
            f"Target: at least {TARGET_ONE_CORE:.0f} images/s on one core: {common.fmt(one)}, {verdict}.",
            "",
            common.machine_markdown(info),
        ]
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument(
        "--quick", action="store_true", help="40 images, and docs/benchmarks.md left alone"
    )
    args = parser.parse_args(argv)
    info = common.machine_info()
    res = measure(40 if args.quick else args.images)
    text = markdown(res, info)
    print(text)
    if not args.quick:
        common.write_section(SECTION, text)
    return res


if __name__ == "__main__":
    main()
