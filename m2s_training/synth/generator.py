"""Drive the ego vehicle down a procedural street and write what its LiDAR sees, KITTI-style."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from m2s_training.atomic import atomic_path
from m2s_training.data.semantic_kitti import (
    camera_poses,
    write_calib,
    write_labels,
    write_poses,
    write_scan,
    write_times,
)
from m2s_training.synth.presets import Preset, get_preset
from m2s_training.synth.road_shape import rotation
from m2s_training.synth.sensor import Lidar, Scan
from m2s_training.synth.world import EGO_LANE_Y, World, build_world
from m2s_training.synth.world_kitti import build_kitti_world


def _kitti_like_tr() -> np.ndarray:
    """LiDAR → camera: the usual axis swap (x fwd, y left, z up → z fwd, x right, y down),
    a slight misalignment and the camera a few centimetres in front of and below the LiDAR."""
    swap = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
    tr = np.eye(4)
    tr[:3, :3] = swap @ rotation(roll=0.002, pitch=-0.004, yaw=0.003)
    tr[:3, 3] = [-0.004, -0.076, -0.272]
    return tr


TR_LIDAR_TO_CAMERA = _kitti_like_tr()


def ego_poses(times: np.ndarray, speed: float, mount_height: float) -> np.ndarray:
    """(n, 4, 4) T_world_lidar: along the lane with a gentle weave and a little pitch and roll."""
    x = speed * times
    y = EGO_LANE_Y + 0.3 * np.sin(2 * np.pi * times / 12.0)
    yaw = np.arctan2(0.3 * 2 * np.pi / 12.0 * np.cos(2 * np.pi * times / 12.0), speed)
    poses = np.tile(np.eye(4), (len(times), 1, 1))
    for i, t in enumerate(times):
        poses[i, :3, :3] = rotation(roll=0.004 * np.sin(1.3 * t), pitch=0.006 * np.sin(0.9 * t), yaw=yaw[i])
    poses[:, :3, 3] = np.stack([x, y, np.full_like(x, mount_height)], axis=1)
    return poses


@dataclass
class SequenceSummary:
    path: Path
    scans: int = 0
    points: int = 0
    streets: int = 1
    raw_ids: set[int] = field(default_factory=set)


def sequence_name(sequence: str | int) -> str:
    text = str(sequence)
    if not text.isdigit() or int(text) > 99:
        raise ValueError(f"sequence must be a number 0..99 like '00' or '08', got {sequence!r}")
    return f"{int(text):02d}"


# Between two streets of one sequence the recording breaks off for a minute: readers see the jump
# in times.txt (m2s_training.data.semantic_kitti.drive_ids) and never fuse scans across it.
STREET_BREAK_S = 60.0


def street_sizes(scans: int, streets: int) -> list[int]:
    """Scans per street when a sequence of ``scans`` is split into ``streets`` (the first get one
    more when it does not divide). Several streets need two scans each at least: readers find the
    breaks against the usual step between scans (the median), which must then be a step within a street."""
    if streets < 1 or scans < 1 or (streets > 1 and scans < 2 * streets):
        raise ValueError(f"{streets} streets need at least {2 * streets} scans (two per street), got {scans}")
    base, extra = divmod(scans, streets)
    return [base + (k < extra) for k in range(streets)]


class SequenceSimulator:
    """The world, trajectory and sensor of one street; :meth:`scan` is deterministic per index.

    Street 0 of a sequence is what a one-street sequence always was (same seed, same bytes); street k
    of a ``--streets`` sequence draws its own world from the seed, the sequence and k.
    """

    def __init__(self, preset: Preset, scans: int, seed: int, sequence: str, stride: int = 1, street: int = 0):
        if scans < 1 or stride < 1 or street < 0:
            raise ValueError(f"scans and stride must be at least 1 and street >= 0, got {scans}, {stride}, {street}")
        self.preset = preset
        self.times = np.arange(scans) * stride / preset.sensor.rate_hz  # every stride-th sweep
        self.poses = ego_poses(self.times, preset.ego_speed, preset.sensor.mount_height)
        key = [seed, int(sequence_name(sequence))] + ([street] if street else [])
        seeds = np.random.SeedSequence(key).spawn(scans + 1)
        self._scan_seeds = seeds[1:]
        path_end = float(self.poses[-1, 0, 3])
        reach = preset.sensor.max_range + 10.0
        layout = dict(
            x_range=(-reach, path_end + reach), window=(-5.0, path_end + 25.0), duration=float(self.times[-1]) + 1.0
        )
        if preset.world == "kitti":
            self.world: World = build_kitti_world(np.random.default_rng(seeds[0]), **layout, preset=preset)
        else:
            self.world = build_world(np.random.default_rng(seeds[0]), **layout)
        if self.world.shape is not None:  # the street turns and climbs: the car follows it
            self.poses = self.world.shape.apply_poses(self.poses)
        self.lidar = Lidar(preset.sensor, self.world.static)

    def __len__(self) -> int:
        return len(self.times)

    def scan(self, index: int) -> Scan:
        t = float(self.times[index])
        return self.lidar.scan(
            self.poses[index], self.world.moving_mesh(t), np.random.default_rng(self._scan_seeds[index])
        )

    def relative_poses(self) -> np.ndarray:
        """T_world_lidar with the first scan's LiDAR frame as world, as KITTI's poses.txt."""
        return np.linalg.inv(self.poses[0]) @ self.poses


def write_sequence(
    out_root: str | Path,
    sequence: str,
    preset: str | Preset = "tiny",
    scans: int | None = None,
    seed: int = 0,
    on_scan: Callable[[int, Scan], None] | None = None,
    stride: int = 1,
    streets: int = 1,
) -> SequenceSummary:
    """Write one sequence of ``scans`` scans: ``streets`` short streets, each its own world, one after
    another (each street's poses start at its own first scan; a minute's break in times.txt between)."""
    preset = get_preset(preset) if isinstance(preset, str) else preset
    name = sequence_name(sequence)
    sizes = street_sizes(preset.scans if scans is None else scans, streets)
    final = Path(out_root) / "sequences" / name
    summary = SequenceSummary(final)
    poses, times, start = [], [], 0.0
    # The sequence is written beside its final folder and renamed into place: an interrupted
    # regeneration leaves the previous sequence whole, never new scans beside old poses.
    with atomic_path(final, replace_dir=_is_sequence_folder) as path:
        for street, size in enumerate(sizes):
            sim = SequenceSimulator(preset, size, seed, name, stride, street)
            for i in range(len(sim)):
                index = summary.scans
                scan = sim.scan(i)
                write_scan(path / "velodyne" / f"{index:06d}.bin", scan.points)
                write_labels(path / "labels" / f"{index:06d}.label", scan.semantic, scan.instance)
                summary.scans += 1
                summary.points += len(scan.points)
                summary.raw_ids.update(np.unique(scan.semantic).tolist())
                if on_scan is not None:
                    on_scan(index, scan)
            poses.append(camera_poses(sim.relative_poses(), TR_LIDAR_TO_CAMERA))
            times.append(start + sim.times)
            start = float(times[-1][-1]) + STREET_BREAK_S
        write_poses(path / "poses.txt", np.concatenate(poses))
        write_calib(path / "calib.txt", TR_LIDAR_TO_CAMERA)
        write_times(path / "times.txt", np.concatenate(times))
    summary.streets = len(sizes)
    return summary


def _is_sequence_folder(path: Path) -> bool:
    """What this generator writes, and nothing else: the only folder it may replace."""
    return {p.name for p in path.iterdir()} <= {"velodyne", "labels", "poses.txt", "calib.txt", "times.txt"}


def generate(
    out_root: str | Path, sequences: list[str], preset: str = "tiny", scans: int | None = None, seed: int = 0
) -> list[Path]:
    """Write synthetic SemanticKITTI sequences under ``out_root/sequences/XX``; return their folders."""
    if not sequences:
        raise ValueError("no sequences to generate")
    names = [sequence_name(s) for s in sequences]
    preset_ = get_preset(preset)
    return [write_sequence(out_root, name, preset_, scans, seed).path for name in names]
