"""SemanticKITTI on disk: scans, labels, poses, calibration, times and benchmark predictions.

Layout (real data set and m2s synthetic sequences alike)::

    ROOT/sequences/XX/velodyne/NNNNNN.bin    float32 x, y, z, remission
    ROOT/sequences/XX/labels/NNNNNN.label    uint32: semantic id (low 16 bits) | instance id << 16
    ROOT/sequences/XX/poses.txt              3x4 camera poses, row-major, one scan per line
    ROOT/sequences/XX/calib.txt              "Tr: ..." maps LiDAR to camera (3x4)
    ROOT/sequences/XX/times.txt              seconds, one scan per line
    OUT/sequences/XX/predictions/NNNNNN.label  raw ids, what the official evaluator reads

Every reader checks what it reads and raises :class:`KittiFormatError` naming file and problem.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from m2s_perception.labels import LabelMap, load_label_map
from m2s_training.atomic import write_bytes_atomic, write_text_atomic

POINT_DTYPE = np.float32
POINT_FIELDS = 4
POINT_BYTES = POINT_FIELDS * 4


class KittiFormatError(ValueError):
    """A SemanticKITTI file is missing, truncated or inconsistent."""


# --- scans and labels --------------------------------------------------------------------------


def read_scan(path: str | Path) -> np.ndarray:
    """Return an (N, 4) float32 array of x, y, z, remission."""
    path = Path(path)
    size = _file_size(path)
    if size % POINT_BYTES:
        raise KittiFormatError(f"{path}: size {size} bytes is not a multiple of {POINT_BYTES} (x, y, z, remission)")
    return np.fromfile(path, dtype=POINT_DTYPE).reshape(-1, POINT_FIELDS)


def write_scan(path: str | Path, points: np.ndarray) -> None:
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != POINT_FIELDS:
        raise ValueError(f"scan must be (N, 4) x, y, z, remission; got shape {points.shape}")
    write_bytes_atomic(path, np.ascontiguousarray(points, dtype=POINT_DTYPE).tobytes())


def pack_labels(semantic: np.ndarray, instance: np.ndarray) -> np.ndarray:
    semantic = np.asarray(semantic, dtype=np.uint32)
    instance = np.asarray(instance, dtype=np.uint32)
    if np.any(semantic > 0xFFFF) or np.any(instance > 0xFFFF):
        raise ValueError("semantic and instance ids must fit in 16 bits")
    return semantic | (instance << 16)


def unpack_labels(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split packed uint32 labels into (semantic raw id, instance id), both uint16."""
    packed = np.asarray(packed, dtype=np.uint32)
    return (packed & 0xFFFF).astype(np.uint16), (packed >> 16).astype(np.uint16)


def read_labels(path: str | Path, num_points: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Return (semantic raw ids, instance ids) of a ``.label`` file, checking the point count."""
    path = Path(path)
    size = _file_size(path)
    if size % 4:
        raise KittiFormatError(f"{path}: size {size} bytes is not a multiple of 4 (uint32 labels)")
    packed = np.fromfile(path, dtype=np.uint32)
    if num_points is not None and packed.size != num_points:
        raise KittiFormatError(f"{path}: {packed.size} labels for a scan of {num_points} points")
    return unpack_labels(packed)


def write_labels(path: str | Path, semantic: np.ndarray, instance: np.ndarray | None = None) -> None:
    semantic = np.asarray(semantic)
    instance = np.zeros_like(semantic) if instance is None else instance
    write_bytes_atomic(path, pack_labels(semantic, instance).tobytes())


# --- poses, calibration, times -----------------------------------------------------------------


def _rows_3x4_to_4x4(values: np.ndarray) -> np.ndarray:
    out = np.tile(np.eye(4), (values.shape[0], 1, 1))
    out[:, :3, :4] = values.reshape(-1, 3, 4)
    return out


def read_calib(path: str | Path) -> dict[str, np.ndarray]:
    """Return every ``KEY: 12 numbers`` line as a 4x4 matrix; ``Tr`` must be present."""
    path = Path(path)
    calib = {}
    for lineno, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        key, sep, rest = line.partition(":")
        if not sep:
            raise KittiFormatError(f"{path}:{lineno}: expected 'KEY: values', got {line.strip()!r}")
        values = _parse_floats(path, lineno, rest)
        if values.size != 12:
            raise KittiFormatError(f"{path}:{lineno}: {key.strip()} has {values.size} numbers, expected 12 (3x4)")
        calib[key.strip()] = _rows_3x4_to_4x4(values[None])[0]
    if "Tr" not in calib:
        raise KittiFormatError(f"{path}: no 'Tr' (LiDAR to camera) entry")
    return calib


def read_poses(path: str | Path, expected: int | None = None) -> np.ndarray:
    """Return (M, 4, 4) camera-frame poses; ``expected`` checks there is one per scan."""
    path = Path(path)
    rows = []
    for lineno, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        values = _parse_floats(path, lineno, line)
        if values.size != 12:
            raise KittiFormatError(f"{path}:{lineno}: {values.size} numbers, expected 12 (3x4 pose)")
        rows.append(values)
    if expected is not None and len(rows) < expected:
        raise KittiFormatError(f"{path}: {len(rows)} poses for {expected} scans")
    if not rows:
        raise KittiFormatError(f"{path}: no poses")
    return _rows_3x4_to_4x4(np.stack(rows))


def read_times(path: str | Path, expected: int | None = None) -> np.ndarray:
    path = Path(path)
    times = [float(v) for lineno, line in enumerate(_read_lines(path), 1) for v in _parse_floats(path, lineno, line)]
    if expected is not None and len(times) < expected:
        raise KittiFormatError(f"{path}: {len(times)} times for {expected} scans")
    return np.asarray(times, dtype=np.float64)


DRIVE_BREAK = 5.0  # a step of more than 5x the usual scan period: the recording broke off there


def drive_ids(times: np.ndarray) -> np.ndarray:
    """(n,) int: which unbroken recording ("drive") each scan belongs to, numbered from 0.

    A new drive starts where the time stamps go backwards or jump by more than ``DRIVE_BREAK`` times
    the median step (``m2s-synth --streets`` leaves a minute between its streets). Scans of different
    drives are different places even when their poses coincide, so nothing fuses across them.
    """
    steps = np.diff(np.asarray(times, dtype=np.float64))
    if not len(steps):
        return np.zeros(len(times), dtype=np.int64)
    usual = np.median(steps[steps > 0]) if np.any(steps > 0) else 0.0
    breaks = (steps <= 0) | (steps > DRIVE_BREAK * usual)
    return np.concatenate([[0], np.cumsum(breaks)]).astype(np.int64)


def lidar_poses(camera_poses: np.ndarray, tr_lidar_to_camera: np.ndarray) -> np.ndarray:
    """T_world_lidar = Tr⁻¹ · P · Tr: the KITTI camera-frame poses expressed for the LiDAR."""
    tr_inv = np.linalg.inv(tr_lidar_to_camera)
    return tr_inv @ camera_poses @ tr_lidar_to_camera


def camera_poses(lidar_poses_: np.ndarray, tr_lidar_to_camera: np.ndarray) -> np.ndarray:
    """Inverse of :func:`lidar_poses` (used when writing ``poses.txt``)."""
    return tr_lidar_to_camera @ lidar_poses_ @ np.linalg.inv(tr_lidar_to_camera)


def format_3x4(matrix: np.ndarray) -> str:
    return " ".join(f"{v:.9e}" for v in np.asarray(matrix)[:3, :4].ravel())


def write_poses(path: str | Path, poses_4x4: np.ndarray) -> None:
    write_text_atomic(path, "".join(format_3x4(p) + "\n" for p in poses_4x4))


def write_calib(path: str | Path, tr_lidar_to_camera: np.ndarray, extra: dict[str, np.ndarray] | None = None) -> None:
    entries = dict(extra or {})
    entries["Tr"] = tr_lidar_to_camera
    write_text_atomic(path, "".join(f"{k}: {format_3x4(m)}\n" for k, m in entries.items()))


def write_times(path: str | Path, times: np.ndarray) -> None:
    write_text_atomic(path, "".join(f"{t:.6e}\n" for t in times))


# --- sequences ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """One scan with everything known about it. ``semantic`` holds raw ids, None without labels."""

    sequence: str
    index: int
    points: np.ndarray  # (N, 4) float32
    semantic: np.ndarray | None  # (N,) uint16 raw ids
    instance: np.ndarray | None  # (N,) uint16
    pose: np.ndarray | None  # (4, 4) T_world_lidar; None for a folder without poses.txt (real scans)


class Sequence:
    """A SemanticKITTI sequence folder; files are read lazily, one scan at a time."""

    def __init__(self, root: str | Path, sequence: str):
        self.root = Path(root)
        self.name = f"{int(sequence):02d}"
        self.path = self.root / "sequences" / self.name
        if not self.path.is_dir():
            raise KittiFormatError(f"{self.path}: sequence folder does not exist")
        self.scan_paths = sorted((self.path / "velodyne").glob("*.bin"))
        if not self.scan_paths:
            raise KittiFormatError(f"{self.path / 'velodyne'}: no .bin scans")

    def __len__(self) -> int:
        return len(self.scan_paths)

    def frame_id(self, index: int) -> str:
        return self.scan_paths[index].stem

    def label_path(self, index: int) -> Path:
        return self.path / "labels" / f"{self.frame_id(index)}.label"

    @property
    def has_labels(self) -> bool:
        return (self.path / "labels").is_dir()

    @property
    def has_poses(self) -> bool:
        """A plain folder of scans (e.g. a few real ones) may come without poses, calib and times."""
        return (self.path / "poses.txt").is_file()

    @cached_property
    def calib(self) -> dict[str, np.ndarray]:
        return read_calib(self.path / "calib.txt")

    @cached_property
    def poses(self) -> np.ndarray:
        """(len, 4, 4) T_world_lidar, one per scan."""
        cam = read_poses(self.path / "poses.txt", expected=len(self))
        return lidar_poses(cam[: len(self)], self.calib["Tr"])

    @cached_property
    def times(self) -> np.ndarray:
        return read_times(self.path / "times.txt", expected=len(self))[: len(self)]

    @cached_property
    def drives(self) -> np.ndarray:
        """(len,) drive id per scan (:func:`drive_ids`); one drive for a folder without times.txt."""
        if not (self.path / "times.txt").is_file():
            return np.zeros(len(self), dtype=np.int64)
        return drive_ids(self.times)

    def points(self, index: int) -> np.ndarray:
        return read_scan(self.scan_paths[index])

    def labels(self, index: int, num_points: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        return read_labels(self.label_path(index), num_points)

    def frame(self, index: int, with_labels: bool = True) -> Frame:
        points = self.points(index)
        semantic = instance = None
        if with_labels and self.has_labels:
            semantic, instance = self.labels(index, len(points))
        pose = self.poses[index] if self.has_poses else None
        return Frame(self.name, index, points, semantic, instance, pose)


def labelled_scans(root: str | Path, every: int = 1) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(points, raw semantic ids) of every ``every``-th scan of each sequence under ``root``."""
    for sequence in (Sequence(root, name) for name in list_sequences(root)):
        for index in range(0, len(sequence), every):
            points = sequence.points(index)
            yield points, sequence.labels(index, len(points))[0]


def list_sequences(root: str | Path) -> list[str]:
    return sorted(p.name for p in (Path(root) / "sequences").iterdir() if p.is_dir() and p.name.isdigit())


def split_sequences(root: str | Path, split: str, label_map: LabelMap | None = None) -> list[str]:
    """The sequences of ``split`` that exist under ``root`` (synthetic sets hold only a few)."""
    wanted = (label_map or load_label_map()).sequences(split)
    present = set(list_sequences(root))
    return [s for s in wanted if s in present]


def existing_split(root: str | Path, split: str, label_map: LabelMap | None = None) -> list[str]:
    """:func:`split_sequences` (``all``: every sequence), refusing a root without ``sequences/`` or without
    any of the split's sequences."""
    if not (Path(root) / "sequences").is_dir():
        raise KittiFormatError(f"{root}: no sequences/ folder (expected SemanticKITTI layout ROOT/sequences/XX)")
    sequences = list_sequences(root) if split == "all" else split_sequences(root, split, label_map)
    if not sequences:
        wanted = "any" if split == "all" else " ".join((label_map or load_label_map()).sequences(split))
        raise KittiFormatError(f"{root}/sequences: none of the {split} sequences ({wanted}) exist")
    return sequences


# --- predictions -------------------------------------------------------------------------------


def prediction_path(out_root: str | Path, sequence: str, frame_id: str) -> Path:
    return Path(out_root) / "sequences" / f"{int(sequence):02d}" / "predictions" / f"{frame_id}.label"


def write_prediction(
    out_root: str | Path, sequence: str, frame_id: str, train_ids: np.ndarray, label_map: LabelMap | None = None
) -> Path:
    """Write training-id predictions as raw ids in the official benchmark layout."""
    label_map = label_map or load_label_map()
    path = prediction_path(out_root, sequence, frame_id)
    write_bytes_atomic(path, label_map.to_raw(train_ids).astype(np.uint32).tobytes())
    return path


# --- helpers -----------------------------------------------------------------------------------


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        raise KittiFormatError(f"{path}: file does not exist") from None


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise KittiFormatError(f"{path}: file does not exist") from None


def _parse_floats(path: Path, lineno: int, text: str) -> np.ndarray:
    try:
        return np.array([float(v) for v in text.split()], dtype=np.float64)
    except ValueError:
        raise KittiFormatError(f"{path}:{lineno}: not a list of numbers: {text.strip()[:60]!r}") from None
