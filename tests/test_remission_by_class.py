"""bench/remission_by_class.py: per-class remission in a range band, by hand."""

import numpy as np
import pytest

from bench.remission_by_class import band_values, collect, describe, main
from m2s_training.data.semantic_kitti import write_labels, write_scan


def test_band_values_keep_only_the_band():
    # x, y, z, remission; classes 9 (road) and 11 (sidewalk)
    points = np.array(
        [
            [3.0, 4.0, -1.7, 0.1],
            [6.0, 8.0, -1.7, 0.2],
            [0.0, 29.9, -1.7, 0.3],
            [30.0, 0.0, -1.7, 0.4],
            [1.0, 1.0, 0.0, 0.5],
        ],
        np.float32,
    )
    labels = np.array([9, 9, 11, 11, 11])
    found = band_values(points, labels, 5.0, 30.0)  # ranges 5 (in), 10 (in), 29.9 (in), 30 (out), 1.4 (out)
    assert sorted(found) == [9, 11]
    np.testing.assert_allclose(found[9][0], [0.1, 0.2])
    np.testing.assert_allclose(found[11][0], [0.3])


def test_cell_means_by_hand():
    """Road in two 2 m squares 10 m out: 12 returns of 0.2 in one; in the other 6 of 0.3, 6 of 0.5 and
    4 zeros (not counted); a third square holds 9 lit returns, too few for a mean."""
    xy = np.r_[np.full((12, 2), [10.5, 0.5]), np.full((16, 2), [12.5, 0.5]), np.full((9, 2), [14.5, 0.5])]
    remission = np.r_[np.full(12, 0.2), np.full(6, 0.3), np.full(6, 0.5), np.zeros(4), np.full(9, 0.9)]
    points = np.c_[xy, np.full(len(xy), -1.7), remission].astype(np.float32)
    values, means = band_values(points, np.full(len(points), 9), 5.0, 30.0, cell=2.0)[9]
    assert len(values) == 37
    np.testing.assert_allclose(sorted(means), [0.2, 0.4], rtol=1e-6)


def test_describe_by_hand():
    # 40 zeros and the non-zero values 0.1, 0.2, ..., 4.0 (40 of them): median 2.05, quartiles 1.075 and 3.025
    values = np.r_[np.zeros(40), np.arange(1, 41) / 10.0]
    # five cell means 1, 2, 3, 4, 5: quartiles 2 and 4, patchiness (4 - 2) / 2.05
    summary = describe(values, np.arange(1.0, 6.0))
    assert summary.patchiness == pytest.approx(2.0 / 2.05)
    assert np.isnan(describe(values, np.arange(1.0, 5.0)).patchiness)  # four cells: too few
    assert summary.count == 80
    assert summary.median == pytest.approx(2.05)
    assert summary.spread == pytest.approx((3.025 - 1.075) / 2.05)
    assert summary.zeros == pytest.approx(0.5)
    assert describe(np.r_[np.zeros(100), np.full(19, 0.3)], np.arange(6.0)) is None  # too few lit returns for a median


def _road_rings(root, remissions) -> None:
    """One scan per remission value: 30 road returns (raw id 40) on a ring 10 m around the sensor."""
    folder = root / "sequences" / "00"
    (folder / "velodyne").mkdir(parents=True)
    (folder / "labels").mkdir()
    angle = np.linspace(0.0, 2 * np.pi, 30, endpoint=False)
    for index, remission in enumerate(remissions):
        ring = np.c_[10 * np.cos(angle), 10 * np.sin(angle), np.full(30, -1.7), np.full(30, remission)]
        write_scan(folder / "velodyne" / f"{index:06d}.bin", ring.astype(np.float32))
        write_labels(folder / "labels" / f"{index:06d}.label", np.full(30, 40, np.uint32))


def test_collect_reads_a_kitti_folder(tmp_path):
    _road_rings(tmp_path, (0.2, 0.4))
    road = 9  # its train id in the packaged label map
    found = collect(tmp_path, 1, 5.0, 30.0)
    assert list(found) == [road]
    ring = found[road]  # 1-2 returns per 2 m square of the ring: no patchiness
    assert (ring.count, ring.median, ring.spread, ring.zeros) == (60, pytest.approx(0.3), pytest.approx(0.2 / 0.3), 0.0)
    assert np.isnan(ring.patchiness)
    assert collect(tmp_path, 2, 5.0, 30.0)[road].median == pytest.approx(0.2)  # only the first scan


def test_cli_prints_the_ratio_and_draws_the_plot(tmp_path, capsys):
    _road_rings(tmp_path / "real", (0.2, 0.2))
    _road_rings(tmp_path / "synthetic", (0.4, 0.8))  # --every 2 reads only the first: 0.4
    main([str(tmp_path / "real"), str(tmp_path / "synthetic"), "--every", "2", "--plot", str(tmp_path / "r.png")])
    road_row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("road"))
    assert road_row.endswith("first/other 0.50")
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
