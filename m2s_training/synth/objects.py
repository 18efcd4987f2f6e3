"""Object shapes of the synthetic street, as lists of primitives with random proportions.

Each builder returns parts in the object's own frame: x forward, y left, z up, ground at z = 0.
Sizes follow real objects so that hard classes stay small and thin in the scans.
"""

from __future__ import annotations

import numpy as np

from m2s_training.synth.mesh import Part


def _wheels(length: float, width: float, radius: float, tyre: float, semantic: str) -> list[Part]:
    return [
        Part("cylinder", (2 * radius, tyre, 2 * radius), (x, y, radius), semantic, axis="y")
        for x in (0.33 * length, -0.33 * length)
        for y in (0.5 * width - tyre / 2, -0.5 * width + tyre / 2)
    ]


def car(rng: np.random.Generator, semantic: str = "car") -> list[Part]:
    length, width = rng.uniform(3.8, 4.9), rng.uniform(1.7, 1.9)
    body, cabin = rng.uniform(0.65, 0.8), rng.uniform(0.5, 0.65)
    return [
        Part("box", (length, width, body), (0.0, 0.0, 0.3 + body / 2), semantic),
        Part("box", (0.55 * length, width - 0.1, cabin), (-0.05 * length, 0.0, 0.3 + body + cabin / 2), semantic),
        *_wheels(length, width, 0.32, 0.22, semantic),
    ]


def truck(rng: np.random.Generator, semantic: str = "truck") -> list[Part]:
    cargo, width, height = rng.uniform(5.0, 7.5), 2.5, rng.uniform(2.8, 3.6)
    length = cargo + 2.3
    return [
        Part("box", (2.2, width - 0.1, 2.6), (length / 2 - 1.1, 0.0, 1.3 + 0.4), semantic),
        Part("box", (cargo, width, height - 0.9), (-length / 2 + cargo / 2, 0.0, 0.9 + (height - 0.9) / 2), semantic),
        *_wheels(length, width, 0.5, 0.35, semantic),
    ]


def other_vehicle(rng: np.random.Generator, semantic: str = "other-vehicle") -> list[Part]:
    """A bus or coach: long, tall, on small wheels."""
    length, height = rng.uniform(9.0, 12.5), rng.uniform(2.9, 3.3)
    return [
        Part("box", (length, 2.5, height - 0.35), (0.0, 0.0, 0.35 + (height - 0.35) / 2), semantic),
        *_wheels(length, 2.5, 0.5, 0.3, semantic),
    ]


def bicycle(rng: np.random.Generator, semantic: str = "bicycle") -> list[Part]:
    wheel = rng.uniform(0.6, 0.7)
    base = 1.0
    return [
        Part("cylinder", (wheel, 0.04, wheel), (x, 0.0, wheel / 2), semantic, axis="y") for x in (base / 2, -base / 2)
    ] + [
        Part("box", (base, 0.04, 0.04), (0.0, 0.0, wheel * 0.85), semantic),
        Part("box", (0.04, 0.04, 0.45), (-0.15, 0.0, wheel * 0.85 + 0.15), semantic),
        Part("box", (0.04, 0.55, 0.04), (base / 2 - 0.05, 0.0, wheel + 0.35), semantic),
    ]


def motorcycle(rng: np.random.Generator, semantic: str = "motorcycle") -> list[Part]:
    length = rng.uniform(1.9, 2.2)
    return [
        Part("cylinder", (0.62, 0.14, 0.62), (x, 0.0, 0.31), semantic, axis="y")
        for x in (0.38 * length, -0.38 * length)
    ] + [
        Part("box", (0.55 * length, 0.4, 0.45), (0.0, 0.0, 0.6), semantic),
        Part("box", (0.04, 0.7, 0.04), (0.35 * length, 0.0, 1.05), semantic),
    ]


def person(rng: np.random.Generator, semantic: str = "person", seat: float = 0.0) -> list[Part]:
    """A standing (``seat`` = 0) or riding person (``seat`` = saddle height, legs folded)."""
    scale = rng.uniform(0.9, 1.1)
    legs, torso, head = 0.85 * scale, 0.6 * scale, 0.23 * scale
    parts = []
    if seat == 0.0:
        parts += [Part("box", (0.16, 0.15, legs), (0.0, y, legs / 2), semantic) for y in (0.1, -0.1)]
        hip = legs
    else:
        parts.append(Part("box", (0.45, 0.35, 0.15), (0.1, 0.0, seat + 0.07), semantic))
        hip = seat + 0.15
    return [
        *parts,
        Part("box", (0.26, 0.44, torso), (0.0, 0.0, hip + torso / 2), semantic),
        Part("sphere", (head, head, head), (0.0, 0.0, hip + torso + head / 2 + 0.03), semantic),
    ]


def bicyclist(rng: np.random.Generator, semantic: str = "bicyclist") -> list[Part]:
    return bicycle(rng, semantic) + person(rng, semantic, seat=0.85)


def motorcyclist(rng: np.random.Generator, semantic: str = "motorcyclist") -> list[Part]:
    return motorcycle(rng, semantic) + person(rng, semantic, seat=0.8)


def pole(rng: np.random.Generator) -> list[Part]:
    radius, height = rng.uniform(0.05, 0.09), rng.uniform(5.0, 9.0)
    return [Part("cylinder", (2 * radius, 2 * radius, height), (0.0, 0.0, height / 2), "pole")]


def traffic_sign(rng: np.random.Generator) -> list[Part]:
    """A post (class pole) with a plate on top facing along x."""
    height, size = rng.uniform(1.5, 2.0), rng.uniform(0.5, 0.8)
    shape = "cylinder" if rng.random() < 0.5 else "box"
    post = [Part("cylinder", (0.08, 0.08, height), (0.0, 0.0, height / 2), "pole")]
    plate = [Part(shape, (0.04, size, size), (0.06, 0.0, height + size / 2), "traffic-sign", axis="x")]
    return post + plate


def tree(rng: np.random.Generator) -> list[Part]:
    radius, height, crown = rng.uniform(0.12, 0.25), rng.uniform(2.0, 3.2), rng.uniform(2.6, 5.0)
    return [
        Part("cylinder", (2 * radius, 2 * radius, height + 0.5), (0.0, 0.0, (height + 0.5) / 2), "trunk"),
        Part("sphere", (crown, crown, 0.85 * crown), (0.0, 0.0, height + 0.4 * crown), "vegetation"),
    ]


def bush(rng: np.random.Generator) -> list[Part]:
    size = rng.uniform(0.8, 2.0)
    return [Part("sphere", (size * 1.4, size, size), (0.0, 0.0, 0.4 * size), "vegetation")]
