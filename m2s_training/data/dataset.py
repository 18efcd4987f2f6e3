"""Torch dataset over SemanticKITTI-layout sequences (real or synthetic), augmentation and collation.

A sample is one scan: points, training-id labels, instance ids and ``is_fused``. With an M2SKD
fuser, the fused hard-class points of neighbouring scans are appended after the scan's own points
with ``is_fused = True`` (they feed the teacher; they are never scored). Augmentation is drawn
from ``(seed, epoch, index)`` so a sample is the same whatever worker loads it and after a resume.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from m2s_perception.labels import LabelMap, load_label_map
from m2s_perception.remission import scale_remission
from m2s_perception.texture import with_texture
from m2s_training.data.semantic_kitti import KittiFormatError, Sequence


class Fuser(Protocol):
    """What the dataset needs of ``m2s_training.fusion.MultiScanFuser``."""

    def fuse(self, sequence: Sequence, index: int):  # -> FusedPoints(points, semantic, instance)
        ...


@dataclass
class AugmentConfig:
    rotate: bool = True  # uniform rotation about z
    flip: bool = True  # mirror x and/or y, each with probability 0.5
    scale: tuple[float, float] = (0.95, 1.05)  # isotropic scale factor range
    jitter_std: float = 0.01  # metres, Gaussian noise on x, y, z
    # Sim-to-real (all off by default): sensors differ in mount height, tilt, beams and remission.
    z_shift_std: float = 0.0  # metres: the whole cloud moves up/down (another mount height or road level)
    tilt_std_deg: float = 0.0  # degrees: roll and pitch about the sensor (mounting, road slope)
    point_dropout: float = 0.0  # drop a random share in [0, point_dropout] of the points
    beam_dropout: float = 0.0  # drop each 0.4° elevation band with this probability (fewer beams)
    remission_scale: tuple[float, float] = (1.0, 1.0)  # one gain per scan (another sensor's calibration)
    remission_noise: float = 0.0  # per-point Gaussian noise on remission
    # A real HDL-64E's remission fades with range beyond ~25 m and is mostly 0 beyond ~45 m, where
    # the simulated sensor's stays flat (bench/calibrate_real.py, "remission by range"). This share
    # of the scans is dimmed so: remission *= (knee / r) ** power beyond a knee, and each point is
    # zeroed with probability 1 / (1 + exp(-(r - zero_range) / 9 m)); knee, power and zero_range are
    # drawn per scan from the ranges below (the real scans' fit: 22 m, 0.9, 45 m).
    remission_falloff: float = 0.0
    falloff_knee: tuple[float, float] = (15.0, 30.0)  # metres
    falloff_power: tuple[float, float] = (0.5, 1.3)
    falloff_zero_range: tuple[float, float] = (35.0, 60.0)  # metres
    mix_prob: float = 0.0  # probability to paste an azimuth sector of another scan (PolarMix-like)
    # metres: bend the scene by two smooth height waves (wavelengths 15–60 m, random directions), as
    # real roads rise, fall and are cambered where synthetic ground is flat
    ground_warp: float = 0.0
    # metres: noise along each beam with a σ drawn per scan from [0, range_noise], so that how rough
    # a surface looks (which differs between simulation and a real sensor) is no cue to its class
    range_noise: float = 0.0
    # share of the scans whose remission-0 returns take the remission of lit returns of the same scan,
    # drawn at random: students learned to find road only by the few zeros among it, in simulation
    # and on real scans alike (docs/benchmarks.md "Sim-to-real", item 27); scans without zeros make
    # that cue unreliable, so geometry and context must carry road too
    zero_fill: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.zero_fill <= 1.0:
            raise ValueError(f"zero_fill is a share of scans in [0, 1], got {self.zero_fill}")
        if not 0.0 <= self.remission_falloff <= 1.0:
            raise ValueError(f"remission_falloff is a share of scans in [0, 1], got {self.remission_falloff}")
        for name in ("falloff_knee", "falloff_power", "falloff_zero_range"):
            low, high = getattr(self, name)
            if not 0.0 < low <= high:
                raise ValueError(f"{name}: expected 0 < low <= high, got [{low}, {high}]")


@dataclass
class Sample:
    points: np.ndarray  # (N, 4) float32
    labels: np.ndarray  # (N,) int64 training ids
    instance: np.ndarray  # (N,) int64
    is_fused: np.ndarray  # (N,) bool
    frame: tuple[str, str]  # (sequence, frame id)


@dataclass
class Batch:
    points: Tensor  # (N, 4) float32, all clouds of the batch concatenated
    labels: Tensor  # (N,) int64 training ids
    instance: Tensor  # (N,) int64
    is_fused: Tensor  # (N,) bool
    batch_index: Tensor  # (N,) int64: which cloud each point belongs to
    batch_size: int
    frames: list[tuple[str, str]] = field(default_factory=list)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        move = {
            name: getattr(self, name).to(device, non_blocking=non_blocking)
            for name in ("points", "labels", "instance", "is_fused", "batch_index")
        }
        return replace(self, **move)

    def pin_memory(self) -> Batch:  # DataLoader(pin_memory=True) calls this on custom batch types
        return replace(
            self,
            **{n: getattr(self, n).pin_memory() for n in ("points", "labels", "instance", "is_fused", "batch_index")},
        )

    def student_view(self) -> Batch:
        """The batch without fused points: what the single-scan student sees."""
        if not bool(self.is_fused.any()):
            return self
        keep = ~self.is_fused
        return replace(
            self,
            points=self.points[keep],
            labels=self.labels[keep],
            instance=self.instance[keep],
            is_fused=self.is_fused[keep],
            batch_index=self.batch_index[keep],
        )


def collate(samples: list[Sample]) -> Batch:
    """Concatenate clouds of different sizes; ``batch_index`` says which cloud a point came from."""
    sizes = [len(s.points) for s in samples]
    return Batch(
        points=torch.from_numpy(np.concatenate([s.points for s in samples])),
        labels=torch.from_numpy(np.concatenate([s.labels for s in samples])),
        instance=torch.from_numpy(np.concatenate([s.instance for s in samples])),
        is_fused=torch.from_numpy(np.concatenate([s.is_fused for s in samples])),
        batch_index=torch.repeat_interleave(torch.arange(len(samples)), torch.tensor(sizes)),
        batch_size=len(samples),
        frames=[s.frame for s in samples],
    )


def augment(points: np.ndarray, config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Rotate about z, flip, scale and jitter x, y, z; remission and point order are kept."""
    xyz = points[:, :3].astype(np.float64)
    if config.range_noise > 0:  # along the beams, from the sensor at the origin
        sigma = rng.uniform(0.0, config.range_noise)
        distance = np.maximum(np.linalg.norm(xyz, axis=1, keepdims=True), 1e-3)
        xyz *= 1.0 + rng.normal(0.0, sigma, (len(xyz), 1)) / distance
    if config.rotate:
        angle = rng.uniform(0.0, 2.0 * np.pi)
        c, s = np.cos(angle), np.sin(angle)
        xyz[:, :2] = xyz[:, :2] @ np.array([[c, s], [-s, c]])
    if config.flip:
        if rng.random() < 0.5:
            xyz[:, 0] = -xyz[:, 0]
        if rng.random() < 0.5:
            xyz[:, 1] = -xyz[:, 1]
    low, high = config.scale
    xyz *= rng.uniform(low, high)
    if config.tilt_std_deg > 0:
        roll, pitch = np.deg2rad(rng.normal(0.0, config.tilt_std_deg, 2))
        cr, sr, cp, sp = np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch)
        rx = np.array([[1.0, 0.0, 0.0], [0.0, cr, -sr], [0.0, sr, cr]])
        ry = np.array([[cp, 0.0, sp], [0.0, 1.0, 0.0], [-sp, 0.0, cp]])
        xyz = xyz @ (ry @ rx).T
    if config.ground_warp > 0:
        xyz[:, 2] += height_waves(xyz[:, :2], config.ground_warp, rng)
    if config.z_shift_std > 0:
        xyz[:, 2] += rng.normal(0.0, config.z_shift_std)
    if config.jitter_std > 0:
        xyz += rng.normal(0.0, config.jitter_std, size=xyz.shape)
    out = points.copy()
    out[:, :3] = xyz
    if config.zero_fill > 0 and rng.random() < config.zero_fill:
        out[:, 3] = fill_zeros(out[:, 3], rng)
    if config.remission_falloff > 0 and rng.random() < config.remission_falloff:
        measured = np.concatenate([points[:, :3], out[:, 3:4]], axis=1)  # the range before scaling
        out[:, 3] = dim_with_range(measured, config, rng)
    if config.remission_scale != (1.0, 1.0) or config.remission_noise > 0:
        remission = out[:, 3] * rng.uniform(*config.remission_scale)
        remission += rng.normal(0.0, config.remission_noise, len(remission)) * (remission > 0)  # zeros stay 0
        out[:, 3] = np.clip(remission, 0.0, 1.0)
    return out


def fill_zeros(remission: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``remission`` with every 0 replaced by the value of a lit (> 0) return drawn at random; as it is
    where nothing is lit."""
    zeros = np.flatnonzero(remission == 0)
    lit = np.flatnonzero(remission > 0)
    if len(zeros) == 0 or len(lit) == 0:
        return remission
    filled = remission.copy()
    filled[zeros] = remission[rng.choice(lit, len(zeros))]
    return filled


def dim_with_range(points: np.ndarray, config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """``points``' remission as a real HDL-64E returns it far away: fading beyond a knee, often 0."""
    distance = np.linalg.norm(points[:, :3].astype(np.float64), axis=1)
    knee, power = rng.uniform(*config.falloff_knee), rng.uniform(*config.falloff_power)
    zero_range = rng.uniform(*config.falloff_zero_range)
    gain = (knee / np.maximum(distance, knee)) ** power
    zeroed = rng.random(len(points)) < 1.0 / (1.0 + np.exp(-(distance - zero_range) / 9.0))
    return np.where(zeroed, 0.0, points[:, 3] * gain).astype(points.dtype)


def height_waves(xy: np.ndarray, amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """Two plane waves of height, each up to ``amplitude`` metres, 15–60 m long, in random
    directions; zero at the sensor, so the mount height stays as drawn (``z_shift_std``)."""
    dz = np.zeros(len(xy))
    for _ in range(2):
        direction = rng.uniform(0.0, 2.0 * np.pi)
        along = xy @ np.array([np.cos(direction), np.sin(direction)])
        wavelength, phase = rng.uniform(15.0, 60.0), rng.uniform(0.0, 2.0 * np.pi)
        dz += rng.uniform(-amplitude, amplitude) * (np.sin(2 * np.pi * along / wavelength + phase) - np.sin(phase))
    return dz


def dropout_mask(points: np.ndarray, config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Which points survive beam dropout (whole elevation bands) and random point dropout."""
    keep = np.ones(len(points), bool)
    if config.beam_dropout > 0:
        elevation = np.degrees(np.arctan2(points[:, 2], np.hypot(points[:, 0], points[:, 1])))
        band = np.floor(elevation / 0.4).astype(np.int64)
        offset = band.min() if len(band) else 0
        dropped = rng.random(band.max() - offset + 1 if len(band) else 0) < config.beam_dropout
        keep &= ~dropped[band - offset]
    if config.point_dropout > 0:
        keep &= rng.random(len(points)) >= rng.uniform(0.0, config.point_dropout)
    return keep


def paste_sector(
    target: tuple[np.ndarray, ...], source: tuple[np.ndarray, ...], rng: np.random.Generator
) -> tuple[np.ndarray, ...]:
    """Replace an azimuth sector (45°–180°) of ``target`` by the same sector of ``source``.

    Both are (points, labels, instance) in their sensor frames; a sector from another street teaches
    layouts the generator draws rarely, and ring structure and range stay consistent.
    """
    width = rng.uniform(np.pi / 4, np.pi)
    start = rng.uniform(-np.pi, np.pi)

    def inside(points: np.ndarray) -> np.ndarray:
        return np.mod(np.arctan2(points[:, 1], points[:, 0]) - start, 2 * np.pi) < width

    keep, take = ~inside(target[0]), inside(source[0])
    return tuple(np.concatenate([t[keep], s[take]]) for t, s in zip(target, source, strict=True))


class SemanticKittiDataset(Dataset):
    """Scans of the given sequences under ``root`` (``ROOT/sequences/XX``), labels as training ids."""

    def __init__(
        self,
        root: str | Path,
        sequences: list[str] | tuple[str, ...],
        label_map: LabelMap | None = None,
        augment: AugmentConfig | None = None,
        fuser: Fuser | None = None,
        max_scans: int | None = None,
        seed: int = 0,
        max_points: int | None = None,
        texture_step: float | None = None,
        texture_floor: float = 0.0,
        remission_reference: float | None = None,
        texture_ground_band: float | None = None,
        texture_quiet_bound: float | None = None,
    ):
        """``texture_step``, ``texture_floor``, ``texture_ground_band``, ``texture_quiet_bound`` (``ModelConfig``'s):
        points get a fifth column, their surface texture (m2s_perception/texture.py), computed from each scan as
        read (sensor order), before anything drops or moves points. ``remission_reference`` (``ModelConfig``'s):
        each sample's remission scaled, after the augmentations, so that its lit returns' median is this value
        (m2s_perception/remission.py)."""
        if not sequences:
            raise KittiFormatError(f"{root}: no sequences given for the dataset")
        if texture_step is not None and fuser is not None:
            raise ValueError("model.texture_step: the surface texture is not made for fused scans; train a student")
        self.label_map = label_map or load_label_map()
        self.sequences = [Sequence(root, s) for s in sequences]
        for seq in self.sequences:
            if not seq.has_labels:
                raise KittiFormatError(f"{seq.path / 'labels'}: training and validation need labels")
        self.items = [(k, i) for k, seq in enumerate(self.sequences) for i in range(len(seq))]
        if max_scans is not None and max_scans < len(self.items):
            # evenly spaced, so a short validation still spans every sequence
            picks = np.linspace(0, len(self.items) - 1, max_scans).round().astype(int)
            self.items = [self.items[p] for p in picks]
        self.augment_config = augment
        self.fuser = fuser
        self.max_points = max_points
        self.texture_step, self.texture_floor = texture_step, texture_floor
        self.texture_ground_band, self.texture_quiet_bound = texture_ground_band, texture_quiet_bound
        self.remission_reference = remission_reference
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """New augmentation draws per epoch; call before creating the epoch's iterator."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, item: int) -> Sample:
        seq_no, index = self.items[item]
        seq = self.sequences[seq_no]
        rng = np.random.default_rng([self.seed, self.epoch, item])
        points = self.read_points(seq, index)
        semantic, instance = seq.labels(index, len(points))
        labels = self.label_map.to_train(semantic).astype(np.int64)
        instance = instance.astype(np.int64)
        aug = self.augment_config
        if aug is not None and aug.mix_prob > 0 and len(self.items) > 1 and rng.random() < aug.mix_prob:
            other_no, other_index = self.items[(item + rng.integers(1, len(self.items))) % len(self.items)]
            other = self.sequences[other_no]
            other_points = self.read_points(other, other_index)
            other_semantic, other_instance = other.labels(other_index, len(other_points))
            source = (
                other_points,
                self.label_map.to_train(other_semantic).astype(np.int64),
                other_instance.astype(np.int64),
            )
            points, labels, instance = paste_sector((points, labels, instance), source, rng)
        if aug is not None and (aug.beam_dropout > 0 or aug.point_dropout > 0):
            keep = dropout_mask(points, aug, rng)
            points, labels, instance = points[keep], labels[keep], instance[keep]
        if self.max_points is not None and len(points) > self.max_points:
            # a random subset in scan order: cheaper CPU training; the grid pools points per cell anyway
            keep = np.sort(rng.choice(len(points), self.max_points, replace=False))
            points, labels, instance = points[keep], labels[keep], instance[keep]
        is_fused = np.zeros(len(points), dtype=bool)
        if self.fuser is not None:
            fused = self.fuser.fuse(seq, index)
            points = np.concatenate([points, np.asarray(fused.points, dtype=np.float32)])
            labels = np.concatenate([labels, self.label_map.to_train(fused.semantic).astype(np.int64)])
            instance = np.concatenate([instance, np.asarray(fused.instance, dtype=np.int64)])
            is_fused = np.concatenate([is_fused, np.ones(len(fused.points), dtype=bool)])
        if self.augment_config is not None:
            points = augment(points, self.augment_config, rng)
        if self.remission_reference is not None:
            points = scale_remission(points, self.remission_reference)  # as the model will see any scan
        return Sample(points.astype(np.float32), labels, instance, is_fused, (seq.name, seq.frame_id(index)))

    def read_points(self, seq: Sequence, index: int) -> np.ndarray:
        points = seq.points(index)
        if self.texture_step is None:
            return points
        return with_texture(
            points, self.texture_step, None, self.texture_floor, self.texture_ground_band, self.texture_quiet_bound
        )

    def label_counts(self) -> np.ndarray:
        """Points per training id over the dataset's own scans (fused points excluded)."""
        counts = np.zeros(self.label_map.num_classes, dtype=np.int64)
        for seq_no, index in self.items:
            semantic, _ = self.sequences[seq_no].labels(index)
            counts += np.bincount(self.label_map.to_train(semantic), minlength=len(counts))
        return counts


def make_loader(
    dataset: SemanticKittiDataset,
    batch_size: int,
    sampler: Sampler,
    num_workers: int,
    pin_memory: bool = False,
    generator: torch.Generator | None = None,
) -> DataLoader:
    """``generator``: where the iterator draws its worker seed; None draws from the global RNG,
    which a resumed run would then consume at a different point than an uninterrupted one."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        drop_last=False,
        persistent_workers=False,  # workers must see the dataset's epoch, set before each epoch
        generator=generator,
    )
