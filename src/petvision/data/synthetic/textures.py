"""Colours and textures: coats, the cluttered backgrounds in fur colours, value noise, stripes
and spots."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from petvision.data.synthetic.breeds import (
    FUR_COLOURS,
    FUR_NAMES,
    MIN_CONTRAST,
    SCENE_COLOURS,
    Coat,
)


def palette_colour(
    rng: np.random.Generator, fur_share: float = 0.55, avoid: tuple[np.ndarray, ...] = ()
) -> np.ndarray:
    """A scene colour, often a fur colour, but not one close to ``avoid`` (this pet's coat): fur
    colours fill backgrounds across the set, so no colour marks a pet, yet within one picture the
    pet stands out from its surroundings as it would in a photograph."""
    for _ in range(20):
        if rng.random() < fur_share:
            colour = vary(rng, FUR_COLOURS[FUR_NAMES[rng.integers(len(FUR_NAMES))]])
        else:
            colour = vary(rng, SCENE_COLOURS[rng.integers(len(SCENE_COLOURS))])
        if all(float(np.linalg.norm(colour - a)) >= MIN_CONTRAST for a in avoid):
            break
    return colour


def vary(rng: np.random.Generator, colour, amount: float = 14.0) -> np.ndarray:
    c = np.asarray(colour, dtype=np.float32) * float(rng.uniform(0.88, 1.12))
    return np.clip(c + rng.uniform(-amount, amount, 3), 0, 255).astype(np.float32)


def value_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Smooth noise in [0, 1], features about ``cell`` pixels across."""
    gh, gw = max(2, int(h / cell) + 2), max(2, int(w / cell) + 2)
    small = (rng.random((gh, gw)) * 255).astype(np.uint8)
    return (
        np.asarray(
            Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32
        )
        / 255.0
    )


def coords(h: int, w: int, angle: float) -> np.ndarray:
    """Distance along direction ``angle`` (radians) for each pixel."""
    y = np.arange(h, dtype=np.float32)[:, None]
    x = np.arange(w, dtype=np.float32)[None, :]
    return x * np.float32(math.cos(angle)) + y * np.float32(math.sin(angle))


def colourize(t: np.ndarray | Image.Image, colours: list[np.ndarray]) -> Image.Image:
    """Map ``t`` in [0, 1] (or an 8-bit image) piecewise-linearly through ``colours``: a palette
    image converted to RGB, much cheaper than blending float images."""
    stops = np.linspace(0, 255, len(colours))
    palette = np.stack(
        [np.interp(np.arange(256), stops, [c[ch] for c in colours]) for ch in range(3)], axis=1
    )
    img = t if isinstance(t, Image.Image) else grey(t)
    img = Image.frombytes("P", img.size, img.tobytes())
    img.putpalette(np.clip(np.round(palette), 0, 255).astype(np.uint8).tobytes())
    return img.convert("RGB")


def _stripes(rng, h, w, period, angle, warp=0.0, sharp=3.0) -> np.ndarray:
    phase = coords(h, w, angle) * np.float32(2 * np.pi / period) + np.float32(
        rng.uniform(0, 2 * np.pi)
    )
    if warp:
        phase += value_noise(rng, h, w, period * 3) * np.float32(warp)
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
    first = palette_colour(rng, avoid=avoid)
    contrasting = rng.random() < 0.3
    colours = [
        first,
        palette_colour(rng, avoid=avoid) if contrasting else _tone(rng, first, avoid),
    ]
    kind = rng.integers(5)
    if kind == 0:  # blotchy noise, sometimes in three colours
        t = value_noise(rng, h, w, float(rng.uniform(5, 30)))
        if rng.random() < 0.5:
            colours.append(palette_colour(rng, avoid=avoid))
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
        u = coords(h, w, angle) / np.float32(size)
        v = coords(h, w, angle + np.pi / 2) / np.float32(size)
        checker = ((np.floor(u) + np.floor(v)) % 2).astype(np.float32)
        grout = np.minimum(u % 1, v % 1) < 0.08
        t = np.where(grout, np.float32(0), np.float32(0.5) + checker * np.float32(0.5))
        colours.insert(0, colours[0] * np.float32(rng.uniform(0.3, 0.7)))
    elif kind == 3:  # gradient
        t = coords(h, w, float(rng.uniform(0, 2 * np.pi)))
        t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
    else:  # spots
        t = _spots(rng, h, w, float(rng.uniform(2, 7)), float(rng.uniform(0.1, 0.4)))
    return colourize(grey(t).resize((full_w, full_h), Image.Resampling.BILINEAR), colours)


def background(
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


def coat_colours(rng: np.random.Generator, coat: Coat) -> tuple[np.ndarray, np.ndarray]:
    base = vary(rng, FUR_COLOURS[coat.base[rng.integers(len(coat.base))]])
    second = (
        vary(rng, FUR_COLOURS[coat.secondary[rng.integers(len(coat.secondary))]])
        if coat.secondary
        else base * np.float32(0.6)
    )
    return base, second


def coat_pattern(
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
        t = np.clip((value_noise(rng, h, w, scale * 0.25) - np.float32(0.5)) * np.float32(6), 0, 1)
    else:
        t = np.zeros((h, w), np.float32)
    return t


def grey(values: np.ndarray) -> Image.Image:
    """A float map in [0, 1] as an 8-bit image."""
    return Image.fromarray(
        np.clip(values * np.float32(255) + np.float32(0.5), 0, 255).astype(np.uint8)
    )
