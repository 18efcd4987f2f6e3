"""The ROS-free labelling pipeline: PointCloud2 in → decode → select → predict → encode → PointCloud2 out.

``ScanLabeller`` works on any PointCloud2-like message (rclpy's or rosbags'); the node wraps it
with topics, threads and diagnostics. Two outputs, each made only when asked for:
- the labelled cloud: the input's points, count and order (organised clouds keep height × width),
  header copied, fields x, y, z, intensity (sensor units), ``rgb`` (float32-packed 0x00RRGGBB class
  colour for RViz's RGB8), optional ``confidence`` and ``label`` (uint16 training or raw id); with
  ``keep_input_fields`` every input field instead of x, y, z, intensity, in the input's byte layout;
- the filtered cloud: the input's own layout (fields, point_step, byte order) holding only the points
  whose class is not in ``filtered_classes`` (e.g. road, sidewalk, terrain: ground removal), unorganised.
Points that are not finite or lie outside [min_range, max_range] are not fed to the model and get
label 0 (unlabeled). ``resolve_checkpoint`` and ``load_segmenter`` build the model it runs.
"""

from __future__ import annotations

import array
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from m2s_perception.labels import IGNORE_ID, LabelMap
from m2s_perception.pointcloud2 import DATATYPE_TO_DTYPE, FLOAT32, UINT16, CloudFormatError, decode_cloud, make_cloud
from m2s_perception.resources import DEMO_CHECKPOINT

PRECISIONS = {"auto": None, "fp16": True, "fp32": False}
# Why a scan was skipped: a fixed set, so counters and warning throttles stay bounded whatever senders send.
REJECTION_KINDS = ("too_large", "bad_format", "empty", "no_finite_points")


class ScanRejected(Exception):
    """A scan the node cannot label (bad input); ``kind`` is one of ``REJECTION_KINDS``."""

    def __init__(self, kind: str, message: str):
        assert kind in REJECTION_KINDS, kind
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class LabelSettings:
    """The parameters that shape how one scan is labelled (may change while the node runs)."""

    intensity_scale: float = 1.0
    min_range: float = 0.0
    max_range: float = 200.0
    max_points: int = 500_000
    label_format: str = "train"
    publish_confidence: bool = False
    keep_input_fields: bool = False
    filtered_classes: tuple[str, ...] = ()


@dataclass
class LabelledScan:
    cloud: Any  # the labelled PointCloud2 (None when not asked for)
    filtered: Any  # the input without the filtered classes (None when not asked for)
    num_points: int
    timings_ms: dict[str, float]  # decode, inference, encode
    intensity_warning: str | None = None


class ScanLabeller:
    """No ROS node inside: give it the message classes (rclpy's or rosbags') the outputs should use."""

    def __init__(self, segmenter: Any, label_map: LabelMap, cloud_type: type, field_type: type):
        self.segmenter = segmenter
        self.label_map = label_map
        self.cloud_type, self.field_type = cloud_type, field_type
        rgb = label_map.train_rgb.astype(np.uint32)
        self.rgb_by_train_id = ((rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]).view(np.float32)
        self.raw_by_train_id = label_map.train_to_raw_lut.astype(np.uint16)

    def label(self, msg: Any, settings: LabelSettings, labelled: bool = True, filtered: bool = False) -> LabelledScan:
        start = time.perf_counter()
        num_points = int(msg.width) * int(msg.height)
        if num_points > settings.max_points:
            raise ScanRejected(
                "too_large", f"cloud has {num_points} points, more than max_points={settings.max_points}"
            )
        try:
            cloud = decode_cloud(msg, settings.intensity_scale, with_ring=self.segmenter.config.uses_texture)
        except CloudFormatError as err:
            raise ScanRejected("bad_format", f"malformed PointCloud2: {err}") from None
        if cloud.num_points == 0:
            raise ScanRejected("empty", "cloud has no points (width × height = 0)")
        if not cloud.finite.any():
            raise ScanRejected("no_finite_points", f"all {cloud.num_points} points are NaN or infinite")
        with np.errstate(over="ignore", invalid="ignore"):  # huge or non-finite coordinates: not selected
            distance = np.linalg.norm(cloud.points[:, :3], axis=1)
            selected = cloud.finite & (distance >= settings.min_range) & (distance <= settings.max_range)
        decoded = time.perf_counter()

        train_ids = np.full(cloud.num_points, IGNORE_ID, dtype=np.uint8)
        confidence = np.zeros(cloud.num_points, dtype=np.float32)
        if selected.any():
            ring = cloud.ring[selected] if cloud.ring is not None else None
            prediction = self.segmenter.predict(cloud.points[selected], ring)
            train_ids[selected] = prediction.labels
            confidence[selected] = prediction.confidence
        predicted = time.perf_counter()

        added = {"rgb": self.rgb_by_train_id[train_ids]}
        if settings.publish_confidence:
            added["confidence"] = confidence
        raw = settings.label_format == "raw"
        added["label"] = self.raw_by_train_id[train_ids] if raw else train_ids.astype(np.uint16)
        out = None
        if labelled and settings.keep_input_fields:
            out = self._with_input_fields(msg, added, cloud.height)
        elif labelled:
            columns = {
                "x": cloud.points[:, 0],
                "y": cloud.points[:, 1],
                "z": cloud.points[:, 2],
                "intensity": cloud.points[:, 3] * np.float32(settings.intensity_scale),  # the sensor's units
                **added,
            }
            out = make_cloud(self.cloud_type, self.field_type, msg.header, columns, height=cloud.height)
        kept = None
        if filtered:
            removed = [self.label_map.class_id(name) for name in settings.filtered_classes]
            kept = self._subset(msg, ~np.isin(train_ids, removed))
        encoded = time.perf_counter()

        if cloud.intensity_field is None:
            warning = "the cloud has no intensity field (intensity, remission, reflectivity or i); using zeros"
        else:
            warning = intensity_problem(cloud.points[cloud.finite, 3], settings.intensity_scale)
        timings = {
            "decode": 1e3 * (decoded - start),
            "inference": 1e3 * (predicted - decoded),
            "encode": 1e3 * (encoded - predicted),
        }
        return LabelledScan(out, kept, cloud.num_points, timings, warning)

    def _with_input_fields(self, msg: Any, added: dict[str, np.ndarray], height: int) -> Any:
        """Every input field (bytes copied as they are) followed by ``added``, in the input's byte order."""
        records = point_records(msg)
        byte_order = ">" if msg.is_bigendian else "<"
        fields = [(f.name, int(f.offset), int(f.datatype), int(f.count)) for f in msg.fields if f.name not in added]
        sizes = [DATATYPE_TO_DTYPE.get(datatype, np.dtype("u1")).itemsize for _n, _o, datatype, _c in fields]
        align = max([4, *sizes])
        offset = -(-records.shape[-1] // 4) * 4
        names, formats, offsets = [], [], []
        for name, column in added.items():
            dtype = column.dtype.newbyteorder(byte_order)
            datatype = FLOAT32 if column.dtype == np.float32 else UINT16
            fields.append((name, offset, datatype, 1))
            names.append(name), formats.append(dtype), offsets.append(offset)
            offset += dtype.itemsize
        point_step = -(-offset // align) * align
        data, out = self._new_records(records.shape[0] * records.shape[1], point_step)
        out.reshape(records.shape[0], records.shape[1], point_step)[..., : records.shape[-1]] = records
        view = out.reshape(-1).view(
            np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": point_step})
        )
        for name, column in added.items():
            view[name] = column
        return self._message(msg, fields, point_step, data, height, len(out) // height)

    def _subset(self, msg: Any, keep: np.ndarray) -> Any:
        """The input's points where ``keep``, in its own layout, as one row."""
        records = point_records(msg)
        data, out = self._new_records(int(keep.sum()), records.shape[-1])
        out[:] = records[keep.reshape(records.shape[:2])]
        fields = [(f.name, int(f.offset), int(f.datatype), int(f.count)) for f in msg.fields]
        return self._message(msg, fields, records.shape[-1], data, 1, len(out))

    def _new_records(self, num_points: int, point_step: int) -> tuple[Any, np.ndarray]:
        """The buffer a message will own (rclpy: array.array, its data setter's fast path; rosbags: numpy)
        and a writable (num_points, point_step) uint8 view of it."""
        nbytes = num_points * point_step
        data = (
            np.zeros(nbytes, np.uint8) if dataclasses.is_dataclass(self.cloud_type) else array.array("B", bytes(nbytes))
        )
        return data, np.frombuffer(data, np.uint8).reshape(num_points, point_step)

    def _message(self, msg: Any, fields: list[tuple], point_step: int, data: Any, height: int, width: int) -> Any:
        values = dict(
            header=msg.header,
            height=height,
            width=width,
            fields=[self.field_type(name=n, offset=o, datatype=d, count=c) for n, o, d, c in fields],
            is_bigendian=bool(msg.is_bigendian),
            point_step=point_step,
            row_step=point_step * width,
            data=data,
            is_dense=bool(msg.is_dense),
        )
        if dataclasses.is_dataclass(self.cloud_type):
            return self.cloud_type(**values)
        out = self.cloud_type()
        for name, value in values.items():
            setattr(out, name, value)
        return out


def resolve_checkpoint(value: str) -> Path:
    """The checkpoint parameter as a path; empty means the packaged demo weights."""
    if value:
        path = Path(value).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {path} (parameter 'checkpoint')")
        return path
    if DEMO_CHECKPOINT.is_file():
        return DEMO_CHECKPOINT
    raise FileNotFoundError(
        "no checkpoint: set the parameter 'checkpoint' (e.g. -p checkpoint:=runs/student/best.pt); "
        f"the packaged demo weights {DEMO_CHECKPOINT} are not installed"
    )


def load_segmenter(
    checkpoint: Path,
    device: str,
    precision: str,
    backend: str = "torch",
    num_threads: int = 0,
    label_map: LabelMap | None = None,
    ensemble_members: int = 0,
    level_ground: bool = True,
) -> Any:
    """``Segmenter.from_checkpoint`` with the node's parameters; a clear error for CUDA on a machine without it."""
    import torch

    from m2s_perception.inference import Segmenter

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available (use device: auto or cpu)")
    return Segmenter.from_checkpoint(
        checkpoint,
        device,
        PRECISIONS[precision],
        backend,
        num_threads or None,
        label_map,
        ensemble_members or None,
        level_ground,
    )


def point_records(msg: Any) -> np.ndarray:
    """(height, width, point_step) uint8 view of each point's bytes, row padding skipped; no copy.

    Call after ``decode_cloud`` accepted the message (it checks the buffer holds row_step × height).
    """
    height, width, point_step, row_step = int(msg.height), int(msg.width), int(msg.point_step), int(msg.row_step)
    data = msg.data
    if isinstance(data, np.ndarray):
        buffer = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
    else:
        try:
            buffer = np.frombuffer(data, np.uint8)
        except TypeError:  # a plain list of ints
            buffer = np.asarray(data, np.uint8)
    return np.lib.stride_tricks.as_strided(buffer, (height, width, point_step), (row_step, point_step, 1))


def intensity_problem(intensity: np.ndarray, scale: float) -> str | None:
    """A hint when intensities (already divided by ``scale``) are far off the model's 0..1."""
    sample = intensity[:: max(1, len(intensity) // 4096)]
    if len(sample) == 0:
        return None
    high, low = float(np.quantile(sample, 0.99)), float(sample.min())
    if high > 2.0:
        return (
            f"intensity reaches {high * scale:.4g} (99th percentile) while intensity_scale={scale:g} expects at "
            f"most {scale:g}; set intensity_scale to the sensor's full-scale value (KITTI 1, most drivers 255)"
        )
    if low < -0.5:
        return f"negative intensities (down to {low * scale:.4g}); the model expects 0..{scale:g}"
    if scale > 1.0 and 0.0 < high < 1.0 / scale:
        return (
            f"all intensities are below 1 although intensity_scale={scale:g}: the sensor seems to report 0..1 "
            "already (KITTI remission); set intensity_scale: 1.0"
        )
    return None
