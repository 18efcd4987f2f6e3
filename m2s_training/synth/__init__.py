"""Synthetic LiDAR sequences in SemanticKITTI layout (``m2s-synth``).

``generate(out_root, ["00", "08"], preset="tiny", seed=0)`` writes
``out_root/sequences/XX/{velodyne,labels,poses.txt,calib.txt,times.txt}`` readable by
:class:`m2s_training.data.semantic_kitti.Sequence`.
"""

from m2s_training.synth.generator import TR_LIDAR_TO_CAMERA, SequenceSimulator, generate, write_sequence
from m2s_training.synth.presets import PRESETS, Preset, get_preset
from m2s_training.synth.sensor import SensorConfig

__all__ = [
    "PRESETS",
    "TR_LIDAR_TO_CAMERA",
    "Preset",
    "SensorConfig",
    "SequenceSimulator",
    "generate",
    "get_preset",
    "write_sequence",
]
