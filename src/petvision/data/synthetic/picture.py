"""One generated image and its trimap: a posed pet on a background, with distractors, shadow,
blur, grain and JPEG artefacts."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from petvision.config import SyntheticConfig
from petvision.data import layout
from petvision.data.synthetic.breeds import (
    COAT_NAMES,
    COATS,
    EYE_COLOURS,
    TYPICAL_COAT_P,
    Breed,
    Coat,
)
from petvision.data.synthetic.shapes import (
    Face,
    Part,
    direction,
    ellipse,
    pet_parts,
    polyline,
    rotation,
    stroke,
)
from petvision.data.synthetic.textures import (
    background,
    coat_colours,
    coat_pattern,
    colourize,
    coords,
    grey,
    palette_colour,
    value_noise,
    vary,
)

# Sensor grain cut from one fixed tile: much cheaper than fresh normal noise for every image.
_GRAIN_TILE = np.random.default_rng(20120817).standard_normal((640, 640)).astype(np.float32)


def _grain(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    tile = _GRAIN_TILE
    if h > tile.shape[0] or w > tile.shape[1]:
        tile = np.tile(tile, (-(-h // tile.shape[0]) + 1, -(-w // tile.shape[1]) + 1))
    oy, ox = rng.integers(0, tile.shape[0] - h + 1), rng.integers(0, tile.shape[1] - w + 1)
    return tile[oy : oy + h, ox : ox + w]


@dataclass
class Sample:
    stem: str
    breed: str
    species: int  # layout.CAT or layout.DOG
    image: np.ndarray  # H x W x 3 uint8, before JPEG compression
    trimap: np.ndarray  # H x W uint8 in {1, 2, 3}
    jpeg_quality: int


def _image_size(rng: np.random.Generator, cfg: SyntheticConfig) -> tuple[int, int]:
    long = int(rng.integers(cfg.min_side, cfg.max_side + 1))
    short = int(np.clip(round(long * rng.uniform(0.6, 1.0)), cfg.min_side, long))
    return (long, short) if rng.random() < 0.65 else (short, long)  # (width, height)


def _draw(size, polys, values) -> Image.Image:
    img = Image.new("L", size, 0)
    draw = ImageDraw.Draw(img)
    for poly, value in zip(polys, values):
        draw.polygon(poly.ravel().tolist(), fill=int(value))
    return img


def _band(mask: Image.Image, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """(dilated, eroded) by a square of side 2 * radius + 1, as booleans."""
    blurred = np.asarray(mask.filter(ImageFilter.BoxBlur(radius)))
    return blurred > 0, blurred >= 255


def render(cfg: SyntheticConfig, index: int, breed: Breed, stem: str = "") -> Sample:
    """Draw image ``index``: a pure function of ``(cfg, index, breed)``."""
    rng = np.random.default_rng([cfg.seed, index])
    w, h = _image_size(rng, cfg)
    pet = _place(rng, breed, w, h)
    box = _pet_box(pet.placed, w, h)
    fur = _fur(rng, breed)
    image = _surroundings(rng, w, h, fur.avoid)
    _shadow(image, box)
    full_mask = Image.new("L", (w, h), 0)
    x0, y0, x1, y1 = box
    if x1 > x0 and y1 > y0:
        _paint_pet(rng, image, full_mask, pet, box, fur)
    image = _lighting(rng, image)
    # the face, drawn after shading so the eye stays crisp
    _draw_face(rng, image, pet.face, pet.transform, pet.scale, pet.offset)
    trimap = _trimap(full_mask, box)
    quality = int(rng.integers(cfg.jpeg_quality_min, cfg.jpeg_quality_max + 1))
    return Sample(stem, breed.name, breed.species, np.asarray(image), trimap, quality)


@dataclass
class Placement:
    """The pet's parts posed in the canonical frame, and where they land in the image."""

    parts: list[Part]
    face: Face
    angle: float  # the rotation, degrees
    flip: float  # -1: facing left
    transform: np.ndarray  # the rotation and the flip
    scale: float  # pixels per unit of the canonical frame
    offset: np.ndarray  # pixels
    placed: list[np.ndarray]  # each part's polygon in pixels


def _place(rng: np.random.Generator, breed: Breed, w: int, h: int) -> Placement:
    """Pose, facing, rotation, scale and position; the edge may cut the pet, never its head."""
    short = min(w, h)
    pose = ("standing", "sitting", "closeup")[int(rng.choice(3, p=[0.35, 0.3, 0.35]))]
    parts, face = pet_parts(rng, breed, "sitting" if pose == "sitting" else "standing")
    flip = -1.0 if rng.random() < 0.5 else 1.0
    angle = float(rng.uniform(-15, 15))
    transform = rotation(angle) @ np.diag([flip, 1.0])
    placed = [p.polygon @ transform.T for p in parts]
    all_pts = np.concatenate(placed)
    lo, hi = all_pts.min(axis=0), all_pts.max(axis=0)
    if pose == "closeup":  # the head fills much of the frame, the body runs out of it
        scale = short * float(rng.uniform(0.25, 0.35)) / face.head_radius
        anchor = transform @ face.head
        centre = np.array([w, h]) * rng.uniform(0.35, 0.65, 2)
        offset = centre - anchor * scale
    else:
        extent = float(rng.uniform(0.65, 1.15)) * short
        scale = extent / float(max(hi - lo))
        size = (hi - lo) * scale
        room = np.array([w, h]) - size
        if rng.random() < 0.2:  # cut by the edge
            start = rng.uniform(-0.3, 0.3, 2) * size + rng.uniform(0, 1, 2) * np.maximum(room, 0)
        else:
            start = rng.uniform(0, 1, 2) * room
        offset = start - lo * scale
        # the edge may cut the body or the tail, never the head: as in the real set, the face shows
        head = transform @ face.head * scale + offset
        margin = face.head_radius * scale * 1.2
        offset = offset + np.clip(head, margin, np.array([w, h]) - margin) - head
    placed = [p * scale + offset for p in placed]
    return Placement(parts, face, angle, flip, transform, scale, offset, placed)


def _pet_box(placed: list[np.ndarray], w: int, h: int) -> tuple[int, int, int, int]:
    """The pet's pixel box (x0, y0, x1, y1), a margin round it, inside the image (parts may run
    outside it)."""
    pts = np.concatenate(placed)
    x0, y0 = np.floor(np.maximum(pts.min(axis=0) - 4, 0)).astype(int)
    x1, y1 = np.ceil(np.minimum(pts.max(axis=0) + 4, [w, h])).astype(int)
    return x0, y0, x1, y1


class Fur(NamedTuple):
    coat: Coat
    base: np.ndarray  # RGB
    second: np.ndarray

    @property
    def avoid(self) -> tuple[np.ndarray, ...]:
        """The colours the pet's surroundings keep away from: the coat's own."""
        return (self.base, self.second) if self.coat.pattern != "solid" else (self.base,)


def _fur(rng: np.random.Generator, breed: Breed) -> Fur:
    """Mostly the breed's typical coat, sometimes any other; its colours."""
    coat = (
        COATS[breed.coat]
        if rng.random() < TYPICAL_COAT_P
        else COATS[COAT_NAMES[rng.integers(len(COATS))]]
    )
    base, second = coat_colours(rng, coat)
    return Fur(coat, base, second)


def _surroundings(
    rng: np.random.Generator, w: int, h: int, avoid: tuple[np.ndarray, ...]
) -> Image.Image:
    """The background with its distractors, often a little out of focus."""
    image = background(rng, h, w, avoid)
    _distractors(rng, image, w, h, min(w, h), avoid)
    if (
        rng.random() < 0.7
    ):  # depth of field: the background a little out of focus (a box blur: cheap)
        image = image.filter(ImageFilter.BoxBlur(float(rng.uniform(0.9, 4.3))))
    return image


def _shadow(image: Image.Image, pet_box: tuple[int, int, int, int]) -> None:
    """A soft shadow under the pet's box."""
    w, h = image.size
    x0, y0, x1, y1 = pet_box
    rx, ry = (x1 - x0) * 0.45, max(4.0, (x1 - x0) * 0.06)
    cx = (x0 + x1) / 2
    box = (
        int(max(0, cx - 2 * rx)),
        int(max(0, y1 - 3 * ry)),
        int(min(w, cx + 2 * rx)),
        int(min(h, y1 + 2 * ry)),
    )
    if box[2] > box[0] and box[3] > box[1]:
        shadow = Image.new("L", (box[2] - box[0], box[3] - box[1]), 0)
        fx, fy = cx - box[0], y1 - 0.02 * (y1 - y0) - box[1]
        ImageDraw.Draw(shadow).ellipse([fx - rx, fy - ry, fx + rx, fy + ry], fill=110)
        shadow = shadow.filter(ImageFilter.BoxBlur(max(2, int(ry))))
        image.paste((0, 0, 0), box, shadow)


def _paint_pet(
    rng: np.random.Generator,
    image: Image.Image,
    full_mask: Image.Image,
    pet: Placement,
    box: tuple[int, int, int, int],
    fur: Fur,
) -> None:
    """The pet drawn into ``image`` in its box only, shaded and coated; its mask into
    ``full_mask``."""
    x0, y0, x1, y1 = box
    scale, coat = pet.scale, fur.coat
    cw, ch = int(x1 - x0), int(y1 - y0)
    local = [p - [x0, y0] for p in pet.placed]
    shade_img = _draw((cw, ch), local, [255 * p.shade for p in pet.parts])
    shade = np.asarray(shade_img, dtype=np.float32) / np.float32(255)
    inside = shade > 0
    mask_img = Image.fromarray(inside.astype(np.uint8) * np.uint8(255))
    # darker towards the outline: the pet reads as a rounded body, not a flat cut-out
    rim = np.asarray(mask_img.filter(ImageFilter.BoxBlur(max(1, round(scale * 0.035)))), np.float32)
    rim /= np.float32(255)
    body_dir = math.radians(pet.angle) + (0 if pet.flip > 0 else math.pi)
    t = coat_pattern(rng, coat, ch, cw, scale, body_dir + math.pi / 2)
    if coat.pattern == "points" or (coat.pattern == "patches" and rng.random() < 0.5):
        ext_img = _draw((cw, ch), local, [255 if p.extremity else 0 for p in pet.parts])
        if coat.pattern == "points":  # the dark mask round the face
            face = pet.face
            fc = (
                pet.transform @ (face.head + face.head_radius * np.array([0.5, 0.1])) * scale
                + pet.offset
                - [x0, y0]
            )
            r = face.head_radius * scale * 0.75
            ImageDraw.Draw(ext_img).ellipse([fc[0] - r, fc[1] - r, fc[0] + r, fc[1] + r], fill=255)
        ext = np.asarray(
            ext_img.filter(ImageFilter.BoxBlur(max(1, round(scale * 0.03)))), np.float32
        )
        t = t + (1 - t) * ext * np.float32(0.85 / 255)
    amount = np.float32(0.32 if coat.pattern == "ticked" else 0.16)
    light = shade * (np.float32(1) - amount * value_noise(rng, ch, cw, scale * 0.3))
    light *= np.float32(0.55) + np.float32(0.45) * np.clip(
        (rim - np.float32(0.5)) * np.float32(2.2), 0, 1
    )
    coated = ImageChops.multiply(
        colourize(t, [fur.base, fur.second]), Image.merge("RGB", [grey(light)] * 3)
    )
    image.paste(coated, (int(x0), int(y0)), mask_img.filter(ImageFilter.BoxBlur(1)))
    full_mask.paste(mask_img, (int(x0), int(y0)))


def _lighting(rng: np.random.Generator, image: Image.Image) -> Image.Image:
    """A gradient across the scene, a global level, sensor grain."""
    w, h = image.size
    g = coords(
        -(-h // 8), -(-w // 8), float(rng.uniform(0, 2 * np.pi))
    )  # smooth: 1/8 size, enlarged
    g -= g.min()
    g *= np.float32(rng.uniform(0.0, 0.3) / max(float(g.max()), 1.0))
    gain = grey(1 - g).resize((w, h), Image.Resampling.BILINEAR)
    image = ImageChops.multiply(image, Image.merge("RGB", [gain] * 3))
    level = float(rng.uniform(0.9, 1.25))
    grain = grey(_grain(rng, h, w) * np.float32(rng.uniform(2, 9) / 255) + np.float32(0.5))
    # (image + 128 + noise) * level - 128 * level: the level and the grain in one pass
    return ImageChops.add(image, Image.merge("RGB", [grain] * 3), 1 / level, -round(128 * level))


def _trimap(full_mask: Image.Image, box: tuple[int, int, int, int]) -> np.ndarray:
    """Pet inside, a band straddling the outline, background."""
    w, h = full_mask.size
    x0, y0, x1, y1 = box
    trimap = np.full((h, w), layout.TRIMAP_BACKGROUND, np.uint8)
    if x1 > x0 and y1 > y0:
        radius = max(1, round(min(w, h) / 130))
        pad = radius + 1
        bx0, by0, bx1, by1 = max(0, x0 - pad), max(0, y0 - pad), min(w, x1 + pad), min(h, y1 + pad)
        dilated, eroded = _band(full_mask.crop((bx0, by0, bx1, by1)), radius)
        band = trimap[by0:by1, bx0:bx1]
        band[dilated] = layout.TRIMAP_BORDER
        band[eroded] = layout.TRIMAP_PET
    return trimap


def _draw_face(
    rng: np.random.Generator,
    image: Image.Image,
    face: Face,
    transform: np.ndarray,
    scale: float,
    offset: np.ndarray,
) -> None:
    draw = ImageDraw.Draw(image)

    def at(p):
        return transform @ p * scale + offset

    def disc(c, r, fill):
        draw.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=fill)

    eye, er = at(face.eye), face.eye_radius * scale
    if er >= 1.5:
        disc(eye, er, (20, 18, 18))
        disc(
            eye,
            er * 0.78,
            tuple(int(v) for v in vary(rng, EYE_COLOURS[rng.integers(len(EYE_COLOURS))])),
        )
        disc(eye, er * 0.4, (10, 10, 10))
        disc(eye + np.array([-0.25, -0.3]) * er, max(1.0, er * 0.15), (235, 235, 235))
    disc(at(face.nose), max(1.0, face.nose_radius * scale), (38, 30, 30))
    if rng.random() < 0.6:
        o = at(face.whiskers)
        length = face.head_radius * scale * 1.1
        for a in (-12, 0, 12):
            draw.line(
                [tuple(o), tuple(o + transform @ direction(a) * length)],
                fill=(225, 225, 220),
                width=1,
            )


def _distractors(
    rng: np.random.Generator,
    img: Image.Image,
    w: int,
    h: int,
    short: int,
    avoid: tuple[np.ndarray, ...],
) -> None:
    """Shapes on the background; some fur-coloured or fur-textured, some ear- or tail-like."""
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(1, 5))):
        size = short * float(rng.uniform(0.05, 0.2))
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        # mostly plain shapes; a few ear-like triangles and tail-like strokes
        kind = int(rng.choice(5, p=[0.3, 0.3, 0.06, 0.3, 0.04]))
        if kind == 0:
            poly = ellipse(cx, cy, size, size * rng.uniform(0.3, 1.0), rng.uniform(0, np.pi), 24)
        elif kind == 1:
            poly = ellipse(cx, cy, size, size * rng.uniform(0.3, 1.0), rng.uniform(0, np.pi), 4)
        elif kind == 2:  # triangles, like ears
            poly = ellipse(
                cx, cy, size * 0.6, size * rng.uniform(0.3, 0.8), rng.uniform(0, 2 * np.pi), 3
            )
        elif kind == 3:  # blobs
            t = np.linspace(0, 2 * np.pi, 16, endpoint=False)
            r = size * rng.uniform(0.6, 1.0, 16)
            poly = np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)
        else:  # curved strokes, like tails
            path = polyline(
                [cx, cy], np.cumsum(rng.uniform(-40, 40, 4)) + rng.uniform(0, 360), [size * 0.5] * 4
            )
            poly = stroke(path, np.full(len(path), size * rng.uniform(0.1, 0.25)))
        flat = poly.ravel().tolist()
        if rng.random() < 0.35:  # textured: stripes or spots in fur colours, like a coat
            bx0, by0 = np.floor(np.maximum(poly.min(axis=0), 0)).astype(int)
            bx1, by1 = np.ceil(np.minimum(poly.max(axis=0), [w, h])).astype(int)
            if bx1 - bx0 < 2 or by1 - by0 < 2:
                continue
            coat = COATS[("tabby", "spotted", "patches")[rng.integers(3)]]
            colours = [palette_colour(rng, fur_share=1.0, avoid=avoid) for _ in range(2)]
            t = coat_pattern(
                rng, coat, by1 - by0, bx1 - bx0, short * 0.5, float(rng.uniform(0, np.pi))
            )
            m = Image.new("L", (bx1 - bx0, by1 - by0), 0)
            ImageDraw.Draw(m).polygon((poly - [bx0, by0]).ravel().tolist(), fill=255)
            img.paste(colourize(t, colours), (int(bx0), int(by0)), m)
        else:
            colour = tuple(int(v) for v in palette_colour(rng, fur_share=0.6, avoid=avoid))
            draw.polygon(flat, fill=colour)
