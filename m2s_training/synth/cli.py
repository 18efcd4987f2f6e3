"""``m2s-synth``: write synthetic SemanticKITTI sequences, with a progress bar and a summary."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from m2s_perception.labels import load_label_map
from m2s_training.synth.generator import SequenceSummary, sequence_name, street_sizes, write_sequence
from m2s_training.synth.presets import PRESETS, get_preset, with_settings
from m2s_training.synth.sensor import Scan


def _sequence_arg(text: str) -> str:
    try:
        return sequence_name(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="m2s-synth",
        description="Generate synthetic LiDAR sequences (street scenes) in the SemanticKITTI layout.",
    )
    parser.add_argument("--out", required=True, type=Path, help="data root; writes OUT/sequences/XX/")
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="sensor/scene preset")
    parser.add_argument("--sequences", nargs="+", default=["00"], type=_sequence_arg, help="e.g. 00 08")
    parser.add_argument("--scans", type=_positive_int, help="scans per sequence (default: the preset's)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes")
    parser.add_argument(
        "--stride",
        type=_positive_int,
        default=1,
        help="keep every Nth sweep (scans N × 0.1 s apart): more street per scan for single-scan "
        "training; keep 1 for multi-scan fusion (teacher, distill, m2skd), which needs consecutive sweeps",
    )
    parser.add_argument(
        "--streets",
        type=_positive_int,
        default=1,
        help="split each sequence's scans into N short streets, each its own world: more street "
        "layouts for the same number of scans, two scans per street at least; multi-scan fusion "
        "never crosses from one street to the next",
    )
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change one setting of the preset, e.g. porous_fences=true, skewed_junctions=0.5 or "
        "sensor.range_noise=0.005 (repeatable; fields in m2s_training/synth/presets.py and sensor.py)",
    )
    parser.add_argument("--preview", type=Path, help="also write a bird's-eye-view PNG of the first scan")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} exists and is not a directory")
    if len(set(args.sequences)) != len(args.sequences):
        parser.error(f"--sequences lists a sequence twice: {' '.join(args.sequences)}")
    try:
        preset = with_settings(get_preset(args.preset), args.settings)
    except ValueError as error:  # a ConfigError, or a value the preset refuses
        parser.error(str(error))
    scans = args.scans or preset.scans
    try:
        street_sizes(scans, args.streets)  # the generator's own rule, checked before anything is written
    except ValueError as error:
        parser.error(f"--streets {args.streets}: {error} per sequence")
    label_map = load_label_map()
    first_scan: list[Scan] = []

    summaries: list[SequenceSummary] = []
    with tqdm(total=scans * len(args.sequences), unit="scan", desc="m2s-synth") as progress:

        def on_scan(index: int, scan: Scan) -> None:
            if not first_scan:
                first_scan.append(scan)
            progress.update(1)

        for name in args.sequences:
            progress.set_postfix(sequence=name)
            summaries.append(
                write_sequence(
                    args.out, name, preset, scans, args.seed, on_scan=on_scan, stride=args.stride, streets=args.streets
                )
            )

    for summary in summaries:
        train_ids = np.unique(label_map.to_train(np.array(sorted(summary.raw_ids), dtype=np.int64)))
        classes = [label_map.class_names[i] for i in train_ids if i != 0]
        streets = f" in {summary.streets} streets" if summary.streets > 1 else ""
        print(
            f"{summary.path}: {summary.scans} scans{streets}, {summary.points / summary.scans:,.0f} points/scan, "
            f"{len(classes)}/{label_map.num_classes - 1} classes: {', '.join(classes)}"
        )
    if args.preview is not None:
        from m2s_training.render import render_bev

        scan = first_scan[0]
        render_bev(scan.points, label_map.to_train(scan.semantic), label_map, args.preview)
        print(f"preview: {args.preview}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
