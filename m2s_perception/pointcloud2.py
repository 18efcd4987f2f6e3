"""sensor_msgs/PointCloud2 ↔ numpy, without per-point Python loops.

Works on any message that *looks like* a PointCloud2 (duck typing): rclpy messages (``data`` is an
``array.array('B')``), rosbags' deserialised messages (``data`` is a numpy uint8 array), or any
object with the same attributes and a ``data`` that supports the buffer protocol.

Decoding builds a numpy structured dtype from the message's fields (offsets, byte order,
``itemsize = point_step``) and lays it over the data buffer with ``row_step`` strides: a zero-copy
view of every point, in the message's flat row-major order (organised clouds are never transposed).
The only copy is the final interleave into the ``(N, 4)`` float32 array the model wants.

Encoding writes named numpy columns straight into the buffer the message will own (an
``array.array`` for rclpy, so that the message's ``data`` setter takes its fast path; a numpy uint8
array for rosbags).
"""

from __future__ import annotations

import array
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# sensor_msgs/PointField datatypes.
INT8, UINT8, INT16, UINT16, INT32, UINT32, FLOAT32, FLOAT64 = range(1, 9)
DATATYPE_TO_DTYPE: dict[int, np.dtype] = {
    INT8: np.dtype("i1"),
    UINT8: np.dtype("u1"),
    INT16: np.dtype("i2"),
    UINT16: np.dtype("u2"),
    INT32: np.dtype("i4"),
    UINT32: np.dtype("u4"),
    FLOAT32: np.dtype("f4"),
    FLOAT64: np.dtype("f8"),
}
_KIND_SIZE_TO_DATATYPE = {(dtype.kind, dtype.itemsize): datatype for datatype, dtype in DATATYPE_TO_DTYPE.items()}

XYZ = ("x", "y", "z")
# Drivers disagree on the name: KITTI converters use "intensity" or "i", Ouster "reflectivity".
INTENSITY_NAMES = ("intensity", "remission", "reflectivity", "i")


class CloudFormatError(ValueError):
    """A PointCloud2 message that cannot be read as a point cloud; the message says exactly why."""


@dataclass(frozen=True)
class CloudField:
    """One sensor_msgs/PointField, independent of the message library."""

    name: str
    offset: int
    datatype: int
    count: int = 1


@dataclass(frozen=True)
class DecodedCloud:
    points: np.ndarray  # (N, 4) float32: x, y, z, intensity / intensity_scale; message order, non-finite kept
    finite: np.ndarray  # (N,) bool: all four values of the point are finite
    intensity_field: str | None  # the field read as intensity; None: the cloud has none, column 3 is zeros
    height: int
    width: int
    ring: np.ndarray | None = None  # (N,) int64 beam index, read where asked for and the cloud has a "ring" field

    @property
    def num_points(self) -> int:
        return self.points.shape[0]


@dataclass(frozen=True)
class PackedCloud:
    fields: tuple[CloudField, ...]
    point_step: int
    data: np.ndarray  # (num_points * point_step,) uint8, little-endian records


def cloud_fields(msg: Any) -> tuple[CloudField, ...]:
    """The fields of a PointCloud2-like message as plain ``CloudField`` values."""
    return tuple(CloudField(str(f.name), int(f.offset), int(f.datatype), int(f.count)) for f in msg.fields)


def find_intensity_field(fields: Sequence[CloudField]) -> str | None:
    """The first field named like an intensity (see ``INTENSITY_NAMES``), or None."""
    names = {f.name for f in fields}
    return next((name for name in INTENSITY_NAMES if name in names), None)


# Real records are tens of bytes; numpy's record size is a C int, so a lie of ~2^32 must be refused here.
MAX_POINT_STEP = 65536


def read_fields(msg: Any, names: Sequence[str]) -> np.ndarray:
    """Zero-copy structured view ``(height, width)`` of the named fields of a PointCloud2-like message.

    Each named field must exist, have count 1 and a known datatype, and lie inside ``point_step``;
    the data must hold ``row_step * height`` bytes. Anything else raises ``CloudFormatError``.
    The view is read-only when the message's buffer is (e.g. ``bytes``).
    """
    fields = cloud_fields(msg)
    by_name: dict[str, CloudField] = {}
    for field in fields:
        if field.name in names and field.name in by_name:
            raise CloudFormatError(f"field {field.name!r} appears twice in the cloud's fields")
        by_name.setdefault(field.name, field)
    missing = [name for name in names if name not in by_name]
    if missing:
        have = ", ".join(f.name for f in fields) or "none"
        raise CloudFormatError(f"missing field(s) {', '.join(map(repr, missing))}; the cloud has fields: {have}")

    height, width = int(msg.height), int(msg.width)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    if point_step > MAX_POINT_STEP:
        raise CloudFormatError(f"point_step {point_step} is larger than any point record (at most {MAX_POINT_STEP})")
    byte_order = ">" if msg.is_bigendian else "<"
    formats, offsets = [], []
    for name in names:
        field = by_name[name]
        if field.datatype not in DATATYPE_TO_DTYPE:
            raise CloudFormatError(
                f"field {name!r} has unknown datatype {field.datatype} (sensor_msgs/PointField defines 1..8)"
            )
        if field.count != 1:
            raise CloudFormatError(f"field {name!r} has count {field.count}; only count 1 is supported for it")
        dtype = DATATYPE_TO_DTYPE[field.datatype].newbyteorder(byte_order)
        if field.offset < 0 or field.offset + dtype.itemsize > point_step:
            raise CloudFormatError(
                f"field {name!r} (offset {field.offset}, {dtype.itemsize} bytes) "
                f"does not fit in point_step {point_step}"
            )
        formats.append(dtype)
        offsets.append(field.offset)
    record = np.dtype({"names": list(names), "formats": formats, "offsets": offsets, "itemsize": max(point_step, 1)})

    buffer = _byte_buffer(msg.data)
    if height * width == 0:
        return np.zeros((height, width), dtype=record)
    if row_step < width * point_step:
        raise CloudFormatError(
            f"row_step {row_step} is smaller than width * point_step = {width} * {point_step} = {width * point_step}"
        )
    if buffer.nbytes < row_step * height:
        raise CloudFormatError(
            f"data holds {buffer.nbytes} bytes, fewer than row_step * height = {row_step} * {height} "
            f"= {row_step * height} (width {width}, point_step {point_step})"
        )
    return np.ndarray((height, width), dtype=record, buffer=buffer, strides=(row_step, point_step))


def decode_cloud(msg: Any, intensity_scale: float = 1.0, with_ring: bool = False) -> DecodedCloud:
    """Read x, y, z and intensity of a PointCloud2-like message into float32 ``(N, 4)``.

    ``intensity_scale`` is the value the sensor reports for full remission: intensities are divided
    by it so that column 3 is on the KITTI 0..1 scale (1.0 for KITTI, 255 for most drivers).
    Points keep the message's flat row-major order; non-finite points are kept and flagged in
    ``finite`` (a float64 value too large for float32 becomes inf and is flagged too).
    ``with_ring``: also read the beam index of clouds that have a ``ring`` field (Velodyne and
    Ouster drivers, nuScenes), which orders a column-major cloud ring by ring for the surface texture.
    """
    if not intensity_scale > 0:
        raise ValueError(f"intensity_scale must be > 0, got {intensity_scale}")
    fields = cloud_fields(msg)
    intensity = find_intensity_field(fields)
    names = (*XYZ, intensity) if intensity else XYZ
    view = read_fields(msg, names)
    height, width = view.shape
    points = np.empty((height, width, 4), dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        for column, name in enumerate(names):
            points[..., column] = view[name]  # casts datatype and byte order in one pass, no temporaries
    if intensity is None:
        points[..., 3] = 0.0
    elif intensity_scale != 1.0:
        points[..., 3] *= np.float32(1.0 / intensity_scale)
    points = points.reshape(height * width, 4)
    finite = np.isfinite(points).all(axis=1)
    ring = None
    if with_ring and any(f.name == "ring" for f in fields):
        ring = read_fields(msg, ("ring",))["ring"].reshape(-1)
        if not np.issubdtype(ring.dtype, np.integer):
            raise CloudFormatError(f"field 'ring' must hold integers (the beam index), got {ring.dtype}")
        ring = ring.astype(np.int64)
    return DecodedCloud(points, finite, intensity, height, width, ring)


def packed_layout(columns: Mapping[str, np.ndarray]) -> tuple[tuple[CloudField, ...], int, np.dtype]:
    """Fields, point_step and little-endian record dtype for the named columns, in the given order.

    Each field is aligned to its own size and point_step to the largest one, so every value is
    naturally aligned for readers that cast the buffer (PCL, RViz).
    """
    fields, formats, offsets = [], [], []
    offset = alignment = 0
    for name, column in columns.items():
        dtype = np.dtype(column.dtype)
        datatype = _KIND_SIZE_TO_DATATYPE.get((dtype.kind, dtype.itemsize))
        if datatype is None:
            raise ValueError(f"column {name!r} has dtype {dtype}, which no sensor_msgs/PointField datatype holds")
        size = dtype.itemsize
        offset = -(-offset // size) * size
        fields.append(CloudField(name, offset, datatype))
        formats.append(dtype.newbyteorder("<"))
        offsets.append(offset)
        offset += size
        alignment = max(alignment, size)
    if not fields:
        raise ValueError("a cloud needs at least one column")
    point_step = -(-offset // alignment) * alignment
    record = np.dtype({"names": list(columns), "formats": formats, "offsets": offsets, "itemsize": point_step})
    return tuple(fields), point_step, record


def pack_cloud(columns: Mapping[str, np.ndarray]) -> PackedCloud:
    """Pack equally long 1-D columns (e.g. ``{"x": ..., "label": ...}``) into PointCloud2 records."""
    fields, point_step, record = packed_layout(columns)
    data = np.zeros(_num_points(columns) * point_step, dtype=np.uint8)
    _fill(data, record, columns)
    return PackedCloud(fields, point_step, data)


def make_cloud(
    msg_type: type,
    field_type: type,
    header: Any,
    columns: Mapping[str, np.ndarray],
    *,
    height: int = 1,
    is_dense: bool | None = None,
) -> Any:
    """Build a PointCloud2 of ``msg_type`` (rclpy or rosbags class) from named columns.

    ``field_type`` is the matching PointField class. ``height > 1`` makes an organised cloud of
    ``height`` rows (columns are in flat row-major order). ``is_dense`` defaults to "every float
    value is finite".
    """
    fields, point_step, record = packed_layout(columns)
    num_points = _num_points(columns)
    if height < 1 or num_points % height:
        raise ValueError(f"{num_points} points do not split into {height} rows")
    width = num_points // height
    # rosbags messages are dataclasses wanting a numpy uint8 array; rclpy wants an array.array,
    # which its data setter stores as is (any other type is checked element by element: very slow).
    is_rosbags = dataclasses.is_dataclass(msg_type)
    nbytes = num_points * point_step
    data = np.zeros(nbytes, dtype=np.uint8) if is_rosbags else array.array("B", bytes(nbytes))
    _fill(data, record, columns)
    if is_dense is None:
        is_dense = all(np.isfinite(c).all() for c in columns.values() if c.dtype.kind == "f")
    point_fields = [field_type(name=f.name, offset=f.offset, datatype=f.datatype, count=f.count) for f in fields]
    values = dict(
        header=header,
        height=height,
        width=width,
        fields=point_fields,
        is_bigendian=False,
        point_step=point_step,
        row_step=point_step * width,
        data=data,
        is_dense=bool(is_dense),
    )
    if is_rosbags:
        return msg_type(**values)
    msg = msg_type()  # the rclpy constructor would copy data; the setter keeps our array.array
    for name, value in values.items():
        setattr(msg, name, value)
    return msg


def _num_points(columns: Mapping[str, np.ndarray]) -> int:
    lengths = {name: np.shape(column) for name, column in columns.items()}
    shapes = set(lengths.values())
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise ValueError(f"columns must be 1-D and equally long, got shapes {lengths}")
    return next(iter(shapes))[0]


def _fill(buffer: Any, record: np.dtype, columns: Mapping[str, np.ndarray]) -> None:
    records = np.frombuffer(buffer, dtype=record)
    for name, column in columns.items():
        records[name] = column


def _byte_buffer(data: Any) -> np.ndarray:
    """The message's data as a flat uint8 array, without copying when it supports the buffer protocol."""
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).view(np.uint8).reshape(-1)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:  # a plain list of ints, e.g. a hand-made message
        return np.asarray(data, dtype=np.uint8)
