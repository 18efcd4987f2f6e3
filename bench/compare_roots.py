"""What the calibration statistics of bench/ share: one statistic of the labelled scans in several data
roots, printed root by root, where the first root (the real scans, a handful) is read whole and the
others (synthetic worlds, hundreds of scans) every n-th scan of each sequence."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from m2s_training.data.semantic_kitti import labelled_scans


def roots_parser(
    description: str | None, every: int, band: tuple[float, float] | None = None, first_whole: bool = True
) -> argparse.ArgumentParser:
    """The parser of such a statistic: positional ``roots``, ``--every`` (default ``every``) and, given a
    ``band``, ``--near`` / ``--far`` (m, horizontal range) defaulting to it. With ``first_whole`` False
    every root is thinned alike."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    first = "; the first (the real scans) is read whole" if first_whole else ""
    parser.add_argument(
        "roots", nargs="+", type=Path, help=f"data roots (ROOT/sequences/XX/{{velodyne,labels}}){first}"
    )
    thinned = "the other roots' sequences" if first_whole else "each sequence"
    parser.add_argument("--every", type=int, default=every, help=f"every n-th scan of {thinned} (default {every})")
    if band is not None:
        parser.add_argument("--near", type=float, default=band[0], help=f"m (default {band[0]:g})")
        parser.add_argument("--far", type=float, default=band[1], help=f"m (default {band[1]:g})")
    return parser


def scans_by_root(
    roots: list[Path], every: int, first_whole: bool = True
) -> Iterator[tuple[Path, Iterator[tuple[np.ndarray, np.ndarray]]]]:
    """Each root with its (points, raw semantic ids) scans: the first root's all of them if ``first_whole``,
    every ``every``-th of each sequence otherwise."""
    for position, root in enumerate(roots):
        yield root, labelled_scans(root, 1 if first_whole and position == 0 else every)
