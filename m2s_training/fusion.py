"""M2SKD multi-scan input: hard-class instances of neighbouring scans fused into scan t.

The teacher of multi-to-single distillation sees, on top of scan t, the points of *hard-class
instances* (person, pole, bicycle, … — instance id ≠ 0) from the k previous (and optionally next)
scans, mapped into scan t's LiDAR frame with the sequence poses. Whole neighbouring scans are not
fused: only the sparse, hard objects gain points. The student never sees these points and they are
never scored (the dataset appends them after the scan's own points with ``is_fused = True``).

Static instances are placed by the poses alone. Moving instances (a ``moving-*`` raw id, or a
centroid that moves more than ``motion_threshold`` metres in the world frame between the
neighbour and scan t) cannot be placed by the poses:

- ``moving="align"`` shifts each neighbour's copy so that its centroid matches the centroid of the
  same instance in scan t (what the official M2SKD code does, for every instance); a moving
  instance absent from scan t is dropped, there is nothing to align it to;
- ``moving="drop"`` leaves moving instances out.

``only_present=True`` (the official code's choice) fuses only instances that are also visible in
scan t; with ``False`` static instances that scan t misses (occluded, out of range) are fused too.

The official M2SKD code fuses differently, and ``placement="centroid"`` with
``full_history_only=True`` reproduces it: poses are not used at all, every instance is translated
so its centroid equals the same instance's centroid in scan t (instances absent from scan t are
dropped), and scans with fewer than ``k_previous`` predecessors get no fused points.

Neighbours never cross a break in the recording (:attr:`Sequence.drives`, from the time stamps):
``m2s-synth --streets`` writes several short streets, each its own world, into one sequence.

Fused inputs are cached on disk as ``.npz`` keyed by sequence, scan index and a hash of the
configuration, the data root and the size and mtime of every file read (scans, labels, poses,
calibration, times), so regenerated data is never served stale; writes are atomic.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from m2s_perception.labels import LabelMap, load_label_map
from m2s_training.atomic import atomic_path
from m2s_training.data.semantic_kitti import KittiFormatError, Sequence

MovingPolicy = Literal["align", "drop"]
Placement = Literal["poses", "centroid"]
_CACHE_VERSION = 1


@dataclass(frozen=True)
class FusedPoints:
    """Points borrowed from neighbouring scans, already in the target scan's LiDAR frame."""

    points: np.ndarray  # (M, 4) float32 x, y, z, remission
    semantic: np.ndarray  # (M,) uint16 raw ids
    instance: np.ndarray  # (M,) uint16

    def __len__(self) -> int:
        return len(self.points)

    @classmethod
    def empty(cls) -> FusedPoints:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.uint16), np.zeros(0, np.uint16))

    @classmethod
    def concatenate(cls, parts: list[FusedPoints]) -> FusedPoints:
        if not parts:
            return cls.empty()
        return cls(
            np.concatenate([p.points for p in parts]).astype(np.float32, copy=False),
            np.concatenate([p.semantic for p in parts]).astype(np.uint16, copy=False),
            np.concatenate([p.instance for p in parts]).astype(np.uint16, copy=False),
        )


@dataclass(frozen=True)
class _Instances:
    """Hard-class instance points of one scan: per-point keys and per-instance centroids."""

    points: np.ndarray  # (P, 4) in the frame the scan was expressed in
    semantic: np.ndarray  # (P,) raw ids
    instance: np.ndarray  # (P,)
    unique_keys: np.ndarray  # (U,) sorted training id << 16 | instance id
    inverse: np.ndarray  # (P,) row of unique_keys
    centroids: np.ndarray  # (U, 3)
    has_moving_label: np.ndarray  # (U,) bool: some point carries a moving-* raw id


class MultiScanFuser:
    def __init__(
        self,
        hard_classes: tuple[str, ...] | list[str] | None = None,
        k_previous: int = 4,
        k_next: int = 0,
        moving: MovingPolicy = "align",
        only_present: bool = True,
        motion_threshold: float = 1.0,
        cache_dir: str | Path | None = None,
        label_map: LabelMap | None = None,
        placement: Placement = "poses",
        full_history_only: bool = False,
    ):
        if k_previous < 0 or k_next < 0:
            raise ValueError(f"k_previous and k_next must be >= 0, got {k_previous}, {k_next}")
        if moving not in ("align", "drop"):
            raise ValueError(f"moving must be 'align' or 'drop', got {moving!r}")
        if placement not in ("poses", "centroid"):
            raise ValueError(f"placement must be 'poses' or 'centroid', got {placement!r}")
        self.label_map = label_map or load_label_map()
        self.hard_classes = tuple(self.label_map.hard_classes if hard_classes is None else hard_classes)
        self.hard_train_ids = np.array(self.label_map.hard_class_ids(self.hard_classes), dtype=np.int64)
        self.k_previous = k_previous
        self.k_next = k_next
        self.moving = moving
        self.only_present = only_present
        self.motion_threshold = float(motion_threshold)
        self.placement = placement
        self.full_history_only = full_history_only
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.is_hard_train_id = np.zeros(self.label_map.num_classes, dtype=bool)
        self.is_hard_train_id[self.hard_train_ids] = True
        moving_raw = [raw for raw, name in self.label_map.raw_names.items() if name.startswith("moving-")]
        self.is_moving_raw = np.zeros(1 << 16, dtype=bool)
        self.is_moving_raw[moving_raw] = True

    def config_dict(self) -> dict:
        return {
            "hard_classes": sorted(self.hard_classes),
            "k_previous": self.k_previous,
            "k_next": self.k_next,
            "moving": self.moving,
            "only_present": self.only_present,
            "motion_threshold": self.motion_threshold,
            "placement": self.placement,
            "full_history_only": self.full_history_only,
            "version": _CACHE_VERSION,
        }

    def neighbours(self, index: int, length: int, drives: np.ndarray | None = None) -> list[int]:
        """Scan indices fused into scan ``index``: up to k previous, then up to k next, all of the
        same drive (``drives``: one id per scan, :attr:`Sequence.drives`; None: one drive)."""
        first, end = 0, length
        if drives is not None:
            same = np.flatnonzero(np.asarray(drives) == drives[index])  # contiguous: ids only grow
            first, end = int(same[0]), int(same[-1]) + 1
        if self.full_history_only and index - first < self.k_previous:
            return []
        previous = range(max(first, index - self.k_previous), index)
        following = range(index + 1, min(end, index + 1 + self.k_next))
        return [*previous, *following]

    def neighbours_in(self, sequence: Sequence, index: int) -> list[int]:
        """:meth:`neighbours` of scan ``index`` in ``sequence``, never crossing a break in its recording."""
        return self.neighbours(index, len(sequence), sequence.drives)

    # --- public entry point --------------------------------------------------------------------

    def fuse(self, sequence: Sequence, index: int) -> FusedPoints:
        if not 0 <= index < len(sequence):
            raise IndexError(f"scan {index} out of range for sequence {sequence.name} ({len(sequence)} scans)")
        if not sequence.has_labels:
            raise KittiFormatError(f"{sequence.path}: multi-scan fusion needs labels (instance ids); none found")
        cache_path = self.cache_path(sequence, index)
        if cache_path is not None:
            cached = _read_cache(cache_path)
            if cached is not None:
                return cached
        fused = self._fuse(sequence, index)
        if cache_path is not None:
            _write_cache(cache_path, fused)
        return fused

    def cache_path(self, sequence: Sequence, index: int) -> Path | None:
        if self.cache_dir is None:
            return None
        # Keyed by content too: size and mtime of every file this fusion reads, so data regenerated
        # under the same path is fused afresh instead of served stale.
        key = {
            **self.config_dict(),
            "root": str(sequence.root.resolve()),
            "inputs": _input_signature(self, sequence, index),
        }
        digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
        return self.cache_dir / sequence.name / f"{sequence.frame_id(index)}_{digest}.npz"

    # --- the work ------------------------------------------------------------------------------

    def _fuse(self, sequence: Sequence, index: int) -> FusedPoints:
        if self.placement == "centroid":
            return self._fuse_by_centroids(sequence, index)
        poses = sequence.poses
        current = self._instances(sequence, index, transform=None)
        world_from_current = poses[index]
        current_world_centroids = _apply(world_from_current, current.centroids)
        current_from_world = np.linalg.inv(world_from_current)
        parts = []
        for j in self.neighbours_in(sequence, index):
            neighbour = self._instances(sequence, j, transform=current_from_world @ poses[j])
            parts.append(self._place(neighbour, current, current_world_centroids, world_from_current))
        return FusedPoints.concatenate(parts)

    def _fuse_by_centroids(self, sequence: Sequence, index: int) -> FusedPoints:
        """The official M2SKD rule: no poses; each neighbour instance moved onto its centroid in scan t."""
        current = self._instances(sequence, index, transform=None)
        parts = []
        for j in self.neighbours_in(sequence, index):
            neighbour = self._instances(sequence, j, transform=None)
            present, rows = _rows_in(current.unique_keys, neighbour.unique_keys)
            shift = np.zeros_like(neighbour.centroids)
            shift[present] = current.centroids[rows[present]] - neighbour.centroids[present]
            point_keep = present[neighbour.inverse]
            points = neighbour.points[point_keep].copy()
            points[:, :3] += shift[neighbour.inverse[point_keep]]
            parts.append(
                FusedPoints(points.astype(np.float32), neighbour.semantic[point_keep], neighbour.instance[point_keep])
            )
        return FusedPoints.concatenate(parts)

    def _place(
        self,
        neighbour: _Instances,
        current: _Instances,
        current_world_centroids: np.ndarray,
        world_from_current: np.ndarray,
    ) -> FusedPoints:
        """Keep, shift or drop each instance of one neighbour scan (already in scan t's frame)."""
        if not len(neighbour.unique_keys):
            return FusedPoints.empty()
        moving = neighbour.has_moving_label.copy()
        present, row_in_current = _rows_in(current.unique_keys, neighbour.unique_keys)
        if present.any():
            rows = row_in_current[present]
            moving[present] |= current.has_moving_label[rows]
            # Both centroids in the world frame: a static object stays put whatever the sensor did.
            world_centroids = _apply(world_from_current, neighbour.centroids[present])
            moving[present] |= np.linalg.norm(world_centroids - current_world_centroids[rows], axis=1) > (
                self.motion_threshold
            )

        keep = present if self.only_present else np.ones_like(present)
        shift = np.zeros_like(neighbour.centroids)
        if self.moving == "drop":
            keep &= ~moving
        else:  # align: a moving instance goes where scan t sees it, or nowhere
            keep &= ~moving | present
            aligned = moving & present
            shift[aligned] = current.centroids[row_in_current[aligned]] - neighbour.centroids[aligned]

        point_keep = keep[neighbour.inverse]
        points = neighbour.points[point_keep].copy()
        points[:, :3] += shift[neighbour.inverse[point_keep]]
        return FusedPoints(points.astype(np.float32), neighbour.semantic[point_keep], neighbour.instance[point_keep])

    def _instances(self, sequence: Sequence, index: int, transform: np.ndarray | None) -> _Instances:
        """Hard-class instance points of scan ``index``, mapped by ``transform`` (4x4) if given."""
        points = sequence.points(index)
        semantic, instance = sequence.labels(index, len(points))
        train_ids = self.label_map.to_train(semantic).astype(np.int64)
        mask = (instance != 0) & self.is_hard_train_id[train_ids]
        points = points[mask].astype(np.float64)
        if transform is not None:
            points[:, :3] = _apply(transform, points[:, :3])
        semantic, instance = semantic[mask], instance[mask]
        keys = (train_ids[mask] << 16) | instance.astype(np.int64)
        unique_keys, inverse = np.unique(keys, return_inverse=True)
        counts = np.bincount(inverse, minlength=len(unique_keys)).astype(np.float64)
        centroids = (
            np.stack([np.bincount(inverse, weights=points[:, d], minlength=len(unique_keys)) for d in range(3)], axis=1)
            / np.maximum(counts, 1)[:, None]
        )
        has_moving = np.bincount(inverse, weights=self.is_moving_raw[semantic], minlength=len(unique_keys)) > 0
        return _Instances(points, semantic, instance, unique_keys, inverse, centroids, has_moving)


def _input_signature(fuser: MultiScanFuser, sequence: Sequence, index: int) -> list:
    """(name, size, mtime_ns) of the scans, labels, poses, calibration and times that ``fuse`` reads."""
    scans = [index, *fuser.neighbours_in(sequence, index)]
    paths = [sequence.path / "poses.txt", sequence.path / "calib.txt", sequence.path / "times.txt"]
    paths += [p for i in scans for p in (sequence.scan_paths[i], sequence.label_path(i))]
    signature = []
    for path in paths:
        try:
            stat = path.stat()
        except FileNotFoundError:  # e.g. no poses.txt for a placement that needs none
            signature.append([path.name, None])
            continue
        signature.append([path.name, stat.st_size, stat.st_mtime_ns])
    return signature


def _rows_in(current_keys: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``keys``: whether the sorted ``current_keys`` hold it, and at which row (0 if not)."""
    if not len(current_keys):
        return np.zeros(len(keys), bool), np.zeros(len(keys), np.int64)
    rows = np.minimum(np.searchsorted(current_keys, keys), len(current_keys) - 1)
    return current_keys[rows] == keys, rows


def _apply(transform: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    return xyz @ transform[:3, :3].T + transform[:3, 3]


def _read_cache(path: Path) -> FusedPoints | None:
    """The cached fusion, or None when absent or unreadable (it is then recomputed)."""
    try:
        with np.load(path) as data:
            return FusedPoints(data["points"], data["semantic"], data["instance"])
    except (FileNotFoundError, KeyError, ValueError, OSError, zipfile.BadZipFile):
        return None


def _write_cache(path: Path, fused: FusedPoints) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, points=fused.points, semantic=fused.semantic, instance=fused.instance)
