"""The visualize stage's pictures, each saved atomically: activation grids as small palette PNGs,
filter grids and panels of photographs (Grad-CAM, segmentation) as JPEGs, to keep the stage's
output a few MB. Drawn with :mod:`.plots`' headless matplotlib and with PIL."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from petvision.core.atomic import atomic_file
from petvision.render import plots

plt = plots.plt
ACTIVATION_CELL_PX = 48  # every channel drawn at this size, whatever the layer's resolution
_VIRIDIS = (
    (np.asarray(plt.get_cmap("viridis")(np.arange(256))[:, :3]) * 255)
    .round()
    .astype(np.uint8)
    .ravel()
    .tolist()
)


# Textures and photographs: JPEG is a third to a quarter of PNG's size. Full-resolution colour
# (no 4:2:0 subsampling) keeps the filter patterns' fine colour detail.
JPEG_OPTIONS = {"quality": 90, "subsampling": 0}


def _options(path: Path) -> dict:
    return JPEG_OPTIONS if path.suffix.lower() in (".jpg", ".jpeg") else {}


def save_image(array: np.ndarray, path: Path) -> Path:
    """A uint8 array as it is (RGB or grey), in the format the suffix names."""
    path = Path(path)
    with atomic_file(path) as tmp:
        Image.fromarray(np.asarray(array, dtype=np.uint8)).save(
            tmp, format=Image.registered_extensions()[path.suffix.lower()], **_options(path)
        )
    return path


def activation_picture(grid: np.ndarray, title: str, path: Path) -> Path:
    """An activation grid (uint8 levels) in the book's colours (viridis) under a title line,
    saved as an 8-bit palette PNG: a fraction of the size of a matplotlib figure."""
    title_px = 22
    h, w = grid.shape
    canvas = np.zeros((h + title_px, max(w, 360)), dtype=np.uint8)
    canvas[title_px:, :w] = grid
    picture = Image.frombytes("P", (canvas.shape[1], canvas.shape[0]), canvas.tobytes())
    picture.putpalette(_VIRIDIS)
    ImageDraw.Draw(picture).text((4, 3), title, fill=255, font=ImageFont.load_default(size=13))
    path = Path(path)
    with atomic_file(path) as tmp:
        picture.save(tmp, format="PNG", optimize=True)
    return path


@dataclass
class Panel:
    image: np.ndarray
    title: str
    outline: np.ndarray | None = None  # a boolean region (the pet) drawn as a white contour
    cmap: str | None = None  # for a single-channel picture, with its value range
    vmin: float | None = None
    vmax: float | None = None


@dataclass
class Row:
    panels: list[Panel] = field(default_factory=list)


def panel_grid(
    rows: Sequence[Row], path: Path, title: str = "", inches: float = 1.9, dpi: int = 80
) -> Path:
    """Rows of panels (image, heatmap, overlays...), each panel with its title."""
    path = Path(path)
    n_rows = max(len(rows), 1)
    columns = max((len(r.panels) for r in rows), default=1)
    fig, axes = plt.subplots(
        n_rows,
        columns,
        figsize=(inches * columns, (inches + 0.4) * n_rows + 0.3),
        squeeze=False,
        layout="constrained",
    )
    for ax in axes.ravel():
        ax.set_axis_off()
    for r, row in enumerate(rows):
        for c, panel in enumerate(row.panels):
            ax = axes[r, c]
            ax.imshow(
                panel.image,
                cmap=panel.cmap,
                vmin=panel.vmin,
                vmax=panel.vmax,
                interpolation="nearest" if panel.cmap else "antialiased",
            )
            if panel.outline is not None:
                ax.contour(
                    np.asarray(panel.outline, dtype=np.float32),
                    levels=[0.5],
                    colors="white",
                    linewidths=0.8,
                )
            ax.set_title(panel.title, fontsize=7)
    if not rows:
        axes[0, 0].text(0.5, 0.5, "nothing to show", ha="center", va="center")
    if title:
        fig.suptitle(title, fontsize=9)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=dpi, pil_kwargs=_options(path))
    plt.close(fig)
    return path
