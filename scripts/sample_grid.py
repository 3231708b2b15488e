"""Draw a few generated pets with their trimaps: the README's picture of the synthetic source.

Renders in memory (nothing is written to data/) with the generator settings from conf/, so the
picture shows exactly what the pipeline trains on. Each pair: the image (left) and its trimap
(right: pet, border band, background), titled with the file stem and the species.

Usage: python scripts/sample_grid.py [--out docs/images/synthetic_samples.png] [--count 8] [--seed N]
"""

from __future__ import annotations

import argparse
import dataclasses
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.colors import ListedColormap
from PIL import Image

from petvision import config
from petvision.config import SyntheticConfig
from petvision.core import paths
from petvision.data import layout, synthetic

# trimap 1 = pet, 2 = background, 3 = border
TRIMAP_COLOURS = ListedColormap(["#2b6cb0", "#e2e8f0", "#f6ad55"])


def pick_samples(cfg: SyntheticConfig, count: int) -> list[synthetic.Sample]:
    """The first ``count`` images, which alternate cat, dog, cat, ..."""
    jobs = synthetic.plan(dataclasses.replace(cfg, num_images=count))
    return [synthetic.render(cfg, index, breed, stem) for index, breed, stem in jobs]


def draw_grid(samples: list[synthetic.Sample], columns: int = 2):
    rows = -(-len(samples) // columns)
    fig, axes = plt.subplots(rows, 2 * columns, figsize=(4.2 * columns, 2.2 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, sample in enumerate(samples):
        r, c = divmod(i, columns)
        ax_image, ax_trimap = axes[r, 2 * c], axes[r, 2 * c + 1]
        # show the JPEG the pipeline reads, not the image before compression
        buffer = io.BytesIO()
        Image.fromarray(sample.image).save(buffer, "JPEG", quality=sample.jpeg_quality)
        ax_image.imshow(Image.open(buffer))
        ax_image.set_title(f"{sample.stem} ({layout.SPECIES_NAMES[sample.species]})", fontsize=8)
        ax_trimap.imshow(
            sample.trimap, cmap=TRIMAP_COLOURS, vmin=0.5, vmax=3.5, interpolation="nearest"
        )
        ax_trimap.set_title("trimap: pet / border / background", fontsize=7)
    fig.tight_layout()
    return fig


def save_small_png(fig, out: Path, dpi: int = 100) -> None:
    """A 256-colour PNG: the README picture stays a few hundred kilobytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    image = Image.open(buffer).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=paths.project_root() / "docs" / "images" / "synthetic_samples.png",
    )
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument(
        "--seed", type=int, default=None, help="default: data.synthetic.seed from conf/"
    )
    args = parser.parse_args()

    cfg = SyntheticConfig(**dict(config.compose().data.synthetic))
    if args.seed is not None:
        cfg = dataclasses.replace(cfg, seed=args.seed)
    fig = draw_grid(pick_samples(cfg, args.count))
    save_small_png(fig, args.out)
    plt.close(fig)
    print(f"{args.out} ({args.out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
