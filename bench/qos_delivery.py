"""How many best-effort HDL-64-sized clouds arrive, with and without ``config/fastdds.xml``.

    PYTHONPATH=. .venv/bin/python bench/qos_delivery.py [--count 50] [--rate 10] [--points 120000]

For each condition a publisher and a subscriber run as two separate processes (as a LiDAR driver
and the node do; inside one process Fast DDS would shortcut the transport), both with sensor-data
QoS (best effort, keep last 5, volatile), DDS on loopback. The publisher waits until it sees the
subscriber, then sends ``--count`` clouds of ``--points`` points (x, y, z, intensity float32: 16 bytes
each, 1.9 MB for 120k points) at ``--rate`` Hz, each with its index in the stamp. The subscriber
counts the distinct clouds it received. Printed: received of sent per condition, in one run.

Conditions: ``builtin`` (no profile: Fast DDS's built-in UDP + SHM transports, as a driver started
without the profile gets) and ``profile`` (``FASTDDS_DEFAULT_PROFILES_FILE=config/fastdds.xml`` in
both processes).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

PROFILE = Path(__file__).resolve().parents[1] / "config" / "fastdds.xml"
TOPIC = "/m2s_qos_bench/points"


def make_cloud(points: int):
    import array

    import numpy as np
    from sensor_msgs.msg import PointCloud2, PointField

    rng = np.random.default_rng(0)
    data = rng.uniform(-50, 50, size=(points, 4)).astype(np.float32)
    msg = PointCloud2()
    msg.header.frame_id = "velodyne"
    msg.height, msg.width = 1, points
    msg.fields = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1) for i, n in enumerate("xyz")]
    msg.fields.append(PointField(name="intensity", offset=12, datatype=PointField.FLOAT32, count=1))
    msg.point_step, msg.row_step = 16, 16 * points
    msg.is_dense = True
    msg.data = array.array("B", data.tobytes())  # the fast path (a bytes object is copied element-wise)
    return msg


def publish(args: argparse.Namespace) -> None:
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import PointCloud2

    rclpy.init()
    node = rclpy.create_node("m2s_qos_bench_pub")
    publisher = node.create_publisher(PointCloud2, TOPIC, qos_profile_sensor_data)
    msg = make_cloud(args.points)
    deadline = time.monotonic() + 30
    while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # let the subscriber match us too: best-effort samples sent before that are lost
    start = time.monotonic()
    for index in range(args.count):
        time.sleep(max(0.0, start + index / args.rate - time.monotonic()))
        msg.header.stamp.sec = index
        publisher.publish(msg)
    time.sleep(2.0)  # the sender's buffers hold samples in flight: do not exit under them
    node.destroy_node()
    rclpy.shutdown()


def subscribe(args: argparse.Namespace) -> None:
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import PointCloud2

    rclpy.init()
    node = rclpy.create_node("m2s_qos_bench_sub")
    received: set[int] = set()
    sizes: set[int] = set()

    def on_cloud(msg: PointCloud2) -> None:
        received.add(msg.header.stamp.sec)
        sizes.add(len(msg.data))

    node.create_subscription(PointCloud2, TOPIC, on_cloud, qos_profile_sensor_data)
    deadline = time.monotonic() + 35 + args.count / args.rate + 5
    while len(received) < args.count and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
        if args.stop_file and Path(args.stop_file).exists():
            break
    print(json.dumps({"received": len(received), "bytes": sorted(sizes)}), flush=True)
    node.destroy_node()
    rclpy.shutdown()


def tx_packets_off_loopback() -> int:
    """Packets sent on every interface but ``lo`` so far (machine-wide: other jobs count too)."""
    lines = Path("/proc/net/dev").read_text().splitlines()[2:]
    rows = [line.split(":", 1) for line in lines]
    return sum(int(stats.split()[9]) for name, stats in rows if name.strip() != "lo")


def run_condition(name: str, args: argparse.Namespace, domain: int, tmp: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "FASTDDS_DEFAULT_PROFILES_FILE"}
    env.update(ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_LOCALHOST_ONLY="1", ROS_DOMAIN_ID=str(domain))
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    if name == "profile":
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(PROFILE)
    stop_file = tmp / f"{name}.done"
    common = ["--count", str(args.count), "--rate", str(args.rate), "--points", str(args.points)]
    me = [sys.executable, __file__]
    packets_before = tx_packets_off_loopback()
    subscriber = subprocess.Popen(
        [*me, "--role", "sub", "--stop-file", str(stop_file), *common], env=env, stdout=subprocess.PIPE, text=True
    )
    publisher = subprocess.Popen([*me, "--role", "pub", *common], env=env)
    publisher.wait(timeout=120)
    time.sleep(1.0)
    stop_file.touch()  # the subscriber stops once the publisher is done: whatever arrived has arrived
    out, _ = subscriber.communicate(timeout=60)
    result = json.loads(out.strip().splitlines()[-1])
    off_loopback = tx_packets_off_loopback() - packets_before
    return {"condition": name, "sent": args.count, **result, "tx_packets_off_loopback": off_loopback}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--count", type=int, default=50, help="clouds per condition")
    parser.add_argument("--rate", type=float, default=10.0, help="Hz")
    parser.add_argument("--points", type=int, default=120_000, help="points per cloud (16 bytes each)")
    parser.add_argument("--conditions", nargs="+", default=["builtin", "profile"], choices=["builtin", "profile"])
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--role", choices=["pub", "sub"], help=argparse.SUPPRESS)
    parser.add_argument("--stop-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "pub":
        return publish(args)
    if args.role == "sub":
        return subscribe(args)

    import tempfile

    base = int(os.environ.get("ROS_DOMAIN_ID", random.randint(150, 200)))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, name in enumerate(args.conditions):
            results.append(run_condition(name, args, domain=(base + 1 + k) % 230, tmp=Path(tmp)))
    mb = args.points * 16 / 1e6
    print(f"best-effort PointCloud2, {args.points} points ({mb:.2f} MB), {args.rate:g} Hz, 2 processes, loopback")
    for r in results:
        print(
            f"  {r['condition']:<8} received {r['received']:>4} of {r['sent']}"
            f"   (packets sent on non-loopback interfaces meanwhile, machine-wide: {r['tx_packets_off_loopback']})"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
