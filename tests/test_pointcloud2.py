"""PointCloud2 codec: hand-built buffers with hand-computed values, round trips through rclpy and rosbags."""

from __future__ import annotations

import array
import struct

import numpy as np
import pytest

from m2s_perception.pointcloud2 import (
    FLOAT32,
    FLOAT64,
    INT8,
    INT16,
    INT32,
    UINT8,
    UINT16,
    UINT32,
    CloudField,
    CloudFormatError,
    decode_cloud,
    make_cloud,
    pack_cloud,
    packed_layout,
    read_fields,
)
from tests.clouds import FieldSpec, duck_cloud, field_msg, layout_bytes

XYZI_F32 = [field_msg("x", 0, FLOAT32), field_msg("y", 4, FLOAT32), field_msg("z", 8, FLOAT32)]


def kitti_cloud(points: list[tuple[float, float, float, float]], intensity_name: str = "intensity"):
    data = b"".join(struct.pack("<4f", *p) for p in points)
    fields = [*XYZI_F32, field_msg(intensity_name, 12, FLOAT32)]
    return duck_cloud(fields, data, width=len(points), point_step=16)


def test_kitti_float32_xyzi():
    msg = kitti_cloud([(1.0, 2.0, 3.0, 0.25), (-4.5, 0.5, -1.0, 1.0)])
    cloud = decode_cloud(msg)
    assert cloud.points.dtype == np.float32
    np.testing.assert_array_equal(cloud.points, [[1.0, 2.0, 3.0, 0.25], [-4.5, 0.5, -1.0, 1.0]])
    assert cloud.finite.tolist() == [True, True]
    assert (cloud.intensity_field, cloud.height, cloud.width, cloud.num_points) == ("intensity", 1, 2, 2)


def test_float64_with_padding_and_intensity_scale():
    # point_step 48: x, y, z float64 at 0/8/16, 8 garbage bytes, intensity float64 at 32, 8 more garbage bytes.
    def point(x, y, z, i):
        return struct.pack("<3d", x, y, z) + b"\xff" * 8 + struct.pack("<d", i) + b"\xee" * 8

    fields = [field_msg("x", 0, FLOAT64), field_msg("y", 8, FLOAT64), field_msg("z", 16, FLOAT64)]
    fields.append(field_msg("intensity", 32, FLOAT64))
    msg = duck_cloud(fields, point(1.5, -2.0, 0.125, 51.0) + point(10.0, 20.0, 30.0, 255.0), width=2, point_step=48)
    cloud = decode_cloud(msg, intensity_scale=255.0)
    np.testing.assert_allclose(cloud.points, [[1.5, -2.0, 0.125, 0.2], [10.0, 20.0, 30.0, 1.0]], rtol=1e-7)


def test_big_endian_uint16_intensity():
    data = struct.pack(">3fH2x", 1.0, 2.0, 3.0, 1000) + struct.pack(">3fH2x", -1.0, 0.0, 7.0, 65535)
    fields = [*XYZI_F32, field_msg("intensity", 12, UINT16)]
    cloud = decode_cloud(duck_cloud(fields, data, width=2, point_step=16, big_endian=True), intensity_scale=1000.0)
    np.testing.assert_allclose(cloud.points, [[1.0, 2.0, 3.0, 1.0], [-1.0, 0.0, 7.0, 65.535]], rtol=1e-6)


def test_organised_cloud_keeps_row_major_order_and_skips_row_padding():
    # 2 rows x 3 columns, row_step = 3 * 12 + 4 padding bytes; x = 10 * row + column.
    rows = []
    for r in range(2):
        row = b"".join(
            struct.pack("<3f", 10.0 * r + c, 0.0, float("nan") if (r, c) == (1, 1) else 1.0) for c in range(3)
        )
        rows.append(row + b"\xab" * 4)
    msg = duck_cloud(XYZI_F32, b"".join(rows), width=3, height=2, point_step=12, row_step=40)
    cloud = decode_cloud(msg)
    assert cloud.points[:, 0].tolist() == [0.0, 1.0, 2.0, 10.0, 11.0, 12.0]
    assert cloud.finite.tolist() == [True, True, True, True, False, True]
    assert cloud.intensity_field is None
    assert (cloud.points[:, 3] == 0).all()


@pytest.mark.parametrize(
    ("datatype", "code", "value"),
    [
        (INT8, "b", -3),
        (UINT8, "B", 200),
        (INT16, "h", -300),
        (UINT16, "H", 60000),
        (INT32, "i", -70000),
        (UINT32, "I", 4_000_000),
        (FLOAT32, "f", 0.5),
        (FLOAT64, "d", -0.25),
    ],
)
def test_every_datatype_converts_to_float32(datatype, code, value):
    size = struct.calcsize("<" + code)
    fields = [field_msg(name, k * size, datatype) for k, name in enumerate(("x", "y", "z", "reflectivity"))]
    msg = duck_cloud(fields, struct.pack("<4" + code, value, value, value, value), width=1, point_step=4 * size)
    cloud = decode_cloud(msg)
    assert cloud.points.tolist() == [[value] * 4]
    assert cloud.intensity_field == "reflectivity"


@pytest.mark.parametrize("name", ["intensity", "remission", "reflectivity", "i"])
def test_intensity_names(name):
    assert decode_cloud(kitti_cloud([(0, 0, 0, 0.75)], name)).points[0, 3] == 0.75


def test_intensity_is_preferred_over_other_names():
    fields = [*XYZI_F32, field_msg("i", 12, FLOAT32), field_msg("intensity", 16, FLOAT32)]
    msg = duck_cloud(fields, struct.pack("<5f", 0, 0, 0, 9.0, 0.5), width=1, point_step=20)
    cloud = decode_cloud(msg)
    assert (cloud.intensity_field, cloud.points[0, 3]) == ("intensity", 0.5)


def test_non_finite_points_are_kept_and_flagged():
    inf, nan = float("inf"), float("nan")
    cloud = decode_cloud(kitti_cloud([(1, 1, 1, 0), (inf, 0, 0, 0), (0, 0, 0, nan), (2, 2, 2, 1)]))
    assert cloud.num_points == 4
    assert cloud.finite.tolist() == [True, False, False, True]
    # A float64 value beyond float32's range cannot be fed to the model either.
    fields = [field_msg("x", 0, FLOAT64), field_msg("y", 8, FLOAT64), field_msg("z", 16, FLOAT64)]
    huge = duck_cloud(fields, struct.pack("<3d", 1e300, 0, 0), width=1, point_step=24)
    assert decode_cloud(huge).finite.tolist() == [False]


def test_zero_points_decode_to_empty_arrays():
    cloud = decode_cloud(duck_cloud(XYZI_F32, b"", width=0, point_step=12))
    assert cloud.points.shape == (0, 4)
    assert cloud.finite.shape == (0,)


@pytest.mark.parametrize("data", [bytes(struct.pack("<3f", 1, 2, 3)), array.array("B", struct.pack("<3f", 1, 2, 3))])
def test_buffers_of_any_kind(data):
    assert decode_cloud(duck_cloud(XYZI_F32, data, width=1, point_step=12)).points.tolist() == [[1, 2, 3, 0]]


def test_plain_list_data():
    data = list(struct.pack("<3f", 1, 2, 3))
    assert decode_cloud(duck_cloud(XYZI_F32, data, width=1, point_step=12)).points.tolist() == [[1, 2, 3, 0]]


def test_read_fields_is_zero_copy():
    data = array.array("B", struct.pack("<4f", 1, 2, 3, 4) * 3)
    msg = kitti_cloud([(0, 0, 0, 0)] * 3)
    msg.data = data
    view = read_fields(msg, ("x", "intensity"))
    data[0:4] = array.array("B", struct.pack("<f", 42.0))  # write through the message's buffer
    assert view["x"][0, 0] == 42.0
    assert view.shape == (1, 3)


@pytest.mark.parametrize(
    ("fields", "data", "kwargs", "problem"),
    [
        (XYZI_F32[:2], bytes(12), {}, "missing field(s) 'z'; the cloud has fields: x, y"),
        ([*XYZI_F32[:2], field_msg("z", 8, 9)], bytes(12), {}, "field 'z' has unknown datatype 9"),
        (XYZI_F32, bytes(23), {"width": 2}, "data holds 23 bytes, fewer than row_step * height = 24 * 1 = 24"),
        ([*XYZI_F32[:2], field_msg("z", 10, FLOAT32)], bytes(12), {}, "field 'z' (offset 10, 4 bytes) does not fit"),
        ([*XYZI_F32[:2], field_msg("z", 8, FLOAT32, 3)], bytes(12), {}, "field 'z' has count 3"),
        (XYZI_F32, bytes(24), {"width": 2, "row_step": 20}, "row_step 20 is smaller than width * point_step"),
        ([*XYZI_F32, field_msg("x", 0, FLOAT32)], bytes(12), {}, "field 'x' appears twice"),
    ],
)
def test_malformed_clouds_raise_precise_errors(fields, data, kwargs, problem):
    msg = duck_cloud(fields, data, point_step=12, **{"width": 1, **kwargs})
    with pytest.raises(CloudFormatError) as error:
        decode_cloud(msg)
    assert problem in str(error.value)


def test_a_point_step_near_2_to_the_32_is_bad_input_not_a_crash():
    """Found by the fuzz: numpy's record size is a C int; 2^32 - 1 raised ValueError, an internal error."""
    msg = duck_cloud(XYZI_F32, bytes(48), width=2, point_step=2**32 - 1, row_step=48)
    with pytest.raises(CloudFormatError, match="point_step 4294967295 is larger than any point record"):
        decode_cloud(msg)


def test_short_organised_buffer_is_rejected():
    msg = duck_cloud(XYZI_F32, bytes(2 * 40 - 4), width=3, height=2, point_step=12, row_step=40)
    with pytest.raises(CloudFormatError, match=r"fewer than row_step \* height = 40 \* 2 = 80"):
        decode_cloud(msg)


def test_bad_intensity_scale():
    with pytest.raises(ValueError, match="intensity_scale must be > 0"):
        decode_cloud(kitti_cloud([(0, 0, 0, 0)]), intensity_scale=0.0)


def output_columns(n: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(n, 3)).astype(np.float32)
    xyz[1] = np.nan
    return {
        "x": xyz[:, 0],
        "y": xyz[:, 1],
        "z": xyz[:, 2],
        "intensity": rng.random(n, dtype=np.float32),
        "rgb": np.arange(n, dtype=np.uint32).view(np.float32),
        "confidence": rng.random(n, dtype=np.float32),
        "label": np.arange(n, dtype=np.uint16) * 50,
    }


def test_packed_layout_aligns_fields():
    fields, point_step, _ = packed_layout(output_columns())
    assert [(f.name, f.offset, f.datatype) for f in fields] == [
        ("x", 0, FLOAT32),
        ("y", 4, FLOAT32),
        ("z", 8, FLOAT32),
        ("intensity", 12, FLOAT32),
        ("rgb", 16, FLOAT32),
        ("confidence", 20, FLOAT32),
        ("label", 24, UINT16),
    ]
    assert point_step == 28
    fields, point_step, _ = packed_layout({"label": np.zeros(1, np.uint16), "x": np.zeros(1, np.float64)})
    assert [f.offset for f in fields] == [0, 8]
    assert point_step == 16


def test_pack_cloud_bytes_are_hand_checkable():
    packed = pack_cloud({"x": np.array([1.0], np.float32), "label": np.array([258], np.uint16)})
    assert packed.fields == (CloudField("x", 0, FLOAT32), CloudField("label", 4, UINT16))
    assert packed.data.tobytes() == struct.pack("<fH2x", 1.0, 258)


def test_pack_rejects_unsupported_dtypes_and_ragged_columns():
    with pytest.raises(ValueError, match="int64"):
        pack_cloud({"x": np.zeros(2, np.int64)})
    with pytest.raises(ValueError, match="equally long"):
        pack_cloud({"x": np.zeros(2, np.float32), "y": np.zeros(3, np.float32)})


def assert_round_trip(msg, columns):
    view = read_fields(msg, tuple(columns))
    for name, column in columns.items():
        np.testing.assert_array_equal(view[name].reshape(-1), column)
    cloud = decode_cloud(msg)
    np.testing.assert_array_equal(cloud.points[:, 0], columns["x"])
    assert cloud.finite.tolist() == [True, False, True, True, True]


def test_round_trip_rclpy():
    from sensor_msgs.msg import PointCloud2, PointField
    from std_msgs.msg import Header

    columns = output_columns()
    header = Header(frame_id="velodyne")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    msg = make_cloud(PointCloud2, PointField, header, columns)
    assert isinstance(msg.data, array.array)
    assert (msg.height, msg.width, msg.point_step, msg.row_step, msg.is_dense) == (1, 5, 28, 140, False)
    assert (msg.header.frame_id, msg.header.stamp.sec, msg.header.stamp.nanosec) == ("velodyne", 12, 345)
    assert_round_trip(msg, columns)
    from rclpy.serialization import deserialize_message, serialize_message

    assert_round_trip(deserialize_message(serialize_message(msg), PointCloud2), columns)


def test_round_trip_rosbags():
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    types = store.types
    header = types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=3, nanosec=4), frame_id="os")
    columns = output_columns()
    msg = make_cloud(types["sensor_msgs/msg/PointCloud2"], types["sensor_msgs/msg/PointField"], header, columns)
    assert msg.data.dtype == np.uint8
    assert_round_trip(msg, columns)
    raw = store.serialize_cdr(msg, "sensor_msgs/msg/PointCloud2")
    assert_round_trip(store.deserialize_cdr(raw, "sensor_msgs/msg/PointCloud2"), columns)


def test_organised_output_cloud():
    from sensor_msgs.msg import PointCloud2, PointField
    from std_msgs.msg import Header

    columns = {"x": np.arange(6, dtype=np.float32), "y": np.zeros(6, np.float32), "z": np.ones(6, np.float32)}
    msg = make_cloud(PointCloud2, PointField, Header(), columns, height=2)
    assert (msg.height, msg.width, msg.row_step, msg.is_dense) == (2, 3, 36, True)
    assert decode_cloud(msg).points[:, 0].tolist() == [0, 1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="do not split into 4 rows"):
        make_cloud(PointCloud2, PointField, Header(), columns, height=4)


def test_ouster_like_layout_from_test_builder():
    # Cross-check the test builder used by the DDS tests against the decoder on hand-picked values.
    specs = [FieldSpec("x", 0, FLOAT32), FieldSpec("y", 4, FLOAT32), FieldSpec("z", 8, FLOAT32)]
    specs += [FieldSpec("reflectivity", 20, UINT16), FieldSpec("ring", 22, UINT16)]
    values = {
        "x": np.array([1, 2, 3, 4], np.float32),
        "y": np.array([0, 0, np.nan, 0], np.float32),
        "z": np.array([5, 6, 7, 8], np.float32),
        "reflectivity": np.array([0, 100, 200, 3300], np.uint16),
        "ring": np.array([0, 0, 1, 1], np.uint16),
    }
    data, row_step = layout_bytes(specs, values, point_step=32, height=2, row_padding=16)
    fields = [field_msg(s.name, s.offset, s.datatype) for s in specs]
    msg = duck_cloud(fields, data, width=2, height=2, point_step=32, row_step=row_step)
    cloud = decode_cloud(msg, intensity_scale=100.0)
    np.testing.assert_array_equal(cloud.points[:, [0, 2, 3]], [[1, 5, 0], [2, 6, 1], [3, 7, 2], [4, 8, 33]])
    assert cloud.finite.tolist() == [True, True, False, True]
