"""The one image loader: every module that reads an image file goes through here.

It decodes with PIL the way the book's ``keras.utils.load_img`` does (so results match the
book's): the first frame, converted to RGB with ``Image.convert`` (an alpha channel is dropped,
not composited), no EXIF rotation (the trimaps are aligned with the stored pixels), and resizing
by ``Image.resize``. What it adds is naming: :func:`load_rgb` says which conversion a file needed
(the real Oxford-IIIT Pet set has PNG and GIF files under ``.jpg`` names, RGBA, CMYK, palette and
grayscale images), and every file that cannot be decoded raises :class:`DataError` naming it,
whatever PIL raised, so a caller can skip that one file and go on.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from petvision.core.errors import DataError

INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}

# The file name suffixes each container format is expected under.
_SUFFIXES = {
    "JPEG": (".jpg", ".jpeg"),
    "PNG": (".png",),
    "GIF": (".gif",),
    "MPO": (".jpg", ".jpeg"),
}

# Colour conversions to RGB, named for the report. RGB itself needs none.
_MODE_KINDS = {
    "RGBA": "rgba",
    "RGBX": "rgba",
    "RGBa": "rgba",
    "CMYK": "cmyk",
    "L": "grayscale",
    "LA": "grayscale_alpha",
    "La": "grayscale_alpha",
    "1": "bilevel",
    "I": "grayscale_32bit",
    "I;16": "grayscale_16bit",
    "I;16B": "grayscale_16bit",
    "F": "grayscale_float",
    "P": "palette",
    "PA": "palette_alpha",
    "YCbCr": "ycbcr",
    "LAB": "lab",
    "HSV": "hsv",
}

TRIMAP_VALUES = (1, 2, 3)
T = TypeVar("T")


def _container_kind(fmt: str | None, suffix: str) -> str:
    """``"jpeg"`` for a JPEG named .jpg; ``"png_as_jpg"`` for a PNG under a .jpg name."""
    name = (fmt or "unknown").lower()
    if suffix.lower() in _SUFFIXES.get(fmt or "", ()):
        return name
    return f"{name}_as_{suffix.lower().lstrip('.') or 'unnamed'}"


def _decode(path: Path, to_array: Callable[[Image.Image, str | None], T]) -> T:
    """Open ``path``, decode its first frame fully and hand it, with the container format PIL
    found, to ``to_array`` while the file is open (no extra copy of the pixels). Any failure
    becomes a DataError naming the file."""
    try:
        with warnings.catch_warnings():
            # PIL warns about odd but decodable files (palette transparency, large sizes); the
            # report names the conversion instead.
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                img.load()  # decode now: a truncated or corrupt file fails here, not later
                return to_array(img, img.format)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: missing") from None
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        # PIL sometimes repeats the full path; the message names it once already.
        raise DataError(f"{path}: cannot decode ({first.replace(str(path), path.name)})") from exc


def load_rgb(path: str | Path) -> tuple[np.ndarray, str]:
    """An image file as an (H, W, 3) uint8 RGB array, and the conversion it needed.

    ``kind`` is the container (``jpeg``, or ``png_as_jpg`` / ``gif_as_jpg`` when the content does
    not match the name), followed by ``+<mode>`` when the pixels were not RGB (``+rgba``, ``+cmyk``,
    ``+grayscale``, ``+palette``...): a plain RGB JPEG is ``"jpeg"``, a GIF under a .jpg name
    ``"gif_as_jpg+palette"``. Raises DataError naming the file when it cannot be decoded.
    """
    path = Path(path)

    def to_rgb(img: Image.Image, fmt: str | None) -> tuple[np.ndarray, str]:
        kind = _container_kind(fmt, path.suffix)
        if img.mode != "RGB":
            kind += "+" + _MODE_KINDS.get(img.mode, f"mode_{img.mode.replace(';', '_').lower()}")
            img = img.convert("RGB")
        return np.asarray(img, dtype=np.uint8), kind

    array, kind = _decode(path, to_rgb)
    if array.ndim != 3 or array.shape[2] != 3 or array.shape[0] == 0 or array.shape[1] == 0:
        raise DataError(f"{path}: decoded to shape {array.shape}, expected (H, W, 3)")
    return array, kind


def load_trimap(path: str | Path) -> np.ndarray:
    """A trimap as an (H, W) uint8 array of 1 (pet), 2 (background), 3 (border).

    Read as the book reads it (``load_img(color_mode="grayscale")``: 8-, 16- and 32-bit grayscale
    as stored, anything else converted to 8-bit grayscale); values outside 1..3 raise DataError
    naming the file, because ``trimap - 1`` would turn them into labels the model cannot have.
    """
    path = Path(path)

    def to_values(img: Image.Image, _fmt: str | None) -> np.ndarray:
        return np.asarray(img if img.mode in ("L", "I;16", "I") else img.convert("L"))

    values = _decode(path, to_values)
    if values.ndim != 2 or values.size == 0:
        raise DataError(f"{path}: trimap decoded to shape {values.shape}, expected (H, W)")
    low, high = TRIMAP_VALUES[0], TRIMAP_VALUES[-1]
    if (
        values.min() < low or values.max() > high
    ):  # cheap test first; name the culprits only if needed
        bad = np.setdiff1d(np.unique(values), TRIMAP_VALUES)
        shown = ", ".join(str(v) for v in bad[:5]) + (" ..." if bad.size > 5 else "")
        raise DataError(f"{path}: trimap values {shown} outside {TRIMAP_VALUES}")
    return values.astype(np.uint8, copy=False)


def _resample(interpolation: str) -> Image.Resampling:
    try:
        return INTERPOLATIONS[interpolation]
    except KeyError:
        raise ValueError(
            f"interpolation {interpolation!r}: must be one of {', '.join(INTERPOLATIONS)}"
        ) from None


def resize_image(array: np.ndarray, size: int, interpolation: str = "nearest") -> np.ndarray:
    """An (H, W, 3) uint8 image resized to (size, size, 3), like ``load_img(target_size=...)``."""
    if array.shape[:2] == (size, size):
        return np.ascontiguousarray(array, dtype=np.uint8)
    resized = Image.fromarray(array).resize((size, size), _resample(interpolation))
    return np.asarray(resized, dtype=np.uint8)


def resize_mask(array: np.ndarray, size: int) -> np.ndarray:
    """An (H, W) label map resized to (size, size) by nearest neighbour, so no label is invented."""
    if array.shape[:2] == (size, size):
        return np.ascontiguousarray(array, dtype=np.uint8)
    resized = Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).resize(
        (size, size), Image.Resampling.NEAREST
    )
    return np.asarray(resized, dtype=np.uint8)
