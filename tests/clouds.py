"""Build PointCloud2 messages of arbitrary layouts for tests, independently of the codec's encoder."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

# sensor_msgs/PointField datatype → numpy type code (written out again on purpose: tests do not trust the codec).
DTYPE_CODES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}


@dataclass(frozen=True)
class FieldSpec:
    name: str
    offset: int
    datatype: int


def field_msg(name: str, offset: int, datatype: int, count: int = 1) -> SimpleNamespace:
    return SimpleNamespace(name=name, offset=offset, datatype=datatype, count=count)


def duck_cloud(fields, data, *, width, height=1, point_step, row_step=None, big_endian=False) -> SimpleNamespace:
    """A duck-typed PointCloud2: what the codec must accept besides rclpy and rosbags messages."""
    return SimpleNamespace(
        header=None,
        height=height,
        width=width,
        fields=list(fields),
        is_bigendian=big_endian,
        point_step=point_step,
        row_step=width * point_step if row_step is None else row_step,
        data=data,
        is_dense=False,
    )


def layout_bytes(
    specs: list[FieldSpec],
    values: dict[str, np.ndarray],
    *,
    point_step: int,
    height: int = 1,
    row_padding: int = 0,
    big_endian: bool = False,
) -> tuple[bytes, int]:
    """Pack flat row-major ``values`` into (data, row_step) with the given offsets and padding bytes 0xAB."""
    order = ">" if big_endian else "<"
    record = np.dtype(
        {
            "names": [s.name for s in specs],
            "formats": [order + DTYPE_CODES[s.datatype] for s in specs],
            "offsets": [s.offset for s in specs],
            "itemsize": point_step,
        }
    )
    num_points = len(next(iter(values.values())))
    width = num_points // height
    row_step = width * point_step + row_padding
    rows = np.full((height, row_step), 0xAB, dtype=np.uint8)  # recognisable garbage in padding
    for r in range(height):
        records = np.zeros(width, dtype=record)
        for s in specs:
            records[s.name] = values[s.name][r * width : (r + 1) * width]
        packed = records.view(np.uint8).reshape(width, point_step)
        # Keep padding inside each point as garbage too, so a decoder reading the wrong bytes is caught.
        written = np.zeros(point_step, dtype=bool)
        for s in specs:
            written[s.offset : s.offset + np.dtype(DTYPE_CODES[s.datatype]).itemsize] = True
        row = rows[r, : width * point_step].reshape(width, point_step)
        row[:, written] = packed[:, written]
    return rows.tobytes(), row_step


def ros_cloud(msg_type, field_type, header, specs, values, *, point_step, height=1, row_padding=0, big_endian=False):
    """An rclpy/rosbags-free-form PointCloud2 of the given layout (rclpy classes: data set as array.array)."""
    import array

    data, row_step = layout_bytes(
        specs, values, point_step=point_step, height=height, row_padding=row_padding, big_endian=big_endian
    )
    num_points = len(next(iter(values.values())))
    msg = msg_type()
    msg.header = header
    msg.height = height
    msg.width = num_points // height
    msg.fields = [field_type(name=s.name, offset=s.offset, datatype=s.datatype, count=1) for s in specs]
    msg.is_bigendian = big_endian
    msg.point_step = point_step
    msg.row_step = row_step
    msg.data = array.array("B", data)
    msg.is_dense = bool(all(np.isfinite(v).all() for v in values.values()))
    return msg
