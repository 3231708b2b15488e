"""Write data/unlike/: the photos of scikit-image's wheel whose licence lets them be copied, made
smaller, that the training stages measure the unlike-the-training-data detector on.

    python scripts/unlike_photos.py     (needs scikit-image: make install)

The models see 64 and 96 px, so each photo is kept at 192 px on its longer side (Lanczos), as
PNG: the copies weigh a few hundred kB in all. The licence of each, as scikit-image's
``skimage.data`` docstrings state it, is in data/unlike/README.md, which this script writes too.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
LONG_SIDE = 192

# file in skimage/data/ -> (what it shows, its licence as skimage.data states it)
PHOTOS = {
    "astronaut.png": ("Eileen Collins, astronaut (NASA)", "public domain"),
    "brick.png": ("a brick wall", "CC0"),
    "camera.png": ("a man with a camera (Lav Varshney)", "CC0"),
    "cell.png": ("a cell, microscopy", "CC0"),
    "chelsea.png": ("Chelsea the cat (Stefan van der Walt)", "CC0"),
    "clock_motion.png": ("a motion-blurred wall clock (Stefan van der Walt)", "public domain"),
    "coffee.png": ("a cup of coffee (Rachel Michetti)", "CC0"),
    "grass.png": ("grass", "CC0"),
    "gravel.png": ("gravel", "CC0"),
    "hubble_deep_field.jpg": ("the Hubble deep field (NASA)", "public domain"),
    "microaneurysms.png": ("a retina with lesions (Andreas Maier)", "CC0"),
    "retina.jpg": ("a fundus photograph of a retina (Mikael Häggström)", "CC0"),
    "rocket.jpg": ("a SpaceX rocket on its launch pad (SpaceX)", "public domain"),
    "text.png": ("text on a page (Wikipedia)", "public domain"),
}


def main(out: Path = ROOT / "data" / "unlike") -> None:
    import skimage

    source = Path(skimage.__file__).parent / "data"
    out.mkdir(parents=True, exist_ok=True)
    for name in PHOTOS:
        with Image.open(source / name) as image:
            photo = image.convert("RGB")
        scale = LONG_SIDE / max(photo.size)
        size = (round(photo.width * scale), round(photo.height * scale))
        photo.resize(size, Image.Resampling.LANCZOS).save(out / f"{Path(name).stem}.png")
    rows = "\n".join(
        f"| `{Path(n).stem}.png` | {what} | {lic} |" for n, (what, lic) in PHOTOS.items()
    )
    (out / "README.md").write_text(
        "# Real photos, unlike the generated pets\n\n"
        "The training stages measure each model's unlike-the-training-data detector on these\n"
        '(`trust.unlike_photos`; docs/trust.md, "Measured"). They are copies of\n'
        f"photos shipped in scikit-image {skimage.__version__}'s wheel (`skimage/data/`), at\n"
        f"{LONG_SIDE} px on the longer side, chosen among those whose licence, as `skimage.data`\n"
        "states it, allows copying: CC0 or public domain. `python scripts/unlike_photos.py`\n"
        "rewrites them. They are never used to fit anything.\n\n"
        "| file | what | licence |\n|---|---|---|\n" + rows + "\n",
        encoding="utf-8",
    )
    print(f"{len(PHOTOS)} photos -> {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
