"""bench/calibrate_real.py's local-shape statistic on shapes whose answer is known by hand."""

import numpy as np

from bench.calibrate_real import scattering
from m2s_perception.labels import load_label_map


def _scan(xyz: np.ndarray, class_name: str) -> tuple[np.ndarray, np.ndarray]:
    points = np.column_stack([xyz, np.full(len(xyz), 0.3)]).astype(np.float32)
    return points, np.full(len(xyz), load_label_map().class_names.index(class_name))


def test_scattering_of_a_plane_a_slab_and_a_ball():
    rng = np.random.default_rng(0)
    n = 60_000
    # A flat lawn 20 m away: every neighbourhood is a disc, its smallest eigenvalue 0.
    lawn = np.column_stack([rng.uniform(15, 25, n), rng.uniform(-5, 5, n), np.full(n, -1.7)])
    # A wall 0.3 m thick: in a 1-m ball a disc of radius ~1 (in-plane variance R²/4 = 0.25) and a
    # uniform thickness (variance 0.3² / 12 = 0.0075): λ3/λ1 ≈ 0.03.
    wall = np.column_stack([rng.uniform(19.85, 20.15, n), rng.uniform(-5, 5, n), rng.uniform(-1.5, 3.5, n)])
    # A crown filled uniformly: a ball around a point more than 1 m inside is isotropic, λ3/λ1 near
    # 1 (short of it by sampling noise); such points are (10 / 12)³ = 58 % of a 12-m cube.
    crown = rng.uniform((16, -6, -6), (28, 6, 6), (140_000, 3))
    stats = {}
    for name, xyz in (("terrain", lawn), ("building", wall), ("vegetation", crown)):
        stats.update(scattering([_scan(xyz, name)], queries=100))
    assert stats[("terrain", 15.0)] < 1e-6
    assert 0.022 < stats[("building", 15.0)] < 0.038
    assert stats[("vegetation", 15.0)] > 0.6
    # nothing of these classes lies in the other bands: no figure rather than a made-up one
    assert ("building", 5.0) not in stats and ("vegetation", 30.0) not in stats
