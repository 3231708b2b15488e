"""The one image loader: the real Oxford-IIIT Pet quirks, on tiny files made here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import write_quirky_image
from PIL import Image

from petvision.core.errors import DataError
from petvision.data import images

# A picture whose content is easy to check after any lossy step: 16-px blocks, dark or light.
BLOCKS = np.array([[0, 1, 1, 0], [1, 0, 0, 1], [1, 1, 0, 0], [0, 0, 1, 1]], dtype=bool)


def block_picture(width: int = 64, height: int = 48) -> np.ndarray:
    grid = np.kron(BLOCKS, np.ones((16, 16), dtype=bool))[:height, :width]
    rgb = np.where(grid[..., None], [230, 200, 60], [30, 60, 200]).astype(np.uint8)
    return rgb


def assert_blocks(rgb: np.ndarray, grayscale: bool = False) -> None:
    """The decoded picture still shows the block pattern (as brightness when grayscale)."""
    h, w = rgb.shape[:2]
    for r in range(h // 16):
        for c in range(w // 16):
            centre = rgb[r * 16 + 8, c * 16 + 8].astype(int)
            light = centre.mean() > 128 if grayscale else centre[0] > centre[2]
            assert light == BLOCKS[r, c], (r, c, centre)


def jpeg_bytes(rgb: np.ndarray, **kwargs) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=95, **kwargs)
    return buffer.getvalue()


# --------------------------------------------------------------------------- load_rgb


def write_quirk(path: Path, quirk: str) -> None:
    """Write one of the real set's oddities under a .jpg name."""
    write_quirky_image(path, block_picture(), quirk)


@pytest.mark.parametrize(
    ("quirk", "kind", "grayscale"),
    [
        ("jpeg", "jpeg", False),
        ("png_as_jpg", "png_as_jpg", False),
        ("gif_as_jpg", "gif_as_jpg+palette", False),
        ("rgba", "png_as_jpg+rgba", False),
        ("cmyk", "jpeg+cmyk", False),
        ("grayscale", "jpeg+grayscale", True),
        ("palette", "png_as_jpg+palette", False),
        ("extraneous_bytes", "jpeg", False),
    ],
)
def test_load_rgb_converts_each_quirk_to_rgb_and_names_it(tmp_path, quirk, kind, grayscale):
    path = tmp_path / "Abyssinian_5.jpg"
    write_quirk(path, quirk)
    rgb, got_kind = images.load_rgb(path)
    assert got_kind == kind
    assert rgb.dtype == np.uint8 and rgb.shape == (48, 64, 3)
    assert_blocks(rgb, grayscale=grayscale)


def test_load_rgb_keeps_lossless_pixels_exactly(tmp_path):
    path = tmp_path / "x.jpg"
    Image.fromarray(block_picture()).convert("RGBA").save(path, format="PNG")
    rgb, _ = images.load_rgb(path)
    np.testing.assert_array_equal(rgb, block_picture())


@pytest.mark.parametrize("damage", ["truncated", "no_end_marker", "mat_file", "empty", "html"])
def test_load_rgb_raises_data_error_naming_the_file(tmp_path, damage):
    data = jpeg_bytes(block_picture())
    content = {
        "truncated": data[: len(data) // 2],
        "no_end_marker": data[:-2],
        "mat_file": b"MATLAB 5.0 MAT-file, Platform: GLNXA64" + bytes(200),
        "empty": b"",
        "html": b"<html><body>Not found</body></html>",
    }[damage]
    path = tmp_path / "beagle_116.jpg"
    path.write_bytes(content)
    with pytest.raises(DataError, match="beagle_116.jpg: cannot decode"):
        images.load_rgb(path)


def test_load_rgb_missing_file(tmp_path):
    with pytest.raises(DataError, match="nothing.jpg: missing"):
        images.load_rgb(tmp_path / "nothing.jpg")


# --------------------------------------------------------------------------- load_trimap


def trimap_values() -> np.ndarray:
    values = np.full((40, 50), 2, dtype=np.uint8)
    values[10:30, 10:40] = 3
    values[14:26, 14:36] = 1
    return values


@pytest.mark.parametrize("mode", ["L", "P", "I;16"])
def test_load_trimap_reads_values_as_stored(tmp_path, mode):
    path = tmp_path / "a.png"
    values = trimap_values()
    if mode == "P":
        img = Image.fromarray(values, mode="L").convert("P")  # grey palette: index = value
    elif mode == "I;16":
        img = Image.fromarray(values.astype(np.uint16))
    else:
        img = Image.fromarray(values)
    img.save(path)
    got = images.load_trimap(path)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, values)


def test_load_trimap_rejects_values_outside_1_to_3(tmp_path):
    values = trimap_values()
    values[0, 0] = 0
    values[1, 1] = 255
    path = tmp_path / "b.png"
    Image.fromarray(values).save(path)
    with pytest.raises(DataError, match=r"b.png: trimap values 0, 255 outside"):
        images.load_trimap(path)


def test_load_trimap_rejects_undecodable(tmp_path):
    path = tmp_path / "c.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(20))
    with pytest.raises(DataError, match="c.png: cannot decode"):
        images.load_trimap(path)


# --------------------------------------------------------------------------- resizing


def test_resize_image_shape_and_interpolation():
    rgb = block_picture()
    nearest = images.resize_image(rgb, 24, "nearest")
    bilinear = images.resize_image(rgb, 24, "bilinear")
    assert nearest.shape == bilinear.shape == (24, 24, 3) and nearest.dtype == np.uint8
    # Nearest only copies existing colours; bilinear blends them at the block edges.
    assert {tuple(p) for p in nearest.reshape(-1, 3)} <= {(230, 200, 60), (30, 60, 200)}
    assert len({tuple(p) for p in bilinear.reshape(-1, 3)}) > 2
    with pytest.raises(ValueError, match="'cubic'"):
        images.resize_image(rgb, 24, "cubic")


@pytest.mark.parametrize("size", [7, 32, 96])
def test_resize_mask_never_invents_labels(size):
    mask = trimap_values() - 1
    resized = images.resize_mask(mask, size)
    assert resized.shape == (size, size) and resized.dtype == np.uint8
    assert set(np.unique(resized)) <= {0, 1, 2}
    assert set(np.unique(resized)) == {0, 1, 2} or size < 10


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_matches_the_books_keras_loader(tmp_path, interpolation):
    """load_rgb + resize_image give exactly what the book's ``keras.utils.load_img`` gives."""
    from keras import utils as keras_utils  # a pinned dependency: no skip

    for quirk in ("jpeg", "rgba", "gif_as_jpg", "cmyk", "grayscale"):
        path = tmp_path / f"{quirk}.jpg"
        write_quirk(path, quirk)
        ours = images.resize_image(images.load_rgb(path)[0], 40, interpolation)
        books = keras_utils.img_to_array(
            keras_utils.load_img(path, target_size=(40, 40), interpolation=interpolation)
        )
        np.testing.assert_array_equal(ours, books.astype(np.uint8), err_msg=quirk)
    trimap = tmp_path / "t.png"
    Image.fromarray(trimap_values()).save(trimap)
    ours = images.resize_mask(images.load_trimap(trimap), 40)
    books = keras_utils.img_to_array(
        keras_utils.load_img(trimap, target_size=(40, 40), color_mode="grayscale")
    )
    np.testing.assert_array_equal(ours, books[..., 0].astype(np.uint8))
