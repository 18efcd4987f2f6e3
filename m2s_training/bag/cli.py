"""``m2s-bag``: kitti2bag | bag2kitti | replay | evaluate.

    m2s-bag kitti2bag --data DIR --sequence 08 --out BAG [--format mcap|sqlite3] [--version 8|9]
    m2s-bag bag2kitti BAG --out DIR --sequence 30 [--cloud-topic T] [--labels-topic T] [--intensity-scale S]
    m2s-bag replay BAG [--rate R] [--loop [N]] [--clock] [--topics T ...]
    m2s-bag evaluate BAG --checkpoint CKPT [--out OUT] [--rate R | --lockstep] [--device cpu]

DDS stays on loopback unless you set them yourself: ROS_AUTOMATIC_DISCOVERY_RANGE defaults to
LOCALHOST, ROS_LOCALHOST_ONLY to 1 and ROS_DOMAIN_ID to a random 1..100 (the node that
``evaluate`` starts inherits them).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from m2s_perception.checkpoint import CheckpointError
from m2s_training.bag import CLOUD_TOPIC, GROUND_TRUTH_TOPIC, BagError, use_loopback_dds
from m2s_training.data.semantic_kitti import KittiFormatError


def _add_kitti2bag(commands: argparse._SubParsersAction) -> None:
    from m2s_training.bag.kitti2bag import DEFAULT_START_TIME_NS, STORAGE_PLUGINS, BagLayout

    p = commands.add_parser("kitti2bag", help="SemanticKITTI-layout sequence → rosbag2")
    p.add_argument("--data", required=True, type=Path, help="data root holding sequences/XX/")
    p.add_argument("--sequence", required=True, help="sequence number, e.g. 08")
    p.add_argument("--out", required=True, type=Path, help="bag folder to write")
    p.add_argument("--format", choices=sorted(STORAGE_PLUGINS), default="mcap", help="storage (Humble: sqlite3)")
    p.add_argument("--version", type=int, choices=(8, 9), default=9, help="rosbag2 metadata version")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bag at --out")
    p.add_argument("--start-time", type=float, default=DEFAULT_START_TIME_NS / 1e9, help="stamp of t=0 (s)")
    defaults = BagLayout()
    p.add_argument("--cloud-topic", default=defaults.cloud_topic)
    p.add_argument("--labels-topic", default=defaults.labels_topic)
    p.add_argument("--lidar-frame", default=defaults.lidar_frame)
    p.add_argument("--world-frame", default=defaults.world_frame)
    p.add_argument("--camera-frame", default=defaults.camera_frame)
    p.set_defaults(run=_run_kitti2bag)


def _run_kitti2bag(args: argparse.Namespace) -> None:
    from m2s_training.bag.kitti2bag import BagLayout, convert_sequence

    layout = BagLayout(
        cloud_topic=args.cloud_topic,
        labels_topic=args.labels_topic,
        lidar_frame=args.lidar_frame,
        world_frame=args.world_frame,
        camera_frame=args.camera_frame,
        start_time_ns=round(args.start_time * 1e9),
    )
    out = convert_sequence(
        args.data, args.sequence, args.out, layout=layout, storage=args.format, version=args.version,
        overwrite=args.overwrite,
    )  # fmt: skip
    print(f"wrote {out}")


def _add_bag2kitti(commands: argparse._SubParsersAction) -> None:
    from m2s_training.bag.bag2kitti import ExportOptions

    defaults = ExportOptions()
    p = commands.add_parser("bag2kitti", help="a bag's PointCloud2 topic → SemanticKITTI layout (your own LiDAR)")
    p.add_argument("bag", type=Path)
    p.add_argument("--out", required=True, type=Path, help="data root: writes OUT/sequences/XX/")
    p.add_argument("--sequence", required=True, help="sequence number to write, e.g. 30 (must not exist yet)")
    p.add_argument("--cloud-topic", default=defaults.cloud_topic, help="the scans")
    p.add_argument("--labels-topic", help="PointCloud2 with a 'label' field and the same stamps (ground truth, "
                   "or the node's output as pseudo-labels); without it no labels/ are written")  # fmt: skip
    p.add_argument("--label-format", choices=("raw", "train"), default=defaults.label_format,
                   help="ids in that field: raw SemanticKITTI ids, or training ids (the node's default)")  # fmt: skip
    p.add_argument("--intensity-scale", type=float, default=defaults.intensity_scale,
                   help="the sensor's full-scale intensity (KITTI 1, most drivers 255)")  # fmt: skip
    p.add_argument("--fixed-frame", default=defaults.fixed_frame, help="parent frame of the /tf poses")
    p.set_defaults(run=_run_bag2kitti)


def _run_bag2kitti(args: argparse.Namespace) -> None:
    from m2s_training.bag.bag2kitti import ExportOptions, export_sequence

    options = ExportOptions(
        cloud_topic=args.cloud_topic, labels_topic=args.labels_topic, label_format=args.label_format,
        intensity_scale=args.intensity_scale, fixed_frame=args.fixed_frame,
    )  # fmt: skip
    report = export_sequence(args.bag, args.out, args.sequence, options)
    print(f"wrote {report.scans} scans ({report.points} points) to {report.path}")
    if report.non_finite_points:
        print(f"left out {report.non_finite_points} non-finite points")
    if args.labels_topic:
        print(f"left out {report.unlabelled_scans} scans without a labelled cloud on {args.labels_topic}")
    print(f"poses: {report.poses}")
    if report.intensity_warning:
        print(f"warning: {report.intensity_warning}")


def _add_replay(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("replay", help="publish a bag through rclpy with its timing")
    p.add_argument("bag", type=Path)
    p.add_argument("--rate", type=float, default=1.0, help="playback speed factor")
    p.add_argument("--loop", type=int, nargs="?", const=0, default=1, metavar="N",
                   help="play N times; without N: until Ctrl-C")  # fmt: skip
    p.add_argument("--clock", action="store_true", help="publish /clock with the bag time")
    p.add_argument("--topics", nargs="+", default=(), help="only these topics")
    p.add_argument("--wait-for-subscriber", type=float, default=0.0, metavar="S",
                   help="wait up to S seconds for a subscriber on the cloud topics before playing")  # fmt: skip
    p.add_argument("--reliable", action="store_true",
                   help="publish clouds RELIABLE (RViz's default) instead of sensor-data best effort")  # fmt: skip
    p.set_defaults(run=_run_replay)


def _run_replay(args: argparse.Namespace) -> None:
    from m2s_training.bag.replay import ReplayOptions, replay

    options = ReplayOptions(
        rate=args.rate, loops=args.loop, clock=args.clock, topics=tuple(args.topics),
        wait_for_subscriber=args.wait_for_subscriber, reliable_clouds=args.reliable,
    )  # fmt: skip
    published = replay(args.bag, options)
    print(f"published {published} messages from {args.bag}")


def _add_evaluate(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("evaluate", help="replay a bag through the m2s-segment node and score its output")
    p.add_argument("bag", type=Path)
    p.add_argument("--checkpoint", required=True, type=Path)
    p.add_argument("--out", type=Path, default=Path("runs/bag_eval"), help="folder for metrics.json, PNG, bag")
    timing = p.add_mutually_exclusive_group()
    timing.add_argument("--rate", type=float, default=1.0, help="replay speed; a slow node drops scans")
    timing.add_argument("--lockstep", action="store_true",
                        help="publish each scan only after the node answered the previous one (no drops)")  # fmt: skip
    p.add_argument("--device", default="auto", help="the node's device: auto, cpu, cuda, cuda:1")
    p.add_argument("--backend", default="torch", choices=("torch", "onnxruntime", "openvino"),
                   help="the node's inference engine (onnxruntime/openvino: polar models)")  # fmt: skip
    p.add_argument("--cloud-topic", default=CLOUD_TOPIC)
    p.add_argument("--labels-topic", default=GROUND_TRUTH_TOPIC)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the node (start, each scan)")
    p.set_defaults(run=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> None:
    from m2s_training.bag.evaluate import EvaluationOptions, evaluate_bag, print_summary

    options = EvaluationOptions(
        rate=args.rate, lockstep=args.lockstep, device=args.device, backend=args.backend, cloud_topic=args.cloud_topic,
        labels_topic=args.labels_topic, timeout=args.timeout,
    )  # fmt: skip
    report = evaluate_bag(args.bag, args.checkpoint, args.out, options)
    print_summary(report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="m2s-bag", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    _add_kitti2bag(commands)
    _add_bag2kitti(commands)
    _add_replay(commands)
    _add_evaluate(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    use_loopback_dds()
    # SIGTERM (kill, systemd, CI timeouts) unwinds like Ctrl-C: temporaries removed, the node stopped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        args.run(args)
    except (BagError, KittiFormatError, CheckpointError, FileNotFoundError, ValueError) as error:
        print(f"m2s-bag {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
