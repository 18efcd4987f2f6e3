"""Named generator settings: ``tiny`` for unit tests, ``default`` for KITTI-like scans."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from m2s_training.synth.sensor import SensorConfig

# Velodyne HDL-64E (S2) beam elevations in degrees, top first: an upper block of 32 lasers spaced
# ~1/3° from +2.0° to −8.33° and a lower block of 32 spaced ~1/2° from −8.83° to −24.8°.
HDL64E_ELEVATION = tuple(
    float(v) for v in np.concatenate([np.linspace(2.0, -8.33, 32), np.linspace(-8.83, -24.8, 32)]).round(3)
)


@dataclass(frozen=True)
class Preset:
    name: str
    sensor: SensorConfig
    scans: int  # scans per sequence unless the caller asks for another number
    ego_speed: float = 8.0  # m/s along the street
    world: str = "street"  # "street": world.py's fixed cross-section; "kitti": world_kitti.py
    shaped_roads: bool = False  # kitti world: streets that turn (and climb, up to max_grade; road_shape.py)
    max_grade: float = 0.06
    porous_fences: bool = False  # kitti world: fences of boards or rails (beams pass) instead of closed panels
    street_trees: float = 0.0  # kitti world: share of sidewalks with a row of trees along the kerb
    open_plots: float = 0.3  # kitti world: share of front plots that are open grass with trees, no house in front
    undergrowth: bool = False  # kitti world: low wide shrubs among the garden and park plants
    lush: bool = False  # kitti world: trees with low crowns and hedgerows of tall shrubs in the open plots
    skewed_junctions: float = 0.0  # kitti world: > 0 adds T-junctions, and arms skewed 15–50° this often
    kerb_height: tuple[float, float] = (0.08, 0.18)  # kitti world: sidewalk top above the road, m (cross streets +2 cm)
    # kitti world: how far below the sidewalk the grass of verges and yards lies, m, drawn per side (negative:
    # above it, as raised lawns), and what grows or stands there stands on it; None: 2–3 cm below, hedges and
    # fences at kerb height
    lawn_drop: tuple[float, float] | None = None
    hedge_height: tuple[float, float] = (0.8, 2.5)  # kitti world: front-yard hedges, m, drawn per hedge
    # kitti world: share of front plots whose paving runs on to their hedge or fence and under its front
    # (the sidewalk widened by 0.8 m, the lawn behind), instead of the boundary standing 0.3-0.5 m into
    # the lawn; on the real scans the ground at plants' and fences' feet is sidewalk and parking, never
    # grass (bench/ground_by_plants.py, docs/benchmarks.md "Sim-to-real", item 34)
    paved_to_boundary: float = 0.0
    # kitti world: share of the buildings standing in a lawn that stand on a paved apron (sidewalk) reaching
    # 0.5-1.5 m out from their walls, instead of the grass running up to them; on the real scans the ground at
    # buildings' feet is sidewalk, and far grass lies among plants, not against walls (docs/benchmarks.md
    # "Sim-to-real", item 35)
    building_apron: float = 0.0

    def __post_init__(self) -> None:
        ranges = {"kerb_height": self.kerb_height, "hedge_height": self.hedge_height}
        for name, (low, high) in ranges.items():
            if not 0.0 <= low <= high:
                raise ValueError(f"{name} must be [low, high] with 0 <= low <= high, got {[low, high]}")
        if not 0.0 <= self.paved_to_boundary <= 1.0:
            raise ValueError(f"paved_to_boundary is a share of the front plots, 0-1, got {self.paved_to_boundary}")
        if not 0.0 <= self.building_apron <= 1.0:
            raise ValueError(f"building_apron is a share of the buildings, 0-1, got {self.building_apron}")
        if self.lawn_drop is not None and not -1.0 <= self.lawn_drop[0] <= self.lawn_drop[1] <= 1.0:
            raise ValueError(f"lawn_drop must be [low, high] with -1 <= low <= high <= 1 m, got {list(self.lawn_drop)}")


PRESETS = {
    # ~10k points per scan, a 10-scan sequence in about a second: for tests of everything downstream.
    "tiny": Preset("tiny", SensorConfig(beams=32, azimuth_steps=512, max_range=50.0), scans=10),
    # HDL-64E-like: 64 beams over +2°…−24.8°, 0.17° azimuth steps, ~120k points per scan.
    "hdl64": Preset("hdl64", SensorConfig(), scans=100),
    # Calibrated on real SemanticKITTI scans (bench/calibrate_real.py, docs/benchmarks.md "Sim-to-real"):
    # the HDL-64E's two laser blocks, 0.18° azimuth steps as measured, ray drop, KITTI-like remission,
    # glass, and a varied residential street. What the training configs for real data use: the world
    # of the shipped weights (round 2), whose students scored best on the shared real scans.
    "kitti": Preset(
        "kitti",
        SensorConfig(
            azimuth_steps=2000,
            elevation_table=HDL64E_ELEVATION,
            range_noise=0.025,
            dropout=0.02,
            remission_noise=0.0,
            materials="kitti",
            grazing_drop=0.12,
            dark_drop=0.02,
            far_drop=0.3,
            vegetation_depth=0.25,
            car_glass_drop=0.7,
            window_glass_drop=0.5,
            max_range=80.0,
        ),
        scans=100,
        ego_speed=7.0,
        world="kitti",
    ),
}
# Round 3: the range texture measured on the real scans (0.5 cm noise plus surface texture spread at
# grazing incidence, foliage smooth near and ragged far) and porous fences. Closer to the real
# statistics, not better for the real scans' scores (docs/benchmarks.md "Sim-to-real", round 3).
PRESETS["kitti-textured"] = replace(
    PRESETS["kitti"],
    name="kitti-textured",
    sensor=replace(
        PRESETS["kitti"].sensor,
        range_noise=0.005,
        surface_roughness=0.002,
        grass_roughness=0.005,
        vegetation_depth=0.04,
        vegetation_depth_growth=1.5,
        vegetation_gaps=0.15,
        vegetation_gap_depth=4.0,
    ),
    porous_fences=True,
)
# kitti-textured with streets that bend (radius 120–500 m) and climb (grade up to ±6 %). Students
# trained on it scored lower on the shared real scans (same section).
PRESETS["kitti-shaped"] = replace(PRESETS["kitti-textured"], name="kitti-shaped", shaped_roads=True)


def with_settings(preset: Preset, settings: list[str]) -> Preset:
    """``preset`` with ``KEY=VALUE`` settings (``m2s-synth --set``): a field of the preset, or of its
    sensor as ``sensor.KEY``; values read as YAML and type-checked like any m2s config."""
    from m2s_perception.typed_config import from_dict, to_dict
    from m2s_training.config import parse_overrides, set_values  # here: it imports torch, presets need not

    values = parse_overrides(settings)
    return from_dict(Preset, set_values(to_dict(preset), values), "preset")


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None
