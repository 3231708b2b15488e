"""A pet's outline in a canonical frame: body, legs, tail, head, ears and face, as polygons;
species differ by shape only (ears, snout, tail)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from petvision.data import layout
from petvision.data.synthetic.breeds import Breed

# The pet faces +x, y points down (as in images); the body is one unit long.

# Of the head's radius, for both species: a nose drawn smaller on cats (0.12 against 0.14, an
# earlier generator) told the species apart without any shape.
NOSE_RADIUS = 0.13


def ellipse(
    cx: float, cy: float, rx: float, ry: float, angle: float = 0.0, n: int = 32
) -> np.ndarray:
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    x, y = rx * np.cos(t), ry * np.sin(t)
    c, s = math.cos(angle), math.sin(angle)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)


def stroke(points: np.ndarray, widths: np.ndarray, cap_points: int = 6) -> np.ndarray:
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


def polyline(start, angles_deg, lengths) -> np.ndarray:
    """A polyline walked from ``start`` by segments of the given directions and lengths."""
    pts = [np.asarray(start, dtype=np.float64)]
    for a, length in zip(angles_deg, lengths):
        r = math.radians(a)
        pts.append(pts[-1] + length * np.array([math.cos(r), math.sin(r)]))
    return np.array(pts)


def direction(deg: float) -> np.ndarray:
    r = math.radians(deg)
    return np.array([math.cos(r), math.sin(r)])


@dataclass
class Part:
    polygon: np.ndarray
    shade: float  # brightness factor: far-side limbs are darker
    extremity: bool = False  # coloured by a "points" coat (ears, face, legs, tail)


@dataclass
class Face:
    head: np.ndarray
    head_radius: float
    eye: np.ndarray
    eye_radius: float
    nose: np.ndarray
    nose_radius: float
    whiskers: np.ndarray  # their origin: both species have them, else thin light lines mark cats


def _jitter(rng: np.random.Generator, value: float, spread: float = 0.12) -> float:
    return value * float(rng.uniform(1 - spread, 1 + spread))


@dataclass(frozen=True)
class Proportions:
    """One pet's measures: its breed's, each varied a little (in units of the body's length)."""

    is_cat: bool
    depth: float  # the body's half height
    leg: float
    head_radius: float
    ear: float
    snout: float
    tail_length: float
    tail_width: float
    leg_width: float
    head_tilt: float  # degrees


def _proportions(rng: np.random.Generator, breed: Breed) -> Proportions:
    is_cat = breed.species == layout.CAT
    return Proportions(
        is_cat=is_cat,
        depth=_jitter(rng, breed.body_depth),
        leg=_jitter(rng, breed.leg_length),
        head_radius=_jitter(rng, breed.head, 0.1),
        ear=_jitter(rng, breed.ear, 0.15),
        snout=_jitter(rng, breed.snout, 0.15),
        tail_length=_jitter(rng, breed.tail_length, 0.15),
        tail_width=_jitter(rng, breed.tail_width, 0.15) * 1.2,
        leg_width=0.13 if not is_cat else 0.12,
        head_tilt=float(rng.uniform(-18, 18)),
    )


@dataclass
class Body:
    """A pose's body and legs, and where the neck, head and tail attach."""

    body: Part
    back: list[Part]  # drawn behind the body (far legs)
    front: list[Part]  # drawn in front of it
    head_centre: np.ndarray
    neck_from: np.ndarray
    tail: np.ndarray  # the tail's polyline


def _sitting(rng: np.random.Generator, p: Proportions) -> Body:
    body_angle = math.radians(-55 + rng.uniform(-8, 8))
    body = Part(ellipse(0.0, 0.0, 0.36, p.depth, body_angle), 1.0)
    ground = 0.38
    haunch = Part(ellipse(-0.13, 0.2, 0.22, 0.18, math.radians(-20)), 0.97)
    leg_widths = np.array([p.leg_width, p.leg_width * 0.9])
    back = [Part(stroke(np.array([[0.08, -0.02], [0.11, ground]]), leg_widths), 0.75, True)]
    front = [
        haunch,
        Part(ellipse(0.0, ground - 0.03, 0.11, 0.045), 0.95, True),
        Part(stroke(np.array([[0.16, -0.02], [0.19, ground]]), leg_widths), 1.0, True),
    ]
    head_c = np.array([0.25, -0.36 - 0.4 * p.head_radius])
    tail_base = np.array([-0.3, 0.28])
    if p.is_cat:  # curled round the paws on the ground
        tail = polyline(
            tail_base, [120, 45, 0, -10], np.array([0.12, 0.12, 0.25, 0.2]) * p.tail_length / 0.69
        )
    else:
        tail = polyline(tail_base, [170, 190], np.array([0.5, 0.5]) * p.tail_length)
    return Body(body, back, front, head_c, np.array([0.17, -0.2]), tail)


def _standing(rng: np.random.Generator, p: Proportions) -> Body:
    depth = p.depth
    body_angle = math.radians(rng.uniform(-6, 6))
    body = Part(ellipse(0.0, 0.0, 0.5, depth, body_angle), 1.0)
    bottom = depth * 0.3 + p.leg + depth * 0.7
    back: list[Part] = []
    front: list[Part] = []
    for x, shade, layer in (
        (0.24, 0.75, back),
        (-0.4, 0.75, back),
        (0.33, 1.0, front),
        (-0.31, 1.0, front),
    ):
        swing = float(rng.uniform(-0.07, 0.07))
        pts = np.array([[x, 0.0], [x + swing, bottom]])
        widths = np.array([p.leg_width * 1.25, p.leg_width * 0.85])
        layer.append(Part(stroke(pts, widths), shade, True))
    head_c = np.array([0.56, -depth - 0.55 * p.head_radius - float(rng.uniform(0.0, 0.12))])
    tail_base = np.array([-0.47, -0.35 * depth])
    if p.is_cat:  # back, then up in an S
        seg = np.array([0.18, 0.22, 0.25, 0.2]) * p.tail_length / 0.85
        tail = polyline(tail_base, np.array([200, 235, 275, 300]) + rng.uniform(-15, 15), seg)
    else:  # short, straight, raised or hanging
        lift = float(rng.choice([-45.0, -30.0, 30.0])) + float(rng.uniform(-10, 10))
        tail = polyline(
            tail_base, [180 + lift, 180 + lift * 1.2], np.array([0.5, 0.5]) * p.tail_length
        )
    return Body(body, back, front, head_c, np.array([0.36, -0.2 * depth]), tail)


@dataclass
class Head:
    """The head and what sits on it, painter-ordered around it, and where the face's details go."""

    head: Part
    # Two layers: ``lower`` lies behind the head on cats (the far ear) and over it on dogs (the
    # snout); ``upper`` lies over both (cats: the near ear and the muzzle; dogs: the ear flap).
    lower: list[Part]
    upper: list[Part]
    nose: np.ndarray
    whiskers: np.ndarray


def _head_point(p: Proportions, head_c: np.ndarray, angle_deg: float, radius: float) -> np.ndarray:
    """The point at ``radius`` head radii from the head's centre, ``angle_deg`` from its axis."""
    return head_c + radius * p.head_radius * direction(angle_deg + p.head_tilt)


def _cat_head(p: Proportions, head_c: np.ndarray) -> Head:
    rh, tilt = p.head_radius, p.head_tilt
    head = Part(ellipse(head_c[0], head_c[1], rh, rh * 0.95, math.radians(tilt)), 1.0)
    lower: list[Part] = []
    upper: list[Part] = []
    ears = ((-118, -108, 0.8, lower), (-62, -72, 1.0, upper))  # far ear, near ear
    for base_angle, tip_angle, shade, layer in ears:
        tri = np.array(
            [
                _head_point(p, head_c, base_angle - 27, 0.8),
                _head_point(p, head_c, tip_angle, 1.0 + 0.95 * p.ear),
                _head_point(p, head_c, base_angle + 27, 0.8),
            ]
        )
        layer.append(Part(tri, shade, True))
    muzzle_c = head_c + rotation(tilt) @ (rh * np.array([0.72, 0.32]))
    upper.append(Part(ellipse(muzzle_c[0], muzzle_c[1], rh * 0.34, rh * 0.26), 1.0, True))
    nose = _head_point(p, head_c, 12, 0.98)
    return Head(head, lower, upper, nose, _head_point(p, head_c, 20, 0.9))


def _dog_head(p: Proportions, head_c: np.ndarray) -> Head:
    rh, tilt = p.head_radius, p.head_tilt
    head = Part(ellipse(head_c[0], head_c[1], rh * 1.04, rh * 0.95, math.radians(tilt)), 1.0)
    root = _head_point(p, head_c, -125, 0.7)
    tip = head_c + rotation(tilt) @ np.array([-0.45 * rh, (p.ear + 0.05) * rh])
    length = float(np.linalg.norm(tip - root))
    mid = (root + tip) / 2
    angle = math.atan2(*(tip - root)[::-1])
    flap = ellipse(mid[0], mid[1], length / 2 + 0.15 * rh, 0.42 * rh, angle)
    # No darker outline round the flap: drawn on dogs only, a dark line would tell the species.
    snout_from = _head_point(p, head_c, 20, 0.35)
    snout_to = head_c + rotation(tilt) @ (rh * np.array([0.85 + p.snout, 0.38]))
    snout = stroke(np.array([snout_from, snout_to]), np.array([rh * 1.05, rh * 0.8]))
    nose = snout_to + rotation(tilt) @ (rh * np.array([0.22, -0.12]))
    whiskers = snout_to + rotation(tilt) @ (rh * np.array([0.02, 0.12]))
    return Head(head, [Part(snout, 1.0, True)], [Part(flap, 0.9, True)], nose, whiskers)


def pet_parts(rng: np.random.Generator, breed: Breed, pose: str) -> tuple[list[Part], Face]:
    """The pet as painter-ordered polygons in the canonical frame, and where its face goes."""
    p = _proportions(rng, breed)
    rh = p.head_radius
    pet = _sitting(rng, p) if pose == "sitting" else _standing(rng, p)
    tail_widths = np.linspace(
        p.tail_width, p.tail_width * (0.75 if p.is_cat else 0.45), len(pet.tail)
    )
    tail = Part(stroke(pet.tail, tail_widths), 0.92, True)
    head_c = pet.head_centre
    neck = Part(stroke(np.array([pet.neck_from, head_c]), np.array([rh * 1.5, rh * 1.3])), 1.0)
    head = _cat_head(p, head_c) if p.is_cat else _dog_head(p, head_c)
    face = Face(
        head_c,
        rh,
        _head_point(p, head_c, -22, 0.42),
        rh * float(rng.uniform(0.12, 0.16)),
        head.nose,
        NOSE_RADIUS * rh,
        head.whiskers,
    )
    parts = [tail, *pet.back, pet.body, *pet.front, neck, *head.lower, head.head, *head.upper]
    if not p.is_cat:  # the snout goes over the head's edge, the ear over both
        parts = [tail, *pet.back, pet.body, *pet.front, neck, head.head, *head.lower, *head.upper]
    return parts, face


def rotation(deg: float) -> np.ndarray:
    r = math.radians(deg)
    c, s = math.cos(r), math.sin(r)
    return np.array([[c, -s], [s, c]])
