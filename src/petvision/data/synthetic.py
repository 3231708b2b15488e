"""The synthetic data source: a deterministic stand-in for the Oxford-IIIT Pet dataset.

No machine of this project reaches the internet, so the default pipeline runs on generated pictures
in the real set's layout (see :mod:`petvision.data.layout`): ``images/<Breed>_<n>.jpg``, trimaps with
1 = pet, 2 = background, 3 = a border band a few pixels wide around the outline, and
``annotations/list.txt``. Cat breeds are capitalized, dog breeds lower-case, as in the real set.

What makes the task mean something:

* Only *shape* tells the species apart. Cats have upright pointed ears, no snout and a long,
  thin, curving tail; dogs have hanging ears, a protruding snout and a shorter, straighter tail.
  Coats (solid, ticked, tabby stripes, spots, patches, colour points) and their colours come from
  one shared pool: each cat breed is paired with a dog breed that has the same typical coat.
* Backgrounds are textured (value noise, stripes, tiles, gradients, spots, often a wall/floor
  split), often out of focus, in a palette where fur colours are common, with distractor shapes,
  some fur-textured (striped, spotted) and a few ear- or tail-like. Across the set no colour marks
  a pet; within one picture the surroundings avoid the pet's own coat colours, so the pet stands
  out from its background as in a photograph (a per-image contrast, which a per-pixel colour rule
  learned over the set cannot use, but a convnet can).
* Pose (standing, sitting, head close-up), facing, rotation, scale and position vary; the pet's
  bounding box spans about 65-115 % of the short side (close-ups more), some pets are cut by the
  image edge (never through the head). Images are JPEG-compressed.

The shapes are deliberately bold: they must survive resizing to 96 px, where the quick preset
trains both models on two CPU cores within a few minutes each.

Every image is drawn from its own random stream seeded by ``(seed, index)``, so the output is
byte-identical whatever the number of worker processes.
"""

from __future__ import annotations

import io
import math
import multiprocessing
import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter
from tqdm import tqdm

from petvision.config import SyntheticConfig
from petvision.data import layout
from petvision.errors import ConfigError, DataError

__all__ = ["BREEDS", "Breed", "GenerateSummary", "Sample", "generate", "plan", "render"]

# --------------------------------------------------------------------------- breeds and coats

# RGB colours shared by both species' coats; backgrounds draw from them too.
FUR_COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (32, 30, 30),
    "dark_brown": (72, 50, 36),
    "brown": (122, 82, 52),
    "ginger": (204, 122, 60),
    "golden": (212, 166, 92),
    "fawn": (198, 170, 124),
    "cream": (234, 218, 188),
    "white": (238, 236, 230),
    "grey": (128, 128, 132),
    "blue_grey": (104, 110, 124),
    "silver": (184, 184, 178),
}
SCENE_COLOURS: tuple[tuple[int, int, int], ...] = (
    (82, 130, 62),
    (112, 122, 60),
    (132, 172, 210),
    (62, 82, 150),
    (170, 52, 50),
    (212, 196, 160),
    (150, 102, 62),
    (150, 150, 150),
    (52, 52, 58),
    (62, 130, 130),
    (112, 72, 130),
    (222, 200, 82),
)
FUR_NAMES = tuple(FUR_COLOURS)
MIN_CONTRAST = 80.0  # RGB distance between a pet's coat and the colours around it
EYE_COLOURS = ((120, 160, 60), (200, 150, 40), (110, 70, 30), (90, 140, 190), (60, 40, 25))


@dataclass(frozen=True)
class Coat:
    pattern: str  # solid | ticked | tabby | spotted | patches | points
    base: tuple[str, ...]
    secondary: tuple[str, ...] = ()


COATS: dict[str, Coat] = {
    "black": Coat("solid", ("black", "dark_brown")),
    "white": Coat("solid", ("white", "cream")),
    "grey": Coat("solid", ("grey", "blue_grey", "silver")),
    "ginger": Coat("ticked", ("ginger", "golden", "brown", "fawn")),
    "tabby": Coat(
        "tabby", ("ginger", "brown", "silver", "fawn", "golden"), ("black", "dark_brown", "brown")
    ),
    "spotted": Coat(
        "spotted", ("golden", "fawn", "silver", "white", "ginger"), ("black", "dark_brown", "brown")
    ),
    "patches": Coat("patches", ("white", "cream"), ("black", "brown", "ginger", "dark_brown")),
    "points": Coat("points", ("cream", "fawn", "white"), ("dark_brown", "black", "brown")),
}


@dataclass(frozen=True)
class Breed:
    """Shape in units of the body's length; ``ear`` and ``snout`` in units of the head's radius."""

    name: str
    coat: str  # its typical coat (a cat breed and a dog breed share each one)
    body_depth: float  # half-height of the body ellipse
    leg_length: float
    head: float  # head radius
    ear: float  # cats: height of the upright ear; dogs: length of the hanging ear
    snout: float  # how far a dog's snout protrudes beyond the head; 0 for cats
    tail_length: float
    tail_width: float

    @property
    def species(self) -> int:
        return layout.species_of(self.name)


BREEDS: tuple[Breed, ...] = (
    # cats: upright triangular ears, no snout, long thin tail
    Breed("Abyssinian", "ginger", 0.24, 0.24, 0.26, 1.44, 0.00, 0.78, 0.075),
    Breed("Bengal", "spotted", 0.25, 0.24, 0.26, 1.25, 0.00, 0.76, 0.083),
    Breed("Bombay", "black", 0.25, 0.23, 0.27, 1.25, 0.00, 0.74, 0.075),
    Breed("Maine_Coon", "tabby", 0.28, 0.24, 0.27, 1.50, 0.00, 0.80, 0.128),
    Breed("Persian", "white", 0.28, 0.19, 0.28, 1.00, 0.00, 0.63, 0.128),
    Breed("Ragdoll", "patches", 0.27, 0.23, 0.27, 1.19, 0.00, 0.74, 0.112),
    Breed("Russian_Blue", "grey", 0.24, 0.24, 0.26, 1.38, 0.00, 0.76, 0.075),
    Breed("Siamese", "points", 0.22, 0.27, 0.25, 1.62, 0.00, 0.83, 0.068),
    # dogs: hanging ears, protruding snout, shorter straighter tail
    Breed("basset_hound", "patches", 0.27, 0.14, 0.27, 2.07, 1.23, 0.34, 0.098),
    Breed("boxer", "tabby", 0.28, 0.33, 0.27, 1.15, 0.85, 0.19, 0.105),
    Breed("english_cocker_spaniel", "ginger", 0.28, 0.25, 0.27, 1.95, 1.04, 0.26, 0.105),
    Breed("german_shorthaired", "spotted", 0.25, 0.33, 0.26, 1.49, 1.30, 0.27, 0.090),
    Breed("great_pyrenees", "white", 0.32, 0.30, 0.28, 1.26, 1.04, 0.36, 0.150),
    Breed("havanese", "grey", 0.29, 0.21, 0.27, 1.61, 0.85, 0.29, 0.135),
    Breed("newfoundland", "black", 0.33, 0.28, 0.28, 1.26, 0.98, 0.34, 0.150),
    Breed("pug", "points", 0.31, 0.23, 0.29, 1.03, 0.78, 0.15, 0.120),
)
COAT_NAMES = tuple(COATS)
TYPICAL_COAT_P = 0.7  # otherwise any coat: breeds hint at colour, species never do


# --------------------------------------------------------------------------- geometry (canonical frame)
# The pet faces +x, y points down (as in images); the body is one unit long.


def _ellipse(
    cx: float, cy: float, rx: float, ry: float, angle: float = 0.0, n: int = 32
) -> np.ndarray:
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    x, y = rx * np.cos(t), ry * np.sin(t)
    c, s = math.cos(angle), math.sin(angle)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)


def _stroke(points: np.ndarray, widths: np.ndarray, cap_points: int = 6) -> np.ndarray:
    """A polygon around a polyline, ``widths`` (full width at each point) tapering along it,
    with rounded ends."""
    points = np.asarray(points, dtype=np.float64)
    d = np.gradient(points, axis=0)
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9)
    normal = np.stack([-d[:, 1], d[:, 0]], axis=1) * (np.asarray(widths)[:, None] / 2)
    left, right = points + normal, points - normal

    def cap(center, direction, radius, start_angle):
        a0 = math.atan2(direction[1], direction[0]) + start_angle
        t = a0 + np.linspace(0, np.pi, cap_points + 2)[1:-1]
        return center + radius * np.stack([np.cos(t), np.sin(t)], axis=1)

    end_cap = cap(points[-1], d[-1], widths[-1] / 2, -np.pi / 2)
    start_cap = cap(points[0], -d[0], widths[0] / 2, -np.pi / 2)
    return np.concatenate([left, end_cap, right[::-1], start_cap])


def _path(start, angles_deg, lengths) -> np.ndarray:
    """A polyline walked from ``start`` by segments of the given directions and lengths."""
    pts = [np.asarray(start, dtype=np.float64)]
    for a, length in zip(angles_deg, lengths):
        r = math.radians(a)
        pts.append(pts[-1] + length * np.array([math.cos(r), math.sin(r)]))
    return np.array(pts)


def _dir(deg: float) -> np.ndarray:
    r = math.radians(deg)
    return np.array([math.cos(r), math.sin(r)])


@dataclass
class Part:
    polygon: np.ndarray
    shade: float  # brightness factor: far-side limbs are darker
    extremity: bool = False  # coloured by a "points" coat (ears, face, legs, tail)
    outline: float = 0.0  # >0: draw the outline this much darker (an ear lying on the head)


@dataclass
class Face:
    head: np.ndarray
    head_radius: float
    eye: np.ndarray
    eye_radius: float
    nose: np.ndarray
    nose_radius: float
    whiskers: np.ndarray | None  # origin of a cat's whiskers


def _jitter(rng: np.random.Generator, value: float, spread: float = 0.12) -> float:
    return value * float(rng.uniform(1 - spread, 1 + spread))


def _pet_parts(rng: np.random.Generator, breed: Breed, pose: str) -> tuple[list[Part], Face]:
    """The pet as painter-ordered polygons in the canonical frame, and where its face goes."""
    is_cat = breed.species == layout.CAT
    depth = _jitter(rng, breed.body_depth)
    leg = _jitter(rng, breed.leg_length)
    rh = _jitter(rng, breed.head, 0.1)
    ear = _jitter(rng, breed.ear, 0.15)
    snout = _jitter(rng, breed.snout, 0.15)
    tail_len = _jitter(rng, breed.tail_length, 0.15)
    tail_w = _jitter(rng, breed.tail_width, 0.15) * 1.2
    leg_w = 0.13 if not is_cat else 0.12
    head_tilt = float(rng.uniform(-18, 18))
    back, front = [], []  # drawn behind / in front of the body

    if pose == "sitting":
        body_angle = math.radians(-55 + rng.uniform(-8, 8))
        body = Part(_ellipse(0.0, 0.0, 0.36, depth, body_angle), 1.0)
        ground = 0.38
        haunch = Part(_ellipse(-0.13, 0.2, 0.22, 0.18, math.radians(-20)), 0.97)
        leg_widths = np.array([leg_w, leg_w * 0.9])
        back.append(
            Part(_stroke(np.array([[0.08, -0.02], [0.11, ground]]), leg_widths), 0.75, True)
        )
        front.append(haunch)
        front.append(Part(_ellipse(0.0, ground - 0.03, 0.11, 0.045), 0.95, True))
        front.append(
            Part(_stroke(np.array([[0.16, -0.02], [0.19, ground]]), leg_widths), 1.0, True)
        )
        head_c = np.array([0.25, -0.36 - 0.4 * rh])
        neck_from = np.array([0.17, -0.2])
        tail_base = np.array([-0.3, 0.28])
        if is_cat:  # curled round the paws on the ground
            tail = _path(
                tail_base, [120, 45, 0, -10], np.array([0.12, 0.12, 0.25, 0.2]) * tail_len / 0.69
            )
        else:
            tail = _path(tail_base, [170, 190], np.array([0.5, 0.5]) * tail_len)
    else:
        body_angle = math.radians(rng.uniform(-6, 6))
        body = Part(_ellipse(0.0, 0.0, 0.5, depth, body_angle), 1.0)
        bottom = depth * 0.3 + leg + depth * 0.7
        for x, shade, layer in (
            (0.24, 0.75, back),
            (-0.4, 0.75, back),
            (0.33, 1.0, front),
            (-0.31, 1.0, front),
        ):
            swing = float(rng.uniform(-0.07, 0.07))
            pts = np.array([[x, 0.0], [x + swing, bottom]])
            layer.append(Part(_stroke(pts, np.array([leg_w * 1.25, leg_w * 0.85])), shade, True))
        head_c = np.array([0.56, -depth - 0.55 * rh - float(rng.uniform(0.0, 0.12))])
        neck_from = np.array([0.36, -0.2 * depth])
        tail_base = np.array([-0.47, -0.35 * depth])
        if is_cat:  # back, then up in an S
            seg = np.array([0.18, 0.22, 0.25, 0.2]) * tail_len / 0.85
            tail = _path(tail_base, np.array([200, 235, 275, 300]) + rng.uniform(-15, 15), seg)
        else:  # short, straight, raised or hanging
            lift = float(rng.choice([-45.0, -30.0, 30.0])) + float(rng.uniform(-10, 10))
            tail = _path(tail_base, [180 + lift, 180 + lift * 1.2], np.array([0.5, 0.5]) * tail_len)

    tail_widths = np.linspace(tail_w, tail_w * (0.75 if is_cat else 0.45), len(tail))
    tail_part = Part(_stroke(tail, tail_widths), 0.92, True)
    neck = Part(_stroke(np.array([neck_from, head_c]), np.array([rh * 1.5, rh * 1.3])), 1.0)

    def head_point(angle_deg: float, radius: float) -> np.ndarray:
        return head_c + radius * rh * _dir(angle_deg + head_tilt)

    head_parts_back: list[Part] = []
    head_parts_front: list[Part] = []
    if is_cat:
        head = Part(_ellipse(head_c[0], head_c[1], rh, rh * 0.95, math.radians(head_tilt)), 1.0)
        ears = (
            (-118, -108, 0.8, head_parts_back),
            (-62, -72, 1.0, head_parts_front),
        )  # far ear, near ear
        for base_angle, tip_angle, shade, layer in ears:
            tri = np.array(
                [
                    head_point(base_angle - 27, 0.8),
                    head_point(tip_angle, 1.0 + 0.95 * ear),
                    head_point(base_angle + 27, 0.8),
                ]
            )
            layer.append(Part(tri, shade, True))
        muzzle_c = head_c + _rot(head_tilt) @ (rh * np.array([0.72, 0.32]))
        muzzle = Part(_ellipse(muzzle_c[0], muzzle_c[1], rh * 0.34, rh * 0.26), 1.0, True)
        head_parts_front.append(muzzle)
        nose_c = head_point(12, 0.98)
        whiskers = head_point(20, 0.9)
        nose_r = 0.12 * rh
    else:
        head = Part(
            _ellipse(head_c[0], head_c[1], rh * 1.04, rh * 0.95, math.radians(head_tilt)), 1.0
        )
        root = head_point(-125, 0.7)
        tip = head_c + _rot(head_tilt) @ np.array([-0.45 * rh, (ear + 0.05) * rh])
        length = float(np.linalg.norm(tip - root))
        mid = (root + tip) / 2
        angle = math.atan2(*(tip - root)[::-1])
        flap = _ellipse(mid[0], mid[1], length / 2 + 0.15 * rh, 0.42 * rh, angle)
        head_parts_front.append(Part(flap, 0.9, True, outline=0.5))
        snout_from = head_point(20, 0.35)
        snout_to = head_c + _rot(head_tilt) @ (rh * np.array([0.85 + snout, 0.38]))
        snout_part = _stroke(np.array([snout_from, snout_to]), np.array([rh * 1.05, rh * 0.8]))
        head_parts_back.append(Part(snout_part, 1.0, True))
        nose_c = snout_to + _rot(head_tilt) @ (rh * np.array([0.22, -0.12]))
        nose_r = 0.14 * rh
        whiskers = None

    face = Face(
        head_c,
        rh,
        head_point(-22, 0.42),
        rh * float(rng.uniform(0.12, 0.16)),
        nose_c,
        nose_r,
        whiskers,
    )
    parts = [tail_part, *back, body, *front, neck, *head_parts_back, head, *head_parts_front]
    if not is_cat:  # the snout goes over the head's edge, the ear over both
        parts = [tail_part, *back, body, *front, neck, head, *head_parts_back, *head_parts_front]
    return parts, face


def _rot(deg: float) -> np.ndarray:
    r = math.radians(deg)
    c, s = math.cos(r), math.sin(r)
    return np.array([[c, -s], [s, c]])


# --------------------------------------------------------------------------- textures


def _palette_colour(
    rng: np.random.Generator, fur_share: float = 0.55, avoid: tuple[np.ndarray, ...] = ()
) -> np.ndarray:
    """A scene colour, often a fur colour, but not one close to ``avoid`` (this pet's coat): fur
    colours fill backgrounds across the set, so no colour marks a pet, yet within one picture the
    pet stands out from its surroundings as it would in a photograph."""
    for _ in range(20):
        if rng.random() < fur_share:
            colour = _vary(rng, FUR_COLOURS[FUR_NAMES[rng.integers(len(FUR_NAMES))]])
        else:
            colour = _vary(rng, SCENE_COLOURS[rng.integers(len(SCENE_COLOURS))])
        if all(float(np.linalg.norm(colour - a)) >= MIN_CONTRAST for a in avoid):
            break
    return colour


def _vary(rng: np.random.Generator, colour, amount: float = 14.0) -> np.ndarray:
    c = np.asarray(colour, dtype=np.float32) * float(rng.uniform(0.88, 1.12))
    return np.clip(c + rng.uniform(-amount, amount, 3), 0, 255).astype(np.float32)


def _value_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Smooth noise in [0, 1], features about ``cell`` pixels across."""
    gh, gw = max(2, int(h / cell) + 2), max(2, int(w / cell) + 2)
    small = (rng.random((gh, gw)) * 255).astype(np.uint8)
    return (
        np.asarray(
            Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32
        )
        / 255.0
    )


def _coords(h: int, w: int, angle: float) -> np.ndarray:
    """Distance along direction ``angle`` (radians) for each pixel."""
    y = np.arange(h, dtype=np.float32)[:, None]
    x = np.arange(w, dtype=np.float32)[None, :]
    return x * np.float32(math.cos(angle)) + y * np.float32(math.sin(angle))


def _colourize(t: np.ndarray | Image.Image, colours: list[np.ndarray]) -> Image.Image:
    """Map ``t`` in [0, 1] (or an 8-bit image) piecewise-linearly through ``colours``: a palette
    image converted to RGB, much cheaper than blending float images."""
    stops = np.linspace(0, 255, len(colours))
    palette = np.stack(
        [np.interp(np.arange(256), stops, [c[ch] for c in colours]) for ch in range(3)], axis=1
    )
    img = t if isinstance(t, Image.Image) else _grey(t)
    img = Image.frombytes("P", img.size, img.tobytes())
    img.putpalette(np.clip(np.round(palette), 0, 255).astype(np.uint8).tobytes())
    return img.convert("RGB")


def _stripes(rng, h, w, period, angle, warp=0.0, sharp=3.0) -> np.ndarray:
    phase = _coords(h, w, angle) * np.float32(2 * np.pi / period) + np.float32(
        rng.uniform(0, 2 * np.pi)
    )
    if warp:
        phase += _value_noise(rng, h, w, period * 3) * np.float32(warp)
    t = np.sin(phase)
    t *= np.float32(sharp)
    t += np.float32(0.5)
    return np.clip(t, 0, 1, out=t)


def _spots(rng, h, w, radius, density) -> np.ndarray:
    img = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(img)
    count = int(density * h * w / (radius * radius * 4)) + 1
    xs, ys = rng.uniform(0, w, count), rng.uniform(0, h, count)
    rs = rng.uniform(0.6, 1.3, count) * radius
    for x, y, r in zip(xs, ys, rs):
        draw.ellipse([x - r, y - r * 0.8, x + r, y + r * 0.8], fill=255)
    return np.asarray(img, dtype=np.float32) / 255.0


def _tone(
    rng: np.random.Generator, colour: np.ndarray, avoid: tuple[np.ndarray, ...]
) -> np.ndarray:
    """A darker or lighter shade of ``colour``: most real surfaces are one material, not two."""
    if rng.random() < 0.5:
        shade = colour * np.float32(rng.uniform(0.55, 0.85))
    else:
        shade = colour + (255 - colour) * np.float32(rng.uniform(0.2, 0.45))
    return shade if all(float(np.linalg.norm(shade - a)) >= MIN_CONTRAST for a in avoid) else colour


def _background_texture(
    rng: np.random.Generator, full_h: int, full_w: int, avoid: tuple[np.ndarray, ...]
) -> Image.Image:
    # drawn at half resolution and enlarged: a quarter of the arithmetic, and backgrounds are soft anyway
    h, w = (full_h + 1) // 2, (full_w + 1) // 2
    first = _palette_colour(rng, avoid=avoid)
    contrasting = rng.random() < 0.3
    colours = [
        first,
        _palette_colour(rng, avoid=avoid) if contrasting else _tone(rng, first, avoid),
    ]
    kind = rng.integers(5)
    if kind == 0:  # blotchy noise, sometimes in three colours
        t = _value_noise(rng, h, w, float(rng.uniform(5, 30)))
        if rng.random() < 0.5:
            colours.append(_palette_colour(rng, avoid=avoid))
    elif kind == 1:  # stripes, some as fine as a tabby's
        t = _stripes(
            rng,
            h,
            w,
            float(rng.uniform(4, 25)),
            float(rng.uniform(0, np.pi)),
            warp=float(rng.choice([0.0, 2.0])),
            sharp=float(rng.uniform(0.6, 4.0)),
        )
    elif kind == 2:  # tiles with darker grout
        size, angle = float(rng.uniform(10, 40)), float(rng.uniform(-0.3, 0.3))
        u = _coords(h, w, angle) / np.float32(size)
        v = _coords(h, w, angle + np.pi / 2) / np.float32(size)
        checker = ((np.floor(u) + np.floor(v)) % 2).astype(np.float32)
        grout = np.minimum(u % 1, v % 1) < 0.08
        t = np.where(grout, np.float32(0), np.float32(0.5) + checker * np.float32(0.5))
        colours.insert(0, colours[0] * np.float32(rng.uniform(0.3, 0.7)))
    elif kind == 3:  # gradient
        t = _coords(h, w, float(rng.uniform(0, 2 * np.pi)))
        t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
    else:  # spots
        t = _spots(rng, h, w, float(rng.uniform(2, 7)), float(rng.uniform(0.1, 0.4)))
    return _colourize(_grey(t).resize((full_w, full_h), Image.Resampling.BILINEAR), colours)


def _background(
    rng: np.random.Generator, h: int, w: int, avoid: tuple[np.ndarray, ...]
) -> Image.Image:
    bg = _background_texture(rng, h, w, avoid)
    if rng.random() < 0.6:  # a wall and a floor
        floor = _background_texture(rng, h, w, avoid)
        y_left, y_right = rng.uniform(0.35, 0.75, 2) * h
        mask = Image.new("L", (w, h), 0)
        ImageDraw.Draw(mask).polygon([(0, y_left), (w, y_right), (w, h), (0, h)], fill=255)
        bg = Image.composite(floor, bg, mask)
    return bg


def _coat_colours(rng: np.random.Generator, coat: Coat) -> tuple[np.ndarray, np.ndarray]:
    base = _vary(rng, FUR_COLOURS[coat.base[rng.integers(len(coat.base))]])
    second = (
        _vary(rng, FUR_COLOURS[coat.secondary[rng.integers(len(coat.secondary))]])
        if coat.secondary
        else base * np.float32(0.6)
    )
    return base, second


def _coat_pattern(
    rng: np.random.Generator, coat: Coat, h: int, w: int, scale: float, body_angle: float
) -> np.ndarray:
    """How far each pixel of an ``h`` x ``w`` crop goes from the coat's base colour to its secondary
    one: stripes, spots, patches; 0 everywhere for a plain coat."""
    if coat.pattern == "tabby":
        period = scale * float(rng.uniform(0.06, 0.1))
        t = _stripes(rng, h, w, period, body_angle, warp=3.0, sharp=1.5) * np.float32(0.85)
    elif coat.pattern == "spotted":
        t = _spots(
            rng, h, w, scale * float(rng.uniform(0.025, 0.045)), float(rng.uniform(0.15, 0.3))
        ) * np.float32(0.9)
    elif coat.pattern == "patches":
        t = np.clip((_value_noise(rng, h, w, scale * 0.25) - np.float32(0.5)) * np.float32(6), 0, 1)
    else:
        t = np.zeros((h, w), np.float32)
    return t


def _grey(values: np.ndarray) -> Image.Image:
    """A float map in [0, 1] as an 8-bit image."""
    return Image.fromarray(
        np.clip(values * np.float32(255) + np.float32(0.5), 0, 255).astype(np.uint8)
    )


# --------------------------------------------------------------------------- one image

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


def _draw(size, polys, values, outlines=None, width=1) -> Image.Image:
    img = Image.new("L", size, 0)
    draw = ImageDraw.Draw(img)
    for i, (poly, value) in enumerate(zip(polys, values)):
        flat = poly.ravel().tolist()
        draw.polygon(flat, fill=int(value))
        if outlines is not None and outlines[i]:
            draw.line(flat + flat[:2], fill=int(outlines[i]), width=width, joint="curve")
    return img


def _band(mask: Image.Image, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """(dilated, eroded) by a square of side 2 * radius + 1, as booleans."""
    blurred = np.asarray(mask.filter(ImageFilter.BoxBlur(radius)))
    return blurred > 0, blurred >= 255


def render(cfg: SyntheticConfig, index: int, breed: Breed, stem: str = "") -> Sample:
    """Draw image ``index``: a pure function of ``(cfg, index, breed)``."""
    rng = np.random.default_rng([cfg.seed, index])
    w, h = _image_size(rng, cfg)
    short = min(w, h)

    # ---- the pet in the canonical frame, then placed in the image
    pose = ("standing", "sitting", "closeup")[int(rng.choice(3, p=[0.35, 0.3, 0.35]))]
    parts, face = _pet_parts(rng, breed, "sitting" if pose == "sitting" else "standing")
    flip = -1.0 if rng.random() < 0.5 else 1.0
    angle = float(rng.uniform(-15, 15))
    transform = _rot(angle) @ np.diag([flip, 1.0])
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

    # the pet's pixel box (parts may run outside the image)
    pts = np.concatenate(placed)
    x0, y0 = np.floor(np.maximum(pts.min(axis=0) - 4, 0)).astype(int)
    x1, y1 = np.ceil(np.minimum(pts.max(axis=0) + 4, [w, h])).astype(int)

    # ---- background, distractors, a soft shadow under the pet
    coat = (
        COATS[breed.coat]
        if rng.random() < TYPICAL_COAT_P
        else COATS[COAT_NAMES[rng.integers(len(COATS))]]
    )
    base, second = _coat_colours(rng, coat)
    avoid = (base, second) if coat.pattern != "solid" else (base,)
    image = _background(rng, h, w, avoid)
    _distractors(rng, image, w, h, short, avoid)
    if (
        rng.random() < 0.7
    ):  # depth of field: the background a little out of focus (a box blur: cheap)
        image = image.filter(ImageFilter.BoxBlur(float(rng.uniform(0.9, 4.3))))
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

    # ---- the pet, drawn in its box only
    full_mask = Image.new("L", (w, h), 0)
    if x1 > x0 and y1 > y0:
        cw, ch = int(x1 - x0), int(y1 - y0)
        local = [p - [x0, y0] for p in placed]
        line_w = max(1, round(scale * 0.012))
        shade_img = _draw(
            (cw, ch),
            local,
            [255 * p.shade for p in parts],
            [255 * p.shade * (1 - p.outline) if p.outline else 0 for p in parts],
            line_w,
        )
        shade = np.asarray(shade_img, dtype=np.float32) / np.float32(255)
        inside = shade > 0
        mask_img = Image.fromarray(inside.astype(np.uint8) * np.uint8(255))
        # darker towards the outline: the pet reads as a rounded body, not a flat cut-out
        rim = np.asarray(
            mask_img.filter(ImageFilter.BoxBlur(max(1, round(scale * 0.035)))), np.float32
        )
        rim /= np.float32(255)
        body_dir = math.radians(angle) + (0 if flip > 0 else math.pi)
        t = _coat_pattern(rng, coat, ch, cw, scale, body_dir + math.pi / 2)
        if coat.pattern == "points" or (coat.pattern == "patches" and rng.random() < 0.5):
            ext_img = _draw((cw, ch), local, [255 if p.extremity else 0 for p in parts])
            if coat.pattern == "points":  # the dark mask round the face
                fc = (
                    transform @ (face.head + face.head_radius * np.array([0.5, 0.1])) * scale
                    + offset
                    - [x0, y0]
                )
                r = face.head_radius * scale * 0.75
                ImageDraw.Draw(ext_img).ellipse(
                    [fc[0] - r, fc[1] - r, fc[0] + r, fc[1] + r], fill=255
                )
            ext = np.asarray(
                ext_img.filter(ImageFilter.BoxBlur(max(1, round(scale * 0.03)))), np.float32
            )
            t = t + (1 - t) * ext * np.float32(0.85 / 255)
        amount = np.float32(0.32 if coat.pattern == "ticked" else 0.16)
        light = shade * (np.float32(1) - amount * _value_noise(rng, ch, cw, scale * 0.3))
        light *= np.float32(0.55) + np.float32(0.45) * np.clip(
            (rim - np.float32(0.5)) * np.float32(2.2), 0, 1
        )
        pet = ImageChops.multiply(
            _colourize(t, [base, second]), Image.merge("RGB", [_grey(light)] * 3)
        )
        image.paste(pet, (int(x0), int(y0)), mask_img.filter(ImageFilter.BoxBlur(1)))
        full_mask.paste(mask_img, (int(x0), int(y0)))

    # ---- lighting: a gradient across the scene, a global level, sensor grain
    g = _coords(
        -(-h // 8), -(-w // 8), float(rng.uniform(0, 2 * np.pi))
    )  # smooth: 1/8 size, enlarged
    g -= g.min()
    g *= np.float32(rng.uniform(0.0, 0.3) / max(float(g.max()), 1.0))
    gain = _grey(1 - g).resize((w, h), Image.Resampling.BILINEAR)
    image = ImageChops.multiply(image, Image.merge("RGB", [gain] * 3))
    level = float(rng.uniform(0.9, 1.25))
    grain = _grey(_grain(rng, h, w) * np.float32(rng.uniform(2, 9) / 255) + np.float32(0.5))
    # (image + 128 + noise) * level - 128 * level: the level and the grain in one pass
    image = ImageChops.add(image, Image.merge("RGB", [grain] * 3), 1 / level, -round(128 * level))

    # ---- the face, drawn after shading so the eye stays crisp
    _draw_face(rng, image, face, transform, scale, offset)

    # ---- trimap: pet inside, a band straddling the outline, background
    trimap = np.full((h, w), layout.TRIMAP_BACKGROUND, np.uint8)
    if x1 > x0 and y1 > y0:
        radius = max(1, round(short / 130))
        pad = radius + 1
        bx0, by0, bx1, by1 = max(0, x0 - pad), max(0, y0 - pad), min(w, x1 + pad), min(h, y1 + pad)
        dilated, eroded = _band(full_mask.crop((bx0, by0, bx1, by1)), radius)
        band = trimap[by0:by1, bx0:bx1]
        band[dilated] = layout.TRIMAP_BORDER
        band[eroded] = layout.TRIMAP_PET

    quality = int(rng.integers(cfg.jpeg_quality_min, cfg.jpeg_quality_max + 1))
    return Sample(stem, breed.name, breed.species, np.asarray(image), trimap, quality)


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
            tuple(int(v) for v in _vary(rng, EYE_COLOURS[rng.integers(len(EYE_COLOURS))])),
        )
        disc(eye, er * 0.4, (10, 10, 10))
        disc(eye + np.array([-0.25, -0.3]) * er, max(1.0, er * 0.15), (235, 235, 235))
    disc(at(face.nose), max(1.0, face.nose_radius * scale), (38, 30, 30))
    if face.whiskers is not None and rng.random() < 0.6:
        o = at(face.whiskers)
        length = face.head_radius * scale * 1.1
        for a in (-12, 0, 12):
            draw.line(
                [tuple(o), tuple(o + transform @ _dir(a) * length)], fill=(225, 225, 220), width=1
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
            poly = _ellipse(cx, cy, size, size * rng.uniform(0.3, 1.0), rng.uniform(0, np.pi), 24)
        elif kind == 1:
            poly = _ellipse(cx, cy, size, size * rng.uniform(0.3, 1.0), rng.uniform(0, np.pi), 4)
        elif kind == 2:  # triangles, like ears
            poly = _ellipse(
                cx, cy, size * 0.6, size * rng.uniform(0.3, 0.8), rng.uniform(0, 2 * np.pi), 3
            )
        elif kind == 3:  # blobs
            t = np.linspace(0, 2 * np.pi, 16, endpoint=False)
            r = size * rng.uniform(0.6, 1.0, 16)
            poly = np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)
        else:  # curved strokes, like tails
            path = _path(
                [cx, cy], np.cumsum(rng.uniform(-40, 40, 4)) + rng.uniform(0, 360), [size * 0.5] * 4
            )
            poly = _stroke(path, np.full(len(path), size * rng.uniform(0.1, 0.25)))
        flat = poly.ravel().tolist()
        if rng.random() < 0.35:  # textured: stripes or spots in fur colours, like a coat
            bx0, by0 = np.floor(np.maximum(poly.min(axis=0), 0)).astype(int)
            bx1, by1 = np.ceil(np.minimum(poly.max(axis=0), [w, h])).astype(int)
            if bx1 - bx0 < 2 or by1 - by0 < 2:
                continue
            coat = COATS[("tabby", "spotted", "patches")[rng.integers(3)]]
            colours = [_palette_colour(rng, fur_share=1.0, avoid=avoid) for _ in range(2)]
            t = _coat_pattern(
                rng, coat, by1 - by0, bx1 - bx0, short * 0.5, float(rng.uniform(0, np.pi))
            )
            m = Image.new("L", (bx1 - bx0, by1 - by0), 0)
            ImageDraw.Draw(m).polygon((poly - [bx0, by0]).ravel().tolist(), fill=255)
            img.paste(_colourize(t, colours), (int(bx0), int(by0)), m)
        else:
            colour = tuple(int(v) for v in _palette_colour(rng, fur_share=0.6, avoid=avoid))
            draw.polygon(flat, fill=colour)


# --------------------------------------------------------------------------- the data set


@dataclass(frozen=True)
class GenerateSummary:
    root: Path
    num_images: int
    species_counts: dict[str, int]  # {"cat": n, "dog": n}
    breed_counts: dict[str, int]
    seconds: float


def plan(cfg: SyntheticConfig) -> list[tuple[int, Breed, str]]:
    """``(index, breed, stem)`` for every image: species alternate (an exact balance), the breed
    within a species is drawn from ``(seed, index)``, and images are numbered 1, 2, ... per breed."""
    by_species = {s: [b for b in BREEDS if b.species == s] for s in (layout.CAT, layout.DOG)}
    counts: Counter[str] = Counter()
    jobs = []
    for index in range(cfg.num_images):
        choices = by_species[layout.CAT if index % 2 == 0 else layout.DOG]
        breed = choices[int(np.random.default_rng([cfg.seed, index, 1]).integers(len(choices)))]
        counts[breed.name] += 1
        jobs.append((index, breed, f"{breed.name}_{counts[breed.name]}"))
    return jobs


def _check(cfg: SyntheticConfig) -> None:
    if cfg.num_images < 1:
        raise ConfigError(f"data.synthetic.num_images={cfg.num_images!r}: must be at least 1")
    if not 64 <= cfg.min_side <= cfg.max_side:
        raise ConfigError(
            f"data.synthetic.min_side={cfg.min_side!r}, max_side={cfg.max_side!r}: "
            "need 64 <= min_side <= max_side"
        )
    if not 1 <= cfg.jpeg_quality_min <= cfg.jpeg_quality_max <= 100:
        raise ConfigError(
            f"data.synthetic.jpeg_quality_min={cfg.jpeg_quality_min!r}, "
            f"jpeg_quality_max={cfg.jpeg_quality_max!r}: need 1 <= min <= max <= 100"
        )


_WORKER_STATE: dict = {}


def _init_worker(cfg: SyntheticConfig, root: Path) -> None:
    _WORKER_STATE.update(cfg=cfg, layout=layout.Layout(root))


def _write_one(job: tuple[int, Breed, str]) -> str:
    index, breed, stem = job
    cfg, where = _WORKER_STATE["cfg"], _WORKER_STATE["layout"]
    sample = render(cfg, index, breed, stem)
    # encoded in memory, written in one call: PIL's own file writes cost more than the encoding
    jpeg, png = io.BytesIO(), io.BytesIO()
    Image.fromarray(sample.image).save(jpeg, "JPEG", quality=sample.jpeg_quality)
    Image.fromarray(sample.trimap).save(
        png, "PNG", compress_level=1
    )  # trimaps compress well anyway
    where.image_path(stem).write_bytes(jpeg.getvalue())
    where.trimap_path(stem).write_bytes(png.getvalue())
    return stem


def generate(root: Path, cfg: SyntheticConfig, workers: int = 0) -> GenerateSummary:
    """Write ``cfg.num_images`` generated pets into ``root`` in the Oxford-IIIT Pet layout.

    ``workers`` processes draw the images (0 = one per core); the bytes written do not depend on
    it. ``root`` should be an empty folder: the caller renames it into place when this returns.
    """
    _check(cfg)
    root = Path(root)
    where = layout.Layout(root)
    for folder in (where.images_dir, where.trimaps_dir):
        if folder.is_dir() and any(folder.iterdir()):
            raise DataError(
                f"{folder}: not empty; the synthetic source writes into an empty folder"
            )
        folder.mkdir(parents=True, exist_ok=True)
    jobs = plan(cfg)
    workers = min(workers or os.cpu_count() or 1, len(jobs))
    started = time.perf_counter()
    progress = tqdm(total=len(jobs), desc="synthetic pets", unit="img")
    try:
        if workers == 1:
            _init_worker(cfg, root)
            for job in jobs:
                _write_one(job)
                progress.update()
        else:
            # spawn, not fork: the caller may have started threads (TensorFlow, MLflow). An executor,
            # not a Pool: a worker that dies raises BrokenProcessPool instead of hanging.
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(
                workers, mp_context=ctx, initializer=_init_worker, initargs=(cfg, root)
            ) as pool:
                for _ in pool.map(_write_one, jobs, chunksize=8):
                    progress.update()
    finally:
        progress.close()
    entries = layout.list_entries(stem for _, _, stem in jobs)
    where.list_file.write_text(layout.format_list(entries))
    species = Counter(layout.SPECIES_NAMES[b.species] for _, b, _ in jobs)
    return GenerateSummary(
        root=root,
        num_images=len(jobs),
        species_counts={name: species[name] for name in layout.SPECIES_NAMES},
        breed_counts=dict(sorted(Counter(b.name for _, b, _ in jobs).items())),
        seconds=time.perf_counter() - started,
    )
