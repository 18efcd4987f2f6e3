"""Remission of the ``kitti`` sensor: a per-class albedo fitted to real SemanticKITTI scans.

``bench/calibrate_real.py`` measured the real per-class remission (p10 / median / p90 over the
shared scans, e.g. road 0.00 / 0.25 / 0.34, building 0.27 / 0.41 / 0.64, car 0.00 / 0.08 / 0.37):
KITTI remission depends little on the incidence angle, and on range up to ~25 m (the sensor
normalises it), varies a lot from surface to surface, and a large share of the points of cars
(windows, dark paint) and some of the road (wet or black patches) return 0. Beyond ~25 m it fades
and is mostly 0 past ~45 m; that is left to the training augmentation ``augment.remission_falloff``
(drawn per scan), not baked into the data. ``sensor.materials=kitti-ranged`` refits the ground
classes one range band against the same band (``KITTI_MATERIALS_RANGED``); ``kitti-patchy`` (the
shipped weights' data) keeps the kitti albedo and lays out where the ground is bright: pavement
patchy over metres, lawns alike (``PATCHES``, ``smooth_noise``); ``kitti-ranged-patchy`` is both. The model:

    remission = albedo[class] · object scale · (0.75 + 0.25 · cos incidence) · exp(−range / 400) · lognormal
                [· exp(patch sigma[class] · smooth noise(x, y)), the patchy tables]

with a per-class probability of an exact 0. In the real range images a dark car is dark as a whole
(``docs/real_vs_synthetic.png``), so for vehicles the 0 is drawn per object (from its instance id),
and surfaces are smooth (small per-point noise) while objects differ (the object scale, 0.7–1.3,
drawn per object by the world builder). Lane markings keep their bright paint.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from m2s_perception.labels import load_label_map
from m2s_training.synth.mesh import REFLECTIVITY

# name: (albedo, per-point lognormal sigma, probability of remission 0 per point, per object);
# medians match the real scans.
KITTI_MATERIALS = {
    "road": (0.29, 0.15, 0.06, 0.0),
    "parking": (0.36, 0.15, 0.03, 0.0),
    "sidewalk": (0.36, 0.12, 0.02, 0.0),
    "other-ground": (0.36, 0.15, 0.03, 0.0),
    "terrain": (0.39, 0.25, 0.03, 0.0),
    "building": (0.50, 0.20, 0.01, 0.0),
    "fence": (0.36, 0.25, 0.03, 0.0),
    "vegetation": (0.41, 0.35, 0.05, 0.0),
    "trunk": (0.37, 0.30, 0.05, 0.0),
    "pole": (0.25, 0.40, 0.20, 0.0),
    "traffic-sign": (0.80, 0.20, 0.05, 0.0),
    "car": (0.30, 0.35, 0.15, 0.45),
    "truck": (0.30, 0.35, 0.10, 0.3),
    "other-vehicle": (0.30, 0.35, 0.10, 0.3),
    "bicycle": (0.25, 0.40, 0.20, 0.2),
    "motorcycle": (0.25, 0.40, 0.20, 0.3),
    "person": (0.25, 0.35, 0.10, 0.1),
    "bicyclist": (0.25, 0.35, 0.10, 0.1),
    "motorcyclist": (0.25, 0.35, 0.10, 0.1),
}
# "kitti-ranged": KITTI_MATERIALS refitted range band against range band. The medians above were matched
# over all returns, but the real scans see their grass at 15–40 m and the synthetic streets theirs at
# 5–20 m, so the fit hid what the incidence term does to ground seen at a slant: at 5–30 m the synthetic
# ground came out darker than the real (median of the non-zero returns: grass 0.29 against 0.35, road
# 0.23 / 0.26, sidewalk 0.28 / 0.31) and grass and leaves more spread (IQR / median 0.44 / 0.29 and
# 0.49 / 0.34). Refitted for the classes with more than 5,000 real points at 5–30 m (bench/
# remission_by_class.py); signs (223 real points) and the rest keep their values.
KITTI_MATERIALS_RANGED = KITTI_MATERIALS | {
    "road": (0.33, 0.30, 0.06, 0.0),
    "parking": (0.40, 0.15, 0.03, 0.0),
    "sidewalk": (0.40, 0.12, 0.02, 0.0),
    "other-ground": (0.40, 0.15, 0.03, 0.0),
    "terrain": (0.47, 0.15, 0.03, 0.0),
    "vegetation": (0.40, 0.24, 0.05, 0.0),
}


@dataclass(frozen=True)
class Patches:
    """Remission that varies over metres, fixed in the world: each class's log-remission is shifted by
    ``sigma[class]`` × a smooth unit-variance noise of cell ``size`` m; grass lawns' own scale (drawn
    0.7–1.3 per lawn by the world builder) is raised to ``grass_scale_power`` (< 1: lawns alike)."""

    sigma: dict[str, float]
    size: float
    grass_scale_power: float


# "kitti-patchy": the kitti albedo, with the measured layout of brightness over the ground. Real road is
# patchy (mean remission of 2 m cells within 5–15 m: IQR / median 0.21, sidewalk 0.09–0.17) and real
# grass uniform (0.13 at 5–30 m), while the synthetic pavement came out uniform (0.05) and its grass
# patchy (0.33: lawns differ): the cue was upside down (docs/benchmarks.md "Sim-to-real", item 19: round 18).
PATCHY = Patches(
    sigma={"road": 0.21, "parking": 0.15, "sidewalk": 0.12, "other-ground": 0.12}, size=2.5, grass_scale_power=0.4
)
# "kitti-ranged-patchy": both. The ranged refit's medians (grass brighter than sidewalk, sidewalk than road,
# as in the real scans at 5-30 m: 0.38 / 0.32 / 0.27 at 5-15 m, where kitti-patchy gave 0.30 / 0.29 / 0.23),
# the patchy layout, and the kitti per-return spread of the road: round 17 widened it i.i.d. and near
# real road became sidewalk (docs/benchmarks.md "Sim-to-real", round 19).
KITTI_MATERIALS_RANGED_PATCHY = KITTI_MATERIALS_RANGED | {"road": (0.33, 0.15, 0.06, 0.0)}
GROUND_CLASSES = ("road", "parking", "sidewalk", "other-ground", "terrain")
PATCHES = {"kitti-patchy": PATCHY, "kitti-ranged-patchy": PATCHY}
TABLES = {
    "kitti": KITTI_MATERIALS,
    "kitti-ranged": KITTI_MATERIALS_RANGED,
    "kitti-patchy": KITTI_MATERIALS,
    "kitti-ranged-patchy": KITTI_MATERIALS_RANGED_PATCHY,
}


@lru_cache(maxsize=4)
def _tables(table: str) -> tuple[np.ndarray, ...]:
    """Per raw id (65536 entries): albedo, sigma, zero probability, the simple reflectivity, the patch
    sigma and the power the object's scale is raised to."""
    materials, patches = TABLES[table], PATCHES.get(table)
    label_map = load_label_map()
    albedo, sigma, zero, dark = np.full(1 << 16, 0.3), np.full(1 << 16, 0.3), np.zeros(1 << 16), np.zeros(1 << 16)
    simple, patch_sigma, scale_power = np.full(1 << 16, 0.3), np.zeros(1 << 16), np.ones(1 << 16)
    for raw, name in label_map.raw_names.items():
        base = name.removeprefix("moving-")
        if base in REFLECTIVITY:
            simple[raw] = REFLECTIVITY[base]
        train_name = label_map.class_names[label_map.to_train(np.array([raw]))[0]]
        if train_name in materials:
            albedo[raw], sigma[raw], zero[raw], dark[raw] = materials[train_name]
        if patches is not None:
            patch_sigma[raw] = patches.sigma.get(train_name, 0.0)
            scale_power[raw] = patches.grass_scale_power if train_name == "terrain" else 1.0
    return albedo, sigma, zero, dark, simple, patch_sigma, scale_power


@lru_cache(maxsize=1)
def _ground_ids() -> np.ndarray:
    """Per raw id (65536 entries): True for the ground classes (road, parking, sidewalk, other-ground, terrain)."""
    label_map = load_label_map()
    ground = np.zeros(1 << 16, bool)
    for raw in label_map.raw_names:
        ground[raw] = label_map.class_names[label_map.to_train(np.array([raw]))[0]] in GROUND_CLASSES
    return ground


def smooth_noise(xy: np.ndarray, size: float, seed: int) -> np.ndarray:
    """A unit-variance-at-the-nodes noise over the plane, fixed by ``seed``: hashed values on a grid
    of ``size`` m, blended between the four nodes around each point (smoothstep weights)."""
    grid = xy / size
    node = np.floor(grid).astype(np.int64)
    frac = grid - node
    weight = frac * frac * (3.0 - 2.0 * frac)

    def value(ix: np.ndarray, iy: np.ndarray) -> np.ndarray:
        key = (ix.astype(np.uint64) * np.uint64(73856093)) ^ (iy.astype(np.uint64) * np.uint64(19349663))
        key = (key ^ np.uint64(seed)) * np.uint64(0x9E3779B97F4A7C15)
        uniform = (key >> np.uint64(11)).astype(np.float64) / float(1 << 53)
        return (uniform - 0.5) * np.sqrt(12.0)  # mean 0, variance 1

    x, y = node[:, 0], node[:, 1]
    wx, wy = weight[:, 0], weight[:, 1]
    bottom = value(x, y) * (1 - wx) + value(x + 1, y) * wx
    top = value(x, y + 1) * (1 - wx) + value(x + 1, y + 1) * wx
    return bottom * (1 - wy) + top * wy


def kitti_remission(
    semantic: np.ndarray,
    instance: np.ndarray,
    reflectivity: np.ndarray,
    cos_incidence: np.ndarray,
    ranges: np.ndarray,
    rng: np.random.Generator,
    table: str = "kitti",
    where: np.ndarray | None = None,
    world_seed: int = 0,
    ground_zeros: bool = True,
) -> np.ndarray:
    """Remission in [0, 1] per return; ``reflectivity`` is the mesh's (per-object scaled) value;
    ``table``: a name of ``TABLES``; one with ``PATCHES`` needs ``where``, the returns' world x, y (m),
    and lays out its patches by ``world_seed``. ``ground_zeros=False``: no random per-point zeros on the
    ground classes (a sensor with laser floors makes their zeros itself, where returns are dark)."""
    albedo, sigma, zero, dark, simple, patch_sigma, scale_power = _tables(table)
    if not ground_zeros:
        zero = np.where(_ground_ids(), 0.0, zero)
    scale = (reflectivity / simple[semantic]) ** scale_power[semantic]  # the object's own; lane paint ~5
    value = albedo[semantic] * scale * (0.75 + 0.25 * cos_incidence) * np.exp(-ranges / 400.0)
    if table in PATCHES:
        if where is None:
            raise ValueError(f"materials {table!r} lay patches out over the world: pass the returns' x, y")
        value = value * np.exp(patch_sigma[semantic] * smooth_noise(where[:, :2], PATCHES[table].size, world_seed))
    value = value * np.exp(rng.normal(0.0, 1.0, len(value)) * sigma[semantic])
    value[rng.random(len(value)) < zero[semantic]] = 0.0
    # a fixed pseudo-random number per object (Knuth's multiplicative hash): the same car stays dark
    object_draw = (instance.astype(np.uint64) * np.uint64(2654435761) % np.uint64(1000)) / 1000.0
    value[(instance > 0) & (object_draw < dark[semantic])] = 0.0
    return np.clip(value, 0.0, 1.0).astype(np.float32)
