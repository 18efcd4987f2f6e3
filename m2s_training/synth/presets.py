"""Named generator settings: ``tiny`` for unit tests, ``default`` for KITTI-like scans."""

from __future__ import annotations

from dataclasses import dataclass

from m2s_training.synth.sensor import SensorConfig


@dataclass(frozen=True)
class Preset:
    name: str
    sensor: SensorConfig
    scans: int  # scans per sequence unless the caller asks for another number
    ego_speed: float = 8.0  # m/s along the street


PRESETS = {
    # ~10k points per scan, a 10-scan sequence in about a second: for tests of everything downstream.
    "tiny": Preset("tiny", SensorConfig(beams=32, azimuth_steps=512, max_range=50.0), scans=10),
    # HDL-64E-like: 64 beams over +2°…−24.8°, 0.17° azimuth steps, ~120k points per scan.
    "default": Preset("default", SensorConfig(), scans=100),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None
