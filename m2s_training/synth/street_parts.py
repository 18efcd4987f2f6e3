"""The pieces the ``kitti`` world's street is built from: lawns, trees, bushes, shrubs, hedges and fences.

Each is a function of a random generator (and where it goes) returning parts or a mesh; the street
(``world_kitti.py``) decides where they stand.
"""

from __future__ import annotations

import itertools

import numpy as np

from m2s_training.synth.mesh import REFLECTIVITY, LabelledMesh, Part, raw_ids
from m2s_training.synth.world import OBJECT_BUILDERS

Span = tuple[float, float]


def heightfield(
    x: Span, y: Span, top: float, bumps: float, slope: float, rng: np.random.Generator, phase: np.ndarray | None = None
) -> LabelledMesh:
    """Uneven terrain over x × y: a 1 m grid rising by ``slope`` per metre away from y[0], plus bumps
    (their four phases drawn here unless given: pieces of one lawn share them and so join up)."""
    xs = np.arange(x[0], x[1] + 1.0, 1.0)
    ys = np.linspace(y[0], y[1], max(2, int(abs(y[1] - y[0])) + 2))
    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    phase = rng.uniform(0, 2 * np.pi, 4) if phase is None else phase
    z = top + slope * np.abs(gy - y[0])
    z += bumps * (np.sin(gx / 7.0 + phase[0]) * np.sin(gy / 5.0 + phase[1]) + 0.5 * np.sin(gx / 2.3 + phase[2]))
    z += rng.normal(0.0, 0.3 * bumps, z.shape)
    vertices = np.stack([gx, gy, z], axis=-1).reshape(-1, 3).astype(np.float32)
    n = len(ys)
    i, j = np.meshgrid(np.arange(len(xs) - 1), np.arange(n - 1), indexing="ij")
    a, b = (i * n + j).ravel(), ((i + 1) * n + j).ravel()
    triangles = np.concatenate([np.stack([a, b, a + 1], 1), np.stack([b, b + 1, a + 1], 1)]).astype(np.uint32)
    count = len(triangles)
    return LabelledMesh(
        vertices,
        triangles,
        np.full(count, raw_ids()["terrain"], np.uint16),
        np.zeros(count, np.uint16),
        np.full(count, REFLECTIVITY["terrain"] * rng.uniform(0.7, 1.3), np.float32),
    )


def pieces(span: Span, longest: float = 4.0) -> list[Span]:
    """``span`` cut into equal pieces of at most ``longest`` metres."""
    edges = np.linspace(span[0], span[1], max(2, int(np.ceil((span[1] - span[0]) / longest)) + 1))
    return list(itertools.pairwise(edges.tolist()))


def _crown(rng: np.random.Generator, height: float, size: float) -> list[Part]:
    """A tree crown of a few overlapping blobs: ragged outline, as leaves look to a LiDAR."""
    parts = []
    for _ in range(rng.integers(3, 6)):
        d = size * rng.uniform(0.5, 0.8)
        offset = rng.normal(0.0, size * 0.2, 3)
        parts.append(
            Part("sphere", (d, d, 0.85 * d), (offset[0], offset[1], height + size / 2 + offset[2]), "vegetation")
        )
    return parts


def tree(rng: np.random.Generator, crown_base: Span = (1.8, 3.5)) -> list[Part]:
    radius, height, size = rng.uniform(0.1, 0.3), rng.uniform(*crown_base), rng.uniform(3.0, 7.0)
    trunk = Part("cylinder", (2 * radius, 2 * radius, height + 1.0), (0.0, 0.0, (height + 1.0) / 2), "trunk")
    return [trunk, *_crown(rng, height, size)]


def bush(rng: np.random.Generator) -> list[Part]:
    size = rng.uniform(0.8, 2.5)
    return [Part("sphere", (size * 1.3, size, size * 0.8), (0.0, 0.0, 0.35 * size), "vegetation")]


def shrub(rng: np.random.Generator) -> list[Part]:
    """Low, wide undergrowth (ground cover, low shrubs): vegetation that barely rises above the grass."""
    width, height = rng.uniform(1.0, 3.5), rng.uniform(0.3, 1.0)
    return [
        Part(
            "sphere",
            (width * rng.uniform(0.6, 1.0), width * rng.uniform(0.6, 1.0), 2 * height),
            (dx, dy, 0),
            "vegetation",
        )
        for dx, dy in rng.normal(0.0, width * 0.25, (int(rng.integers(1, 4)), 2))
    ]


def hedge(x: Span, y: float, ground: float, rng: np.random.Generator, heights: Span = (0.8, 2.5)) -> LabelledMesh:
    """A hedge along x: overlapping clipped blobs of varying height and depth, not a flat-sided box
    (a real hedge's outline is ragged, and beams enter it: ``SensorConfig.vegetation_depth``)."""
    height, thick = rng.uniform(*heights), rng.uniform(0.6, 1.5)
    parts, cursor = [], x[0]
    while cursor < x[1]:
        length = min(rng.uniform(0.8, 2.0), x[1] - cursor + 0.3)
        h = height * rng.uniform(0.8, 1.15)
        t = thick * rng.uniform(0.8, 1.2)
        centre = (cursor + length / 2, y + np.sign(y) * (t / 2 + rng.normal(0.0, 0.08)), ground + h / 2)
        parts.append(Part("sphere", (length * 1.4, t, h * 1.15), centre, "vegetation"))
        cursor += length * 0.8
    return LabelledMesh.from_parts(parts, 0)


def fence(x: Span, y: float, ground: float, rng: np.random.Generator, kind: str | None = None) -> LabelledMesh:
    """A garden fence along x at lateral position ``y``: boards with gaps, or posts and rails, or a
    closed panel. Real fences let many beams through to the yard behind (a solid box does not);
    a closed wall-like plane is what a facade looks like to a LiDAR that sees its lowest 2 m.
    Panels and rails come in pieces of at most 4 m, to follow a bend (``RoadShape``)."""
    height = rng.uniform(0.7, 1.8)
    kind = kind or rng.choice(["boards", "rails", "panel"], p=[0.45, 0.35, 0.2])
    lengths = pieces(x)
    if kind == "panel":
        return LabelledMesh.from_parts(
            [
                Part("box", (x1 - x0, 0.06, height), ((x0 + x1) / 2, y, ground + height / 2), "fence")
                for x0, x1 in lengths
            ],
            0,
        )
    parts, posts = [], np.arange(x[0], x[1], rng.uniform(2.0, 3.0))
    for px in posts:
        parts.append(Part("box", (0.1, 0.1, height + 0.1), (px, y, ground + (height + 0.1) / 2), "fence"))
    rails = rng.integers(2, 4) if kind == "rails" else 2
    for z in np.linspace(0.25, height - 0.1, rails):
        for x0, x1 in lengths:
            parts.append(
                Part("box", (x1 - x0, 0.05, 0.07), ((x0 + x1) / 2, y + 0.05 * np.sign(y), ground + z), "fence")
            )
    if kind == "boards":
        width, gap = rng.uniform(0.07, 0.15), rng.uniform(0.03, 0.12)
        for bx in np.arange(x[0] + width / 2, x[1], width + gap):
            parts.append(Part("box", (width, 0.025, height), (bx, y - 0.02 * np.sign(y), ground + height / 2), "fence"))
    return LabelledMesh.from_parts(parts, 0)


# the street's builders, with KITTI's denser trees and bushes
STREET_OBJECTS = {
    **OBJECT_BUILDERS,
    "tree": tree,
    "bush": bush,
    "shrub": shrub,
    # young, fruit and hedge-row trees keep leaves down to a metre: at 20–40 m, where the beams
    # see only the lowest ~3 m, they are what vegetation looks like
    "low-tree": lambda rng: tree(rng, crown_base=(0.8, 2.0)),
}


__all__ = ["STREET_OBJECTS", "bush", "fence", "hedge", "heightfield", "pieces", "shrub", "tree"]
