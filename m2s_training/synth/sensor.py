"""A spinning multi-beam LiDAR (Velodyne HDL-64E-like) ray-cast with Open3D.

The static scenery is put into a ``RaycastingScene`` once per sequence; moving objects get a small
scene of their own per scan. Each ray keeps the nearer of the two hits, so the per-scan cost is one
cast against each scene plus a BVH build over a few thousand triangles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from m2s_training.synth import materials
from m2s_training.synth.mesh import LabelledMesh, raw_ids
from m2s_training.synth.o3d import open3d as o3d


@dataclass(frozen=True)
class SensorConfig:
    beams: int = 64
    azimuth_steps: int = 2083  # 360° / 0.1728°
    elevation_top_deg: float = 2.0
    elevation_bottom_deg: float = -24.8
    min_range: float = 2.5  # closer returns hit the ego vehicle and are dropped, as in KITTI
    max_range: float = 100.0
    range_noise: float = 0.02  # metres, 1 sigma
    dropout: float = 0.03  # probability that a return is lost
    remission_noise: float = 0.03
    mount_height: float = 1.73  # metres above the road
    rate_hz: float = 10.0
    # Realism knobs of the ``kitti`` preset (the defaults keep the simple sensor of ``tiny``/``hdl64``):
    elevation_table: tuple[float, ...] | None = None  # degrees per beam, top first; overrides the linspace
    # "simple": mesh reflectivity; "kitti": per-class albedo fitted to real KITTI; "kitti-ranged": refitted
    # range band against range band; "kitti-patchy": kitti with patchy pavement, uniform lawns;
    # "kitti-ranged-patchy": both (materials.py)
    materials: str = "simple"
    grazing_drop: float = 0.0  # returns with cos(incidence) below this are lost (prob. rising to 1 at 0)
    dark_drop: float = 0.0  # returns with remission below this are lost with probability 0.5
    far_drop: float = 0.0  # extra loss probability reached at max_range, growing with range²
    vegetation_depth: float = 0.0  # metres (mean, at 10 m): beams enter leaves before they return
    vegetation_depth_growth: float = 0.0  # the mean grows as (range / 10 m) ** this (0: the same everywhere)
    # Foliage has gaps, fixed in the world: this share of the leaf surface at 30 m (growing linearly
    # with range, at most 0.6) returns from up to ``vegetation_gap_depth`` deeper (``foliage_depth``).
    vegetation_gaps: float = 0.0
    vegetation_gap_depth: float = 1.0
    # Surface texture (metres, 1 sigma of the height of asphalt grain, grass blades, facade relief):
    # seen at grazing incidence it spreads the range by roughness / cos(incidence). Grass (terrain)
    # has its own, larger, value.
    surface_roughness: float = 0.0
    grass_roughness: float = 0.0
    # Glass. Car windows (the cabin's sides above ``CAR_WINDOW_Z``): this share of returns is lost,
    # the rest come back dark. Building windows (a per-building grid of panes on the facades): this
    # share of the pane hits is lost, the rest return from the room behind (0.2–3 m deeper), dark.
    car_glass_drop: float = 0.0
    window_glass_drop: float = 0.0
    # Calibration error, degrees (1 sigma): each laser fires this far off its table elevation (a fixed
    # offset per beam, drawn once per world: one sensor per drive), but its returns are reported along
    # the table direction. On flat ground a ring then lies range × offset high or low: real road rings
    # step ~0.9 cm from ring to ring at 8–30 m, perfect synthetic ones 0.1 cm (docs/benchmarks.md item 23).
    beam_elevation_noise: float = 0.0
    # Intensity quirks of each laser (one draw per world, like the elevation offsets): a gain (lognormal,
    # this sigma) and a floor below which the laser reports remission 0 (lognormal over the lasers:
    # median ``laser_floor``, sigma ``laser_floor_spread``). Real KITTI zeros lie on dark road in whole
    # ring segments and patches, and almost never on grass; random per-point zeros lie everywhere
    # (bench/zero_returns.py). With a floor, the ground classes get no random zeros from the materials.
    laser_gain_sigma: float = 0.0
    laser_floor: float = 0.0
    laser_floor_spread: float = 0.0

    def __post_init__(self):
        if self.beams < 1 or self.azimuth_steps < 1:
            raise ValueError(f"beams and azimuth_steps must be positive, got {self.beams}, {self.azimuth_steps}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.elevation_table is not None and len(self.elevation_table) != self.beams:
            raise ValueError(f"elevation_table has {len(self.elevation_table)} entries for {self.beams} beams")
        if self.materials not in ("simple", *materials.TABLES):
            known = ", ".join(repr(name) for name in ("simple", *materials.TABLES))
            raise ValueError(f"materials must be one of {known}, got {self.materials!r}")
        if not 0.0 <= self.beam_elevation_noise < 1.0:
            raise ValueError(f"beam_elevation_noise must be in [0, 1) degrees, got {self.beam_elevation_noise}")
        for name in ("laser_gain_sigma", "laser_floor", "laser_floor_spread"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0.0 <= self.min_range < self.max_range:
            raise ValueError(f"need 0 <= min_range < max_range, got {self.min_range}, {self.max_range}")


@dataclass(frozen=True)
class Scan:
    points: np.ndarray  # (N, 4) float32 x, y, z, remission in the sensor frame
    semantic: np.ndarray  # (N,) uint16 raw ids
    instance: np.ndarray  # (N,) uint16


_VEGETATION_IDS = np.array([raw_ids()["vegetation"]], np.uint16)
_CAR_IDS = np.array([raw_ids()["car"], raw_ids()["moving-car"]], np.uint16)
_BUILDING_IDS = np.array([raw_ids()["building"]], np.uint16)
_TERRAIN_ID = raw_ids()["terrain"]
CAR_WINDOW_Z = 1.05  # metres above the road: car bodies end at 0.95–1.1 m (objects.car, scale 0.8–1.2)


class _MeshScene:
    def __init__(self, mesh: LabelledMesh):
        self.mesh = mesh
        self.scene = o3d.t.geometry.RaycastingScene()
        self.scene.add_triangles(
            o3d.core.Tensor(mesh.vertices, o3d.core.float32), o3d.core.Tensor(mesh.triangles, o3d.core.uint32)
        )

    def cast(self, rays: o3d.core.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        hits = self.scene.cast_rays(rays)
        return hits["t_hit"].numpy(), hits["primitive_ids"].numpy(), hits["primitive_normals"].numpy()


class Lidar:
    def __init__(self, config: SensorConfig, static: LabelledMesh):
        self.config = config
        self._static = _MeshScene(static)
        self._static_base = instance_base(static)
        # where remission patches lie (materials with PATCHES) and how the lasers are off: one draw per
        # world, from its own mesh, so the scans' own random numbers stay as they were
        self._world_seed = int(np.abs(static.vertices[:1000]).sum() * 1000) % (1 << 31)
        self.directions = beam_directions(config)  # (R, 3) unit vectors in the sensor frame, as reported
        self.cast_directions = self.directions  # where the lasers really point
        if config.beam_elevation_noise > 0:
            offsets = np.random.default_rng(self._world_seed).normal(0.0, config.beam_elevation_noise, config.beams)
            self.cast_directions = beam_directions(config, offsets)
        # a generator of its own: the elevation offsets above stay what they were for a world
        lasers = np.random.default_rng([self._world_seed, 1])
        self.laser_gain = np.exp(lasers.normal(0.0, config.laser_gain_sigma, config.beams))
        self.laser_floor = config.laser_floor * np.exp(lasers.normal(0.0, config.laser_floor_spread, config.beams))

    def scan(self, pose: np.ndarray, moving: LabelledMesh | None, rng: np.random.Generator) -> Scan:
        """Cast every beam from ``pose`` (4x4 T_world_sensor); return noisy labelled points."""
        cfg = self.config
        world_dirs = (self.cast_directions @ pose[:3, :3].T).astype(np.float32)
        origins = np.broadcast_to(pose[:3, 3].astype(np.float32), world_dirs.shape)
        rays = o3d.core.Tensor(np.ascontiguousarray(np.hstack([origins, world_dirs])))

        t_hit, triangle, normal = self._static.cast(rays)
        mesh_of_hit = self._static.mesh
        semantic = np.zeros(len(t_hit), np.uint16)
        instance = np.zeros(len(t_hit), np.uint16)
        reflectivity = np.zeros(len(t_hit), np.float32)
        hit = np.isfinite(t_hit)
        semantic[hit], instance[hit] = mesh_of_hit.semantic[triangle[hit]], mesh_of_hit.instance[triangle[hit]]
        reflectivity[hit] = mesh_of_hit.reflectivity[triangle[hit]]
        base = self._static_base[instance]  # height of the hit object's lowest point (its wheels)
        if moving is not None:
            t_moving, tri_moving, normal_moving = _MeshScene(moving).cast(rays)
            nearer = t_moving < t_hit
            t_hit[nearer], normal[nearer] = t_moving[nearer], normal_moving[nearer]
            tri = tri_moving[nearer]
            semantic[nearer], instance[nearer] = moving.semantic[tri], moving.instance[tri]
            reflectivity[nearer] = moving.reflectivity[tri]
            base[nearer] = instance_base(moving)[instance[nearer]]

        measured = t_hit + rng.normal(0.0, cfg.range_noise, len(t_hit)).astype(np.float32)
        cos_all = np.abs(np.einsum("ij,ij->i", normal, world_dirs))
        if cfg.surface_roughness > 0 or cfg.grass_roughness > 0:
            measured += texture_spread(cfg, semantic, cos_all, rng)
        if cfg.vegetation_depth > 0 or cfg.vegetation_gaps > 0:
            leaves = np.flatnonzero(np.isin(semantic, _VEGETATION_IDS))
            where = origins[leaves] + world_dirs[leaves] * t_hit[leaves, None]
            measured[leaves] += foliage_depth(cfg, t_hit[leaves], where, rng)
        keep = np.isfinite(t_hit) & (measured >= cfg.min_range) & (measured <= cfg.max_range)
        keep &= rng.random(len(t_hit)) >= cfg.dropout

        cos_incidence = cos_all[keep]
        hit_world = origins[keep] + world_dirs[keep] * t_hit[keep, None]  # remission patches and glass use it
        if cfg.materials != "simple":
            remission = materials.kitti_remission(
                semantic[keep],
                instance[keep],
                reflectivity[keep],
                cos_incidence,
                measured[keep],
                rng,
                cfg.materials,
                hit_world,
                self._world_seed,
                ground_zeros=cfg.laser_floor == 0,
            )
        else:
            remission = reflectivity[keep] * (0.3 + 0.7 * cos_incidence) * np.exp(-measured[keep] / 250.0)
        remission = np.clip(remission + rng.normal(0.0, cfg.remission_noise, len(remission)), 0.0, 1.0)
        lost = np.zeros(len(remission), bool)
        if cfg.car_glass_drop > 0 or cfg.window_glass_drop > 0:
            above = hit_world[:, 2] - base[keep]  # a sloping street lifts or sinks whole cars
            drop, deeper = glass_returns(cfg, semantic[keep], normal[keep], hit_world, above, reflectivity[keep], rng)
            lost |= rng.random(len(lost)) < drop
            remission[drop > 0] *= 0.3  # tinted glass, a room's dark interior
            measured[keep] += deeper
        if cfg.grazing_drop > 0:  # little light comes back from surfaces hit edge-on
            lost |= rng.random(len(lost)) < np.clip(1.0 - cos_incidence / cfg.grazing_drop, 0.0, 1.0)
        if cfg.dark_drop > 0:  # dark surfaces fall below the detection threshold
            lost |= (remission < cfg.dark_drop) & (rng.random(len(lost)) < 0.5)
        if cfg.far_drop > 0:
            lost |= rng.random(len(lost)) < cfg.far_drop * (measured[keep] / cfg.max_range) ** 2
        keep[np.flatnonzero(keep)[lost]] = False
        remission = remission[~lost]
        if cfg.laser_gain_sigma > 0 or cfg.laser_floor > 0:  # after the dark drop: a floored return is kept, as 0
            beam = np.flatnonzero(keep) // cfg.azimuth_steps
            remission = np.clip(remission * self.laser_gain[beam], 0.0, 1.0)
            remission[remission < self.laser_floor[beam]] = 0.0
        xyz = self.directions[keep] * measured[keep, None]
        points = np.hstack([xyz, remission[:, None]]).astype(np.float32)
        return Scan(points, semantic[keep], instance[keep])


def texture_spread(cfg: SensorConfig, semantic: np.ndarray, cos_incidence: np.ndarray, rng) -> np.ndarray:
    """Range error from surface texture: height roughness seen along a beam at incidence θ spreads
    the return by roughness / cos θ (capped at θ ≈ 87°). Real KITTI road ranges scatter ~1 cm at
    7 m and ~5 cm at 35 m between azimuth neighbours (``bench/calibrate_real.py``): the far, grazing
    returns are the rough ones, which a constant range noise cannot give."""
    roughness = np.where(semantic == _TERRAIN_ID, cfg.grass_roughness, cfg.surface_roughness)
    spread = roughness / np.maximum(cos_incidence, 0.05)
    return (rng.standard_normal(len(semantic)) * spread).astype(np.float32)


def foliage_depth(cfg: SensorConfig, distance: np.ndarray, where: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """How far behind a crown's modelled surface each leaf return comes from (metres).

    Real KITTI foliage (``bench/calibrate_real.py``, texture) is smooth near the road (hedges: the
    range steps ~0.5 % between neighbours at 10 m) and ragged far away (crowns: steps of metres
    over a degree at 20–40 m). Two parts: a short scatter into the leaves, its mean
    ``vegetation_depth`` at 10 m growing as range ** ``vegetation_depth_growth``; and gaps in the
    crown, fixed in the world (a smooth pattern of ~1 m cells over the hit position, the same from
    every scan), covering a share ``vegetation_gaps`` × range / 30 m (at most 0.6) of the surface,
    through which the beam returns from up to ``vegetation_gap_depth`` deeper.
    """
    scatter = cfg.vegetation_depth * np.minimum((distance / 10.0) ** cfg.vegetation_depth_growth, 10.0)
    depth = rng.exponential(1.0, len(distance)) * scatter
    if cfg.vegetation_gaps > 0:
        field = _GAP_WAVES[:, 3] + where @ _GAP_WAVES[:, :3].T  # (N, waves) phases
        pattern = np.sin(field).sum(axis=1) / np.sqrt(len(_GAP_WAVES) / 2)  # ~ N(0, 1)
        quantile = 1.0 / (1.0 + np.exp(-1.702 * pattern))  # ~ uniform in (0, 1)
        share = np.minimum(cfg.vegetation_gaps * distance / 30.0, 0.6)
        inside = np.clip((quantile - (1.0 - share)) / np.maximum(0.25 * share, 1e-6), 0.0, 1.0)  # steep edges
        depth = depth + cfg.vegetation_gap_depth * inside
    return np.asarray(depth, np.float32)


def _gap_waves() -> np.ndarray:
    """Four plane waves (wave vector, phase) of 0.8–2 m wavelength in random directions, fixed."""
    rng = np.random.default_rng(20231126)
    direction = rng.normal(size=(4, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    wavenumber = 2 * np.pi / rng.uniform(0.8, 2.0, (4, 1))
    return np.hstack([direction * wavenumber, rng.uniform(0, 2 * np.pi, (4, 1))])


_GAP_WAVES = _gap_waves()


def glass_returns(
    cfg: SensorConfig,
    semantic: np.ndarray,
    normal: np.ndarray,
    hit_world: np.ndarray,
    above_base: np.ndarray,
    reflectivity: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Per return: the probability that glass loses it (0 where there is no glass), and how much
    deeper a pane's surviving return comes back (metres).

    Real KITTI scans hold few points on car windows and show facades with holes and points inside
    the rooms; a box-shaped synthetic car or house is solid everywhere. Windows are only on vertical
    faces (|normal z| small). A building's pane grid (spacing 2.5–4.5 m, floors every 3 m, 25 % of
    the buildings without windows) comes from its own reflectivity scale, a number drawn per
    building, so neighbours differ and a building keeps its grid from scan to scan.
    """
    vertical = np.abs(normal[:, 2]) < 0.3
    drop = np.zeros(len(semantic))
    deeper = np.zeros(len(semantic), np.float32)
    if cfg.car_glass_drop > 0:
        car = vertical & np.isin(semantic, _CAR_IDS) & (above_base > CAR_WINDOW_Z)
        drop[car] = cfg.car_glass_drop
    if cfg.window_glass_drop > 0:
        building = vertical & np.isin(semantic, _BUILDING_IDS)
        draw = _hash01(reflectivity, 2654435761)  # fixed per building
        spacing = 2.5 + 2.0 * _hash01(reflectivity, 40503)
        along = (hit_world[:, 0] + hit_world[:, 1]) / spacing + draw  # x on one facade, y on the other
        floor = hit_world[:, 2] % 3.0
        pane = building & (draw > 0.25) & ((along % 1.0) < 0.45) & (floor > 0.9) & (floor < 2.3)
        pane &= hit_world[:, 2] > 0.5
        drop[pane] = cfg.window_glass_drop
        deeper[pane] = rng.uniform(0.2, 3.0, int(pane.sum()))
    return drop, deeper


def instance_base(mesh: LabelledMesh) -> np.ndarray:
    """Per instance id (0..65535), the height of the instance's lowest vertex; 0 for id 0 (stuff)."""
    base = np.full(1 << 16, np.inf)
    np.minimum.at(base, np.repeat(mesh.instance, 3), mesh.vertices[mesh.triangles.ravel(), 2])
    base[0] = 0.0
    return np.where(np.isfinite(base), base, 0.0).astype(np.float32)


def _hash01(values: np.ndarray, multiplier: int) -> np.ndarray:
    """A fixed pseudo-random number in [0, 1) per float32 value (multiplicative hash of its bits)."""
    bits = np.ascontiguousarray(values, np.float32).view(np.uint32).astype(np.uint64)
    return ((bits * np.uint64(multiplier)) % np.uint64(1 << 32)).astype(np.float64) / float(1 << 32)


def beam_directions(config: SensorConfig, elevation_offsets: np.ndarray | None = None) -> np.ndarray:
    """Unit ray directions, beam-major (all azimuths of the top beam first), float32 (R, 3);
    ``elevation_offsets``: degrees added to each beam's elevation."""
    if config.elevation_table is not None:
        elevation_deg = np.asarray(config.elevation_table, np.float64)
    else:
        elevation_deg = np.linspace(config.elevation_top_deg, config.elevation_bottom_deg, config.beams)
    if elevation_offsets is not None:
        elevation_deg = elevation_deg + elevation_offsets
    elevation = np.deg2rad(elevation_deg)
    azimuth = np.linspace(np.pi, -np.pi, config.azimuth_steps, endpoint=False)
    el, az = np.meshgrid(elevation, azimuth, indexing="ij")
    dirs = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=-1)
    return dirs.reshape(-1, 3).astype(np.float32)
