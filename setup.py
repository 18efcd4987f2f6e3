from glob import glob

from setuptools import find_packages, setup

PACKAGE = "m2s_perception"

setup(
    name=PACKAGE,
    version="0.1.0",
    description="LiDAR semantic segmentation on ROS 2 with multi-to-single knowledge distillation",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["m2s_perception", "m2s_perception.*", "m2s_training", "m2s_training.*"]),
    package_data={PACKAGE: ["weights/*.pt", "weights/*.md"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.rviz") + glob("config/*.xml")),
    ],
    install_requires=["numpy>=1.24", "pyyaml>=6", "torch>=2.1", "tqdm>=4.60", "matplotlib>=3.7", "rosbags>=0.10"],
    extras_require={
        # The ROS 2 client libraries as PyPI wheels, for machines without a ROS 2 install.
        # Never install this extra into a sourced ROS 2 environment.
        "ros": [
            "ros-kilted-rclpy",
            "ros-kilted-sensor-msgs",
            "ros-kilted-std-msgs",
            "ros-kilted-diagnostic-msgs",
            "ros-kilted-rosgraph-msgs",
            "ros-kilted-rmw-fastrtps-cpp",
        ],
        # ray casting for m2s-synth (open3d works too); libusb-package: open3d links libusb, which a
        # fresh machine may lack (see m2s_training/synth/o3d.py)
        "synth": ["open3d-cpu>=0.18", "libusb-package>=1.0.26"],
        "spconv": ["spconv>=2.3"],  # Cylinder3D backbone; on CUDA 12 install spconv-cu12x instead
        # colcon + osrf-pycommon + lark: tests/test_launch.py builds the package and runs the launch file
        # (with ../shared/vendor's launch sources); psutil: process checks in the reliability tests
        # m2s-export and the Segmenter backends 'onnxruntime' / 'openvino' (CPU). On an NVIDIA GPU install
        # onnxruntime-gpu instead of onnxruntime (CUDA and TensorRT execution providers).
        "engine": ["onnx>=1.16", "onnxruntime>=1.17", "openvino>=2024.0"],
        "dev": [
            "pytest>=8",
            "pytest-timeout>=2",
            "ruff>=0.6",
            "colcon-common-extensions>=0.3",
            "osrf-pycommon>=2",
            "lark>=1",
            "psutil>=5",
        ],
    },
    zip_safe=True,
    entry_points={
        "console_scripts": [
            "m2s-info = m2s_training.info:main",
            "m2s-synth = m2s_training.synth.cli:main",
            "m2s-render = m2s_training.render:main",
            "m2s-train = m2s_training.train:main",
            "m2s-eval = m2s_training.evaluate:main",
            "m2s-ensemble = m2s_training.ensemble:main",
            "m2s-recalibrate = m2s_training.recalibrate:main",
            "m2s-bag = m2s_training.bag.cli:main",
            "m2s-segment = m2s_perception.node:main",
            "m2s-export = m2s_perception.export:main",
        ],
    },
)
