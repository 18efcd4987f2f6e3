"""Statistics of real SemanticKITTI scans that calibrate ``m2s-synth --preset kitti``.

Calibration statistics only (the scans are never trained on): per-class point share, remission,
height and range per class, the beam elevation table (peaks of atan2(z, range)), the azimuth step
and the surface texture: the range step between azimuth neighbours of one class, relative to the
range, per range band (range noise, grazing-incidence spread, leaves), and remission by range
(median and share of zeros per 5-m band of 3-D range: the real sensor's returns fade beyond ~25 m)
and the local shape of each class, the scattering λ3/λ1 of its 1-m neighbourhoods per range band
(0 on a plane, 1 in a ball: real crowns grow more ragged with range, a wall stays flat).
Prints a table and writes ``docs/real_calibration.png``. With ``--compare`` it also reads a
synthetic sequence and prints/plots the same statistics side by side; ``--falloff KNEE POWER ZERO``
first dims its remission as the training augmentation ``augment.remission_falloff`` does.

    .venv/bin/python bench/calibrate_real.py --real /work/shared/real/semantickitti \\
        [--compare runs/synth_kitti --compare-sequence 00 --compare-scans 3 [--falloff 22 0.9 45]] \\
        [--plot docs/real_calibration.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from m2s_perception.labels import load_label_map
from m2s_training.data.dataset import AugmentConfig, dim_with_range
from m2s_training.data.semantic_kitti import Sequence, list_sequences

CLASSES = ["road", "sidewalk", "parking", "terrain", "building", "vegetation", "trunk", "car", "fence", "pole"]


def load(root: Path, sequence: str | None, scans: int) -> list[tuple[np.ndarray, np.ndarray]]:
    label_map = load_label_map()
    name = sequence or list_sequences(root)[0]
    seq = Sequence(root, name)
    out = []
    for index in range(min(scans, len(seq))):
        points = seq.points(index)
        semantic, _ = seq.labels(index, len(points))
        out.append((points, label_map.to_train(semantic)))
    return out


def statistics(scans: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    label_map = load_label_map()
    points = np.concatenate([p for p, _ in scans])
    labels = np.concatenate([t for _, t in scans])
    rho = np.hypot(points[:, 0], points[:, 1])
    stats = {"points_per_scan": len(points) / len(scans), "classes": {}}
    for name in CLASSES:
        mask = labels == label_map.class_names.index(name)
        if not mask.any():
            continue
        rem, z, r = points[mask, 3], points[mask, 2], rho[mask]
        stats["classes"][name] = {
            "share": mask.mean(),
            "remission": np.percentile(rem, [10, 50, 90]),
            "z": np.percentile(z, [10, 50, 90]),
            "range": np.percentile(r, [10, 50, 90]),
        }
    # Beam elevations: atan2(z, rho) peaks (per-laser offsets of a few cm blur them below ~5 m).
    elevation = np.degrees(np.arctan2(points[:, 2], rho))
    stats["elevation"] = elevation[rho > 5.0]
    first = scans[0][0]
    az = np.degrees(np.arctan2(first[:, 1], first[:, 0]))
    steps = np.abs(np.diff(az))  # KITTI stores azimuth rising, m2s-synth falling
    stats["azimuth_step"] = float(np.median(steps[(steps > 0) & (steps < 1)]))
    stats["points"], stats["labels"], stats["rho"] = points, labels, rho
    stats["texture"] = texture(scans)
    stats["remission_by_range"] = remission_by_range(points)
    stats["scattering"] = scattering(scans)
    return stats


RANGE_EDGES = np.arange(0.0, 85.0, 5.0)


def remission_by_range(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median remission and share of zero remission per 5-m band of 3-D range (NaN below 100 points)."""
    distance = np.linalg.norm(points[:, :3], axis=1)
    band = np.digitize(distance, RANGE_EDGES) - 1
    median, zeros = np.full(len(RANGE_EDGES) - 1, np.nan), np.full(len(RANGE_EDGES) - 1, np.nan)
    for b in range(len(RANGE_EDGES) - 1):
        remission = points[band == b, 3]
        if len(remission) >= 100:
            median[b], zeros[b] = np.median(remission), np.mean(remission == 0)
    return median, zeros


TEXTURE_BANDS = ((5.0, 15.0), (15.0, 30.0), (30.0, 60.0))


def texture(scans: list[tuple[np.ndarray, np.ndarray]]) -> dict[tuple[str, float], np.ndarray]:
    """|range step| / range between consecutive points of one class less than 0.5° apart in azimuth
    (KITTI and m2s-synth both store a scan ring by ring, in azimuth order), p50 and p90 per band."""
    label_map = load_label_map()
    steps: dict[tuple[str, float], list[np.ndarray]] = {}
    for points, labels in scans:
        distance = np.linalg.norm(points[:, :3], axis=1)
        azimuth = np.arctan2(points[:, 1], points[:, 0])
        step = np.abs(np.diff(distance)) / distance[1:]
        neighbours = (labels[1:] == labels[:-1]) & (np.abs(np.diff(azimuth)) < np.radians(0.5))
        for name in CLASSES:
            of_class = neighbours & (labels[1:] == label_map.class_names.index(name))
            for lo, hi in TEXTURE_BANDS:
                band = of_class & (distance[1:] >= lo) & (distance[1:] < hi)
                steps.setdefault((name, lo), []).append(step[band])
    out = {}
    for key, parts in steps.items():
        values = np.concatenate(parts)
        if len(values) >= 200:
            out[key] = np.percentile(values, [50, 90])
    return out


SCATTER_CLASSES = ("vegetation", "building", "terrain", "sidewalk")


def scattering(
    scans: list[tuple[np.ndarray, np.ndarray]], radius: float = 1.0, queries: int = 400, seed: int = 0
) -> dict[tuple[str, float], float]:
    """Median scattering λ3/λ1 (smallest over largest eigenvalue of the covariance) of the points of
    one class within ``radius`` of a point of that class (at least 5), per class and range band, over
    up to ``queries`` points per class, band and scan. 0 for a surface, 1 for a filled ball."""
    label_map = load_label_map()
    rng = np.random.default_rng(seed)
    values: dict[tuple[str, float], list[float]] = {}
    for points, labels in scans:
        distance = np.linalg.norm(points[:, :3], axis=1)
        for name in SCATTER_CLASSES:
            mask = labels == label_map.class_names.index(name)
            xyz, dist = points[mask, :3].astype(np.float64), distance[mask]
            for lo, hi in TEXTURE_BANDS:
                in_band = np.flatnonzero((dist >= lo) & (dist < hi))
                picked = rng.choice(in_band, min(queries, len(in_band)), replace=False)
                out = values.setdefault((name, lo), [])
                per_chunk = max(1, 2_000_000 // max(len(xyz), 1))  # about 2 M distances at a time
                for chunk in np.array_split(picked, max(1, -(-len(picked) // per_chunk))):
                    near = ((xyz[chunk, None, :] - xyz[None]) ** 2).sum(-1) < radius**2
                    for row in near:
                        if row.sum() >= 5:
                            eig = np.linalg.eigvalsh(np.cov(xyz[row].T))
                            out.append(eig[0] / max(eig[2], 1e-12))
    return {key: float(np.median(v)) for key, v in values.items() if len(v) >= 20}


def report(title: str, stats: dict) -> None:
    print(f"== {title}: {stats['points_per_scan']:,.0f} points/scan, azimuth step {stats['azimuth_step']:.4f} deg")
    el = np.percentile(stats["elevation"], [0.1, 50, 99.9])
    print(
        f"elevation (deg, range > 5 m) p0.1/50/99.9: {el.round(2)}; share above -8.5 deg "
        f"{(stats['elevation'] > -8.5).mean():.3f}"
    )
    print(f"{'class':<11} {'share':>6}  remission p10/50/90   z p10/50/90          range p10/50/90")
    for name, c in stats["classes"].items():
        print(
            f"{name:<11} {c['share']:6.3f}  {np.array2string(c['remission'], precision=2):<20} "
            f"{np.array2string(c['z'], precision=2):<20} {np.array2string(c['range'], precision=1)}"
        )
    print("texture: |range step| / range of azimuth neighbours, p50 / p90 in %, per range band")
    for name in CLASSES:
        cells = []
        for lo, hi in TEXTURE_BANDS:
            value = stats["texture"].get((name, lo))
            cells.append(
                f"{lo:.0f}-{hi:.0f} m "
                + ("   —      " if value is None else f"{value[0] * 100:.2f}/{value[1] * 100:.2f}")
            )
        print(f"  {name:<11} " + "   ".join(cells))
    median, zeros = stats["remission_by_range"]
    print("remission by 3-D range: median (share of zeros, %)")
    cells = [
        f"{lo:.0f}-{hi:.0f} {m:.2f} ({z * 100:.0f})"
        for lo, hi, m, z in zip(RANGE_EDGES[:-1], RANGE_EDGES[1:], median, zeros, strict=True)
        if not np.isnan(m)
    ]
    print("  " + " | ".join(cells))
    print("scattering λ3/λ1 of 1-m same-class neighbourhoods, median per range band")
    for name in SCATTER_CLASSES:
        cells = [f"{lo:.0f}-{hi:.0f} m {stats['scattering'].get((name, lo), np.nan):.3f}" for lo, hi in TEXTURE_BANDS]
        print(f"  {name:<11} " + "   ".join(cells))


def plot(path: Path, runs: list[tuple[str, dict]]) -> None:
    label_map = load_label_map()
    fig, axes = plt.subplots(4, 3, figsize=(16, 17))
    styles = ["-", "--"]
    for (title, stats), style in zip(runs, styles[: len(runs)], strict=True):
        for name in ("road", "sidewalk", "terrain", "building", "vegetation", "car"):
            mask = stats["labels"] == label_map.class_names.index(name)
            colour = label_map.train_rgb[label_map.class_names.index(name)] / 255.0
            kw = dict(histtype="step", density=True, color=colour, linestyle=style, label=f"{name} ({title})")
            axes[0, 0].hist(stats["points"][mask, 3], bins=50, range=(0, 1), **kw)
            axes[0, 1].hist(stats["points"][mask, 2], bins=60, range=(-3, 6), **kw)
            axes[0, 2].hist(stats["rho"][mask], bins=60, range=(0, 60), **kw)
        # bars at each class's place in CLASSES: a class absent from one run leaves a gap, no shift
        shares = [stats["classes"][n]["share"] if n in stats["classes"] else 0.0 for n in CLASSES]
        offset = 0.0 if style == "-" else 0.4
        axes[1, 0].bar(np.arange(len(CLASSES)) + offset, shares, width=0.4, label=title)
        axes[1, 0].set_xticks(np.arange(len(CLASSES)) + 0.2, CLASSES, rotation=45)
        axes[1, 1].hist(stats["elevation"], bins=np.arange(-26, 4, 0.1), histtype="step", label=title, density=True)
        axes[1, 2].hist(stats["rho"], bins=100, range=(0, 80), histtype="step", label=title, density=True)
        for ax, (lo, hi) in zip(axes[2], TEXTURE_BANDS, strict=True):
            shown = [n for n in CLASSES if (n, lo) in stats["texture"]]
            p50 = [stats["texture"][(n, lo)][0] * 100 for n in shown]
            positions = np.array([CLASSES.index(n) for n in shown]) + offset
            ax.bar(positions, p50, width=0.4, label=title)
            ax.set_xticks(np.arange(len(CLASSES)) + 0.2, CLASSES, rotation=45)
            ax.set(title=f"texture, {lo:.0f}–{hi:.0f} m: median |range step| / range", ylabel="%")
            ax.legend(fontsize=7)
        centres = (RANGE_EDGES[:-1] + RANGE_EDGES[1:]) / 2
        median, zeros = stats["remission_by_range"]
        axes[3, 0].plot(centres, median, "o" + style, label=title)
        axes[3, 1].plot(centres, zeros * 100, "o" + style, label=title)
    axes[3, 0].set(title="median remission by 3-D range, all points", xlabel="range [m]")
    axes[3, 1].set(title="share of zero remission by 3-D range", xlabel="range [m]", ylabel="%")
    for (title, stats), offset in zip(runs, (0.0, 0.4), strict=False):
        keys = [(n, lo) for n in SCATTER_CLASSES[:2] for lo, _ in TEXTURE_BANDS]
        heights = [stats["scattering"].get(key, 0.0) for key in keys]
        axes[3, 2].bar(np.arange(len(keys)) + offset, heights, width=0.4, label=title)
    ticks = [f"{n[:4]} {lo:.0f}–{hi:.0f}" for n in SCATTER_CLASSES[:2] for lo, hi in TEXTURE_BANDS]
    axes[3, 2].set_xticks(np.arange(len(ticks)) + 0.2, ticks, rotation=45)
    axes[3, 2].set(title="scattering λ3/λ1 of 1-m neighbourhoods (median)")
    axes[3, 2].legend(fontsize=7)
    for ax in axes[3, :2]:
        ax.legend(fontsize=7)
    axes[0, 0].set(title="remission per class", xlabel="remission")
    axes[0, 1].set(title="height z per class (sensor frame)", xlabel="z [m]")
    axes[0, 2].set(title="horizontal range per class", xlabel="range [m]")
    axes[1, 0].set(title="point share per class")
    axes[1, 1].set(title="elevation atan2(z, range), range > 5 m", xlabel="deg")
    axes[1, 2].set(title="horizontal range, all points", xlabel="m")
    axes[0, 0].legend(fontsize=6)
    for ax in axes[1]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--real", type=Path, default=Path("/work/shared/real/semantickitti"))
    parser.add_argument("--compare", type=Path, help="a synthetic data root to compare with")
    parser.add_argument("--compare-sequence", default=None)
    parser.add_argument("--compare-scans", type=int, default=3)
    parser.add_argument(
        "--falloff",
        type=float,
        nargs=3,
        metavar=("KNEE", "POWER", "ZERO"),
        help="dim the synthetic remission with range first (augment.remission_falloff at these values)",
    )
    parser.add_argument("--plot", type=Path, default=Path("docs/real_calibration.png"))
    args = parser.parse_args()
    runs = [("real", statistics(load(args.real, None, 3)))]
    if args.compare is not None:
        synthetic = load(args.compare, args.compare_sequence, args.compare_scans)
        title = "synthetic"
        if args.falloff is not None:
            knee, power, zero = args.falloff
            fixed = {"falloff_knee": (knee, knee), "falloff_power": (power, power), "falloff_zero_range": (zero, zero)}
            dim = AugmentConfig(remission_falloff=1.0, **fixed)
            rng = np.random.default_rng(0)
            synthetic = [(np.column_stack([p[:, :3], dim_with_range(p, dim, rng)]), t) for p, t in synthetic]
            title = f"synthetic, dimmed ({knee:g} m, {power:g}, {zero:g} m)"
        runs.append((title, statistics(synthetic)))
    for title, stats in runs:
        report(title, stats)
    plot(args.plot, runs)


if __name__ == "__main__":
    main()
