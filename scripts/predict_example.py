"""The example of ``python -m petvision.predict`` in docs/models.md: a folder of mixed photos, predicted.

Takes test-split photos of the dataset the pipeline trained on (``data/raw/pets``, named in
``data/npy/classification/index.json``), saves them as the kinds of file people have (a JPEG, a
PNG, a GIF, a CMYK JPEG, a greyscale JPEG, an RGBA PNG, each its own size) plus one broken file,
runs the predict command on that folder exactly as a user would, and draws the picture: photo,
mask overlay and Grad-CAM overlay per photo, titled with the predicted label.

Usage: python scripts/predict_example.py [--work /tmp/petvision-predict-example]
                                         [--out docs/images/predict_example.jpg]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from PIL import Image

from petvision.core import paths
from petvision.data import images, layout

# (file name suffix, PIL format, mode, scale of the original size)
KINDS = [
    (".jpg", "JPEG", "RGB", 1.0),
    (".png", "PNG", "RGB", 0.8),
    (".gif", "GIF", "P", 0.7),
    (".jpg", "JPEG", "CMYK", 1.2),
    (".jpeg", "JPEG", "L", 0.9),
    (".png", "PNG", "RGBA", 0.6),
]


def make_photos(folder: Path) -> None:
    root = paths.project_root()
    index = json.loads((root / "data/npy/classification/index.json").read_text())
    stems = (
        index["splits"]["test"][: len(KINDS)] if "splits" in index else index["test"][: len(KINDS)]
    )
    folder.mkdir(parents=True, exist_ok=True)
    lay = layout.Layout(root / "data/raw/pets")
    for (suffix, fmt, mode, scale), stem in zip(KINDS, stems):
        rgb, _ = images.load_rgb(lay.image_path(stem))
        img = Image.fromarray(rgb)
        img = img.resize((int(img.width * scale), int(img.height * scale)))
        img = img.convert(mode) if mode != "P" else img.convert("P", palette=Image.Palette.ADAPTIVE)
        img.save(folder / f"{stem}_{mode.lower()}{suffix}", format=fmt)
    (folder / "broken.jpg").write_bytes((folder / f"{stems[0]}_rgb.jpg").read_bytes()[:2000])


def draw(out_dir: Path, picture: Path) -> None:
    table = json.loads((out_dir / "predictions.json").read_text())
    rows = [r for r in table["photos"] if r["status"] == "ok"]
    fig, axes = plt.subplots(len(rows), 3, figsize=(7.5, 2.5 * len(rows)), squeeze=False)
    for ax_row, row in zip(axes, rows):
        name = Path(row["file"]).name
        shown = [
            (images.load_rgb(Path(row["file"]))[0], f"{name}\n({row['decoded_as']})"),
            (Image.open(out_dir / row["overlay"]), f"mask: pet {row['pet_fraction']:.0%}"),
            (Image.open(out_dir / row["gradcam"]), f"{row['label']} {row['probability']:.2f}"),
        ]
        for ax, (img, title) in zip(ax_row, shown):
            ax.imshow(img)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    picture.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(picture, dpi=80, pil_kwargs={"quality": 85})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/petvision-predict-example"))
    parser.add_argument(
        "--out", type=Path, default=paths.project_root() / "docs/images/predict_example.jpg"
    )
    args = parser.parse_args()
    photos, predictions = args.work / "photos", args.work / "predictions"
    make_photos(photos)
    command = [
        sys.executable,
        "-m",
        "petvision.predict",
        f"predict.input={photos}",
        f"predict.output={predictions}",
        "predict.gradcam=true",
        f"hydra.run.dir={args.work / 'hydra'}",
    ]
    print("$", " ".join(command[1:]))
    subprocess.run(command, check=True, cwd=paths.project_root())
    draw(predictions, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
