"""PointCloud2 codec throughput on a 120k-point scan, against a plain per-point Python loop.

    nice -n 10 .venv/bin/python bench/bench_codec.py [--points 120000] [--repeats 7]

Decode: KITTI-like float32 x, y, z, intensity → (N, 4) float32, and an Ouster-like organised layout
(padded point_step, uint16 reflectivity, row padding). Encode: the node's output cloud (x, y, z,
intensity, rgb, confidence, label) into an rclpy PointCloud2. The loop baselines use
``struct.unpack_from`` / ``struct.pack_into`` per point, as naive nodes do. Also times how the
rclpy ``data`` setter takes bytes vs an ``array.array`` (the slow path is checked per element).
"""

from __future__ import annotations

import argparse
import array
import statistics
import struct
import time
from collections.abc import Callable

import numpy as np
from rclpy.serialization import serialize_message
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from m2s_perception.pointcloud2 import FLOAT32, UINT16, decode_cloud, make_cloud, pack_cloud


def best_ms(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def kitti_message(points: np.ndarray) -> PointCloud2:
    columns = {name: points[:, k].copy() for k, name in enumerate(("x", "y", "z", "intensity"))}
    return make_cloud(PointCloud2, PointField, Header(frame_id="velodyne"), columns)


def ouster_message(points: np.ndarray, rows: int = 128) -> PointCloud2:
    """Organised cloud: point_step 32 (x, y, z at 0/4/8, uint16 reflectivity at 20), 16 bytes row padding."""
    width = len(points) // rows
    names, offsets = ["x", "y", "z", "reflectivity"], [0, 4, 8, 20]
    record = np.dtype({"names": names, "formats": ["<f4"] * 3 + ["<u2"], "offsets": offsets, "itemsize": 32})
    records = np.zeros((rows, width), dtype=record)
    for k, name in enumerate(("x", "y", "z")):
        records[name] = points[: rows * width, k].reshape(rows, width)
    records["reflectivity"] = (points[: rows * width, 3] * 255).reshape(rows, width)
    rows_bytes = np.zeros((rows, width * 32 + 16), dtype=np.uint8)
    rows_bytes[:, : width * 32] = records.view(np.uint8).reshape(rows, width * 32)
    msg = PointCloud2(height=rows, width=width, is_bigendian=False, point_step=32, row_step=width * 32 + 16)
    msg.fields = [PointField(name=n, offset=o, datatype=FLOAT32, count=1) for n, o in (("x", 0), ("y", 4), ("z", 8))]
    msg.fields.append(PointField(name="reflectivity", offset=20, datatype=UINT16, count=1))
    msg.data = array.array("B", rows_bytes.tobytes())
    return msg


def loop_decode(msg: PointCloud2) -> list[tuple[float, float, float, float]]:
    """What a naive node does: one struct.unpack_from per point."""
    data, step, row_step = bytes(msg.data), msg.point_step, msg.row_step
    offsets = {f.name: f.offset for f in msg.fields}
    intensity = next(n for n in ("intensity", "reflectivity") if n in offsets)
    fmt_xyz, fmt_i = "<fff", "<f" if intensity == "intensity" else "<H"
    points = []
    for row in range(msg.height):
        for col in range(msg.width):
            base = row * row_step + col * step
            x, y, z = struct.unpack_from(fmt_xyz, data, base + offsets["x"])
            (i,) = struct.unpack_from(fmt_i, data, base + offsets[intensity])
            points.append((x, y, z, float(i)))
    return points


def loop_encode(points: np.ndarray, labels: np.ndarray, rgb: np.ndarray, confidence: np.ndarray) -> PointCloud2:
    step = 28
    data = bytearray(len(points) * step)
    for k, (x, y, z, i) in enumerate(points.tolist()):
        struct.pack_into("<4fIfH", data, k * step, x, y, z, i, int(rgb[k]), confidence[k], int(labels[k]))
    msg = PointCloud2(height=1, width=len(points), point_step=step, row_step=step * len(points))
    msg.data = array.array("B", data)
    return msg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=120_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n = args.points
    points = np.concatenate([rng.normal(0, 20, (n, 3)), rng.random((n, 1))], axis=1).astype(np.float32)
    labels = rng.integers(1, 20, n).astype(np.uint16)
    rgb_u32 = rng.integers(0, 1 << 24, n).astype(np.uint32)
    confidence = rng.random(n, dtype=np.float32)
    output_columns = {
        "x": points[:, 0],
        "y": points[:, 1],
        "z": points[:, 2],
        "intensity": points[:, 3],
        "rgb": rgb_u32.view(np.float32),
        "confidence": confidence,
        "label": labels,
    }
    kitti, ouster = kitti_message(points), ouster_message(points)

    def encode() -> PointCloud2:
        return make_cloud(PointCloud2, PointField, Header(), output_columns)

    # Correctness first: the vectorised and loop paths must agree.
    np.testing.assert_array_equal(decode_cloud(kitti).points, np.asarray(loop_decode(kitti), np.float32))
    looped = np.asarray(loop_decode(ouster), np.float32)
    looped[:, 3] /= 255.0
    np.testing.assert_allclose(decode_cloud(ouster, 255.0).points, looped, rtol=1e-6)
    assert bytes(encode().data) == bytes(loop_encode(points, labels, rgb_u32, confidence).data)

    rows = [
        ("decode KITTI float32 xyzi", lambda: decode_cloud(kitti), lambda: loop_decode(kitti)),
        ("decode Ouster-like organised", lambda: decode_cloud(ouster, 255.0), lambda: loop_decode(ouster)),
        ("encode output cloud (rclpy msg)", encode, lambda: loop_encode(points, labels, rgb_u32, confidence)),
    ]
    print(f"PointCloud2 codec, {n} points, median of {args.repeats} (loop: of 3)")
    print(f"{'operation':34s} {'numpy ms':>9s} {'loop ms':>9s} {'speed-up':>9s}")
    loop_ms: dict[str, float] = {}
    for name, fast, loop in rows:
        fast_ms, loop_ms[name] = best_ms(fast, args.repeats), best_ms(loop, 3)
        print(f"{name:34s} {fast_ms:9.2f} {loop_ms[name]:9.1f} {loop_ms[name] / fast_ms:8.0f}x")
    round_trip = best_ms(lambda: (decode_cloud(kitti), encode()), args.repeats)
    loop_round_trip = loop_ms[rows[0][0]] + loop_ms[rows[2][0]]
    label = "decode KITTI + encode output"
    print(f"{label:34s} {round_trip:9.2f} {loop_round_trip:9.1f} {loop_round_trip / round_trip:8.0f}x")

    packed = pack_cloud(output_columns).data.tobytes()
    # With field checks on (check_fields=True or ROS_PYTHON_CHECK_FIELDS=1) the setter validates
    # anything but an array.array element by element; without them both paths copy once.
    for checked in (False, True):
        fast = best_ms(lambda c=checked: setattr(PointCloud2(check_fields=c), "data", array.array("B", packed)), 3)
        slow = best_ms(lambda c=checked: setattr(PointCloud2(check_fields=c), "data", packed), 1)
        print(f"rclpy check_fields={checked!s:5}: msg.data = array.array: {fast:.2f} ms, = bytes: {slow:.1f} ms")
    serialize_ms = best_ms(lambda: serialize_message(encode()), args.repeats)
    print(f"encode + serialize_message (what publish costs, {len(packed) / 1e6:.1f} MB): {serialize_ms:.2f} ms")


if __name__ == "__main__":
    main()
