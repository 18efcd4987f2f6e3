"""``python -m m2s_training.demo`` (what ``make demo`` runs): the whole ROS path on a CPU in about a minute.

1. generate a small synthetic sequence 08 in SemanticKITTI layout (``m2s-synth --preset kitti``);
2. convert it to a rosbag2 bag (``m2s-bag kitti2bag``);
3. replay the bag through the real ``m2s-segment`` node, over DDS on loopback, with the shipped
   demo weights, and score the labelled clouds it publishes (``m2s-bag evaluate --lockstep``);
4. render ground truth next to the node's labels for one scan, seen from above (``m2s-render``);
5. print mIoU, IoU per class, latency and where the bag, output bag and PNGs are;
6. with ``--real DIR`` (``make demo`` passes ``../shared/real/semantickitti`` when it exists): label
   those real scans with the same weights (``m2s-eval --split all``) and print their scores.

No GPU and no ROS install needed: rclpy and the messages come from PyPI wheels.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from m2s_perception.resources import DEMO_CHECKPOINT as DEMO_WEIGHTS
from m2s_training.bag import use_loopback_dds


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m m2s_training.demo", description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="folder for data, bags, PNGs, metrics")
    parser.add_argument("--checkpoint", type=Path, default=DEMO_WEIGHTS, help="model to run (default: demo weights)")
    parser.add_argument("--scans", type=int, default=10, help="scans in the synthetic sequence")
    parser.add_argument("--preset", default="kitti", help="m2s-synth preset; the demo weights were trained on kitti")
    parser.add_argument("--seed", type=int, default=1, help="scene seed (the demo weights never saw seed 1)")
    parser.add_argument("--device", default="cpu", help="the node's device: cpu, auto, cuda")
    parser.add_argument("--real", type=Path, help="also label these real scans (SemanticKITTI layout, with labels)")
    return parser


def render_scan(bag: Path, output_bag: Path, labels_topic: str, output_topic: str, index: int, path: Path) -> Path:
    """BEV PNG of scan ``index``: the bag's ground truth beside the labels the node published for it."""
    from m2s_perception.labels import load_label_map
    from m2s_perception.pointcloud2 import decode_cloud, read_fields
    from m2s_training.bag import open_bag
    from m2s_training.bag.evaluate import stamp_ns
    from m2s_training.render import render_bev

    def nth_message(bag_path: Path, topic: str, n: int | None = None, stamp: int | None = None) -> object:
        reader = open_bag(bag_path)
        try:
            connections = [c for c in reader.connections if c.topic == topic]
            for k, (connection, _, raw) in enumerate(reader.messages(connections=connections)):
                msg = reader.deserialize(raw, connection.msgtype)
                if k == n or (stamp is not None and stamp_ns(msg.header) == stamp):
                    return msg
        finally:
            reader.close()
        raise LookupError(f"{bag_path}: no message {n if stamp is None else stamp} on {topic}")

    label_map = load_label_map()
    truth = nth_message(bag, labels_topic, n=index)
    predicted = nth_message(output_bag, output_topic, stamp=stamp_ns(truth.header))
    truth_ids = label_map.to_train(read_fields(truth, ["label"]).reshape(-1)["label"])
    predicted_ids = read_fields(predicted, ["label"]).reshape(-1)["label"].astype("uint8")
    points = decode_cloud(predicted).points
    return render_bev(points, [truth_ids, predicted_ids], label_map, path, titles=["ground truth", "m2s-segment"])


def main(argv: list[str] | None = None) -> int:
    use_loopback_dds()  # before anything imports rclpy: the node and the evaluator talk over loopback only
    from m2s_training.bag import BagError
    from m2s_training.bag.evaluate import EvaluationOptions, evaluate_bag, print_summary
    from m2s_training.bag.kitti2bag import convert_sequence
    from m2s_training.synth import generate

    args = _parser().parse_args(argv)
    if not args.checkpoint.is_file():
        print(f"demo: checkpoint not found: {args.checkpoint}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    data, bag, evaluation = args.out / "data", args.out / "bag", args.out / "bag_eval"

    print(f"[1/4] synthetic sequence 08: {args.scans} scans, preset {args.preset} → {data}")
    generate(data, ["08"], preset=args.preset, scans=args.scans, seed=args.seed)
    print(f"[2/4] rosbag2 (mcap) → {bag}")
    convert_sequence(data, "08", bag, overwrite=True)
    print(f"[3/4] replaying through m2s-segment ({args.checkpoint.name}, {args.device}, lock-step)")
    options = EvaluationOptions(lockstep=True, device=args.device)
    try:
        result = evaluate_bag(bag, args.checkpoint, evaluation, options)
    except BagError as error:
        print(f"demo: {error}", file=sys.stderr)
        return 1
    print("[4/4] bird's-eye view of one scan")
    png = render_scan(bag, evaluation / "output_bag", options.labels_topic, options.output_topic,
                      args.scans // 2, args.out / "bev.png")  # fmt: skip

    print()
    print_summary(result)
    print(f"input bag: {bag}")
    print(f"BEV (ground truth | node output): {png}")
    print(f"node log: {result['node_log']}")
    if args.real is not None:
        from m2s_training.evaluate import evaluate

        real = evaluate(args.checkpoint, args.real, "all", args.out / "real_eval", args.device, bev=1)
        print(f"real scans {args.real} ({real['scans']} scans): present-class mIoU {real['present_miou']:.4f}, "
              f"accuracy {real['accuracy']:.4f}; BEV and metrics in {args.out / 'real_eval'}")  # fmt: skip
    print(f"demo took {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
