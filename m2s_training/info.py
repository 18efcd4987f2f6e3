"""``m2s-info``: print the m2s version and the class table (id, raw id, name, colour, hard)."""

from __future__ import annotations

import argparse

from m2s_perception import __version__
from m2s_perception.labels import load_label_map


def class_table(label_map) -> str:
    hard = set(label_map.hard_class_ids())
    lines = [f"{'id':>3} {'raw':>4}  {'name':<14} {'rgb':<13} hard"]
    for train_id, name in enumerate(label_map.class_names):
        r, g, b = label_map.train_rgb[train_id]
        raw = int(label_map.train_to_raw_lut[train_id])
        mark = "yes" if train_id in hard else ""
        lines.append(f"{train_id:>3} {raw:>4}  {name:<14} #{r:02x}{g:02x}{b:02x}       {mark}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--label-map", help="label map YAML (default: the packaged SemanticKITTI map)")
    args = parser.parse_args(argv)
    label_map = load_label_map(args.label_map)
    print(f"m2s {__version__}: {label_map.num_classes - 1} classes (+ ignored 'unlabeled')")
    print(class_table(label_map))
    print("splits: " + "; ".join(f"{k} {' '.join(label_map.sequences(k))}" for k in label_map.split))


if __name__ == "__main__":
    main()
