"""m2s_perception: the runtime half of m2s (models, preprocessing, PointCloud2 codec, ROS 2 node)."""

__version__ = "0.1.0"
