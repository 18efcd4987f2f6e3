"""Every parameter of ``m2s-segment`` in one table: declared from it, validated by it, mirrored by
``config/segment.yaml`` (a test keeps the two equal).

Adding a parameter: one ``Param`` row here, the same key in ``config/segment.yaml``, then read it in
``node.py`` (or in ``LabelSettings`` when it shapes how a scan is labelled and may change at run time).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from m2s_perception.pipeline import LabelSettings

# Topic names are relative, so a namespace (``__ns``) moves them and ``--ros-args -r`` remaps them:
#   m2s-segment --ros-args -r points:=/velodyne_points
INPUT_TOPIC, OUTPUT_TOPIC, FILTERED_TOPIC = "points", "labelled_points", "filtered_points"
QOS_OVERRIDES_PREFIX = "qos_overrides."  # rclpy's QoSOverridingOptions parameters


@dataclass(frozen=True)
class Param:
    name: str
    default: Any  # its Python type is the parameter's type ([] = list of strings)
    description: str
    read_only: bool = True  # fixed at start; False: ``ros2 param set`` takes effect on the next scan
    choices: tuple[str, ...] = ()
    range: tuple[float, float] | None = None  # inclusive


PARAMETERS: tuple[Param, ...] = (
    Param("checkpoint", "", "m2s checkpoint (.pt); empty = the packaged demo weights"),
    Param("label_map", "", "label map YAML the checkpoint was trained with; empty = the packaged SemanticKITTI one"),
    Param("device", "auto", "torch device: auto (cuda when available, else cpu), cpu, cuda, cuda:N"),
    Param(
        "precision",
        "auto",
        "auto: fp32 with backend torch, TensorRT fp16 with onnxruntime on CUDA; fp16 | fp32 force it; CPU: fp32",
        choices=("auto", "fp16", "fp32"),
    ),
    Param("backend", "torch", "inference backend (torch; onnxruntime/openvino where installed)"),
    Param("num_threads", 0, "CPU threads for inference; 0 = the library default", range=(0, 1024)),
    Param("ensemble_members", 0, "an ensemble checkpoint: run only its first N networks; 0 = all", range=(0, 16)),
    Param("level_ground", True, "rotate each scan so its ground plane near the sensor is level before inference"),
    Param("input_topic", INPUT_TOPIC, "PointCloud2 to segment (relative; prefer remapping: -r points:=/x)"),
    Param("output_topic", OUTPUT_TOPIC, "labelled PointCloud2 (relative; prefer remapping)"),
    Param("filtered_topic", FILTERED_TOPIC, "the input cloud without filtered_classes (relative)"),
    Param("input_reliability", "best_effort", "input QoS reliability", choices=("best_effort", "reliable")),
    Param("input_depth", 1, "input QoS keep-last depth", range=(1, 100)),
    Param("output_reliability", "reliable", "output QoS reliability", choices=("best_effort", "reliable")),
    Param("output_depth", 1, "output QoS keep-last depth", range=(1, 100)),
    Param(
        "intensity_scale",
        1.0,
        "the sensor's full-scale intensity: KITTI remission 1.0, most drivers 255, Ouster ~255..3300",
        read_only=False,
        range=(1e-6, 1e6),
    ),
    Param("min_range", 0.0, "points closer than this (m, 3D) get label 0", read_only=False, range=(0.0, 1000.0)),
    Param("max_range", 200.0, "points farther than this (m, 3D) get label 0", read_only=False, range=(0.0, 1000.0)),
    Param("max_points", 500_000, "larger clouds are skipped with a warning", read_only=False, range=(1, 100_000_000)),
    Param("label_format", "train", "ids in 'label': train (0..19) or raw", read_only=False, choices=("train", "raw")),
    Param("publish_confidence", False, "add a float32 'confidence' field", read_only=False),
    Param("keep_input_fields", False, "labelled cloud keeps every input field (ring, time…)", read_only=False),
    Param("filtered_classes", [], "class names removed from the filtered cloud, e.g. [road, sidewalk]", False),
    Param("stats_period_s", 1.0, "period of /diagnostics (the log line: every 5 s at most)", range=(0.05, 3600.0)),
    Param("warning_period_s", 5.0, "at most one warning per problem kind per period", range=(0.0, 3600.0)),
    Param("max_processing_ms", 500.0, "diagnostics WARN when p95 processing time is above", range=(0.0, 1e6)),
    Param("max_delay_ms", 1000.0, "diagnostics ERROR when every scan's delay is above, for 3 s", range=(0.0, 1e6)),
    Param("input_timeout_s", 5.0, "diagnostics WARN/ERROR after this long without input", range=(0.1, 3600.0)),
    Param("debug_delay_s", 0.0, "test/demo only: extra sleep per scan to exercise the drop policy", range=(0.0, 60.0)),
)
BY_NAME: dict[str, Param] = {p.name: p for p in PARAMETERS}


def defaults() -> dict[str, Any]:
    return {p.name: p.default for p in PARAMETERS}


def validate(values: Mapping[str, Any], class_names: Iterable[str] | None = None) -> list[str]:
    """Problems with ``values`` (a subset of the parameters, merged with defaults by the caller)."""
    problems = []
    for name, value in values.items():
        param = BY_NAME.get(name)
        if param is None:
            continue
        problem = _check(param, value)
        if problem:
            problems.append(problem)
    low, high = values.get("min_range"), values.get("max_range")
    if isinstance(low, float) and isinstance(high, float) and low >= high:
        problems.append(f"min_range {low} must be below max_range {high}")
    names = values.get("filtered_classes")
    if class_names is not None and isinstance(names, list):
        known = tuple(class_names)
        unknown = [n for n in names if n not in known]
        if unknown:
            problems.append(
                f"filtered_classes: unknown class(es) {', '.join(map(repr, unknown))}; known: {', '.join(known)}"
            )
    return problems


def _check(param: Param, value: Any) -> str | None:
    expected = type(param.default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if expected is list:
        if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            return f"parameter {param.name}={value!r}; expected a list of strings"
    elif not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        return f"parameter {param.name}={value!r}; expected a {expected.__name__}"
    if param.choices and value not in param.choices:
        return f"parameter {param.name}={value!r}; expected one of {', '.join(param.choices)}"
    if param.range and not param.range[0] <= value <= param.range[1]:
        return f"parameter {param.name}={value!r}; expected {param.range[0]:g}..{param.range[1]:g}"
    return None


def unknown_parameters(given: Iterable[str], declared: Iterable[str]) -> list[str]:
    """A line per given name the node does not declare, with the closest known name."""
    declared = set(declared)
    lines = []
    for name in sorted(set(given) - declared):
        close = difflib.get_close_matches(name, [p.name for p in PARAMETERS], n=1)
        lines.append(f"unknown parameter {name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return lines


def label_settings(values: Mapping[str, Any]) -> LabelSettings:
    return LabelSettings(
        intensity_scale=float(values["intensity_scale"]),
        min_range=float(values["min_range"]),
        max_range=float(values["max_range"]),
        max_points=int(values["max_points"]),
        label_format=values["label_format"],
        publish_confidence=bool(values["publish_confidence"]),
        keep_input_fields=bool(values["keep_input_fields"]),
        filtered_classes=tuple(values["filtered_classes"] or ()),
    )
