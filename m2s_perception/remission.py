"""Each scan's remission on one scale: scaled so that the median of its lit returns is a fixed value.

Remission levels differ between sensors, their calibration and a simulator by a factor per scan, while
the levels of classes relative to the scan's own median agree (road about 0.85 of it, sidewalk and
terrain about 1.0, on real HDL-64E scans and on m2s's synthetic ones: docs/benchmarks.md "Sim-to-real",
item 30). A model that eats the scaled values can use those relative levels; the per-scan remission
scale augmentation, applied before this, no longer hides them. Remission-0 returns (no echo strength
measured) stay 0.
"""

from __future__ import annotations

import numpy as np

MIN_LIT = 32  # fewer lit returns than this: no median worth trusting, the scan is left as it is


def scale_remission(points: np.ndarray, reference: float) -> np.ndarray:
    """``points`` (N, >=4: x, y, z, remission, ...) with column 3 multiplied so that the median of its
    lit returns is ``reference``; a new array, the input is not changed."""
    remission = points[:, 3]
    lit = remission > 0  # a sensor's 0 means no echo strength was measured (a scale leaves it 0)
    if lit.sum() < MIN_LIT:
        return points
    out = points.copy()
    out[:, 3] = remission * np.float32(reference / float(np.median(remission[lit])))
    return out
