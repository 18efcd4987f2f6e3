#!/usr/bin/env bash
# The ROS 2 node itself on a lent GPU machine: bench/bench_node.py end to end (publisher → m2s-segment →
# subscriber over loopback Fast DDS with config/fastdds.xml) with the shipped weights, on CUDA and,
# for scale, on the same machine's CPU. That machine has PyTorch but no ROS 2 and no network: the
# ROS 2 Python wheels travel along (cp312, downloaded here with `pip download --no-deps
# --python-version 3.12 ...`, see docs/benchmarks.md "GPU") and are installed under a prefix.
#   bench/gpu_node.sh WHEELS REAL      e.g. bench/gpu_node.sh .whl .gpu_real (REAL: SemanticKITTI *.bin)
set -euo pipefail
wheels=${1:?usage: bench/gpu_node.sh WHEELS_DIR REAL_SCANS_DIR}
real=${2:?usage: bench/gpu_node.sh WHEELS_DIR REAL_SCANS_DIR}
root=$(mktemp -d)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --prefix "$root" "$wheels"/*.whl
# What the wheels' own bootstrapper (a .pth, not read from PYTHONPATH) would set, done by hand:
prefix=$(dirname "$(dirname "$(find "$root" -type d -path '*/share/ament_index' | head -1)")")
sites=$(find "$root" -maxdepth 5 -type d \( -name site-packages -o -name dist-packages \))
export PYTHONPATH=$(echo $sites | tr ' ' ':'):$PWD
export LD_LIBRARY_PATH=$prefix/lib:$(for d in $sites; do ls -d "$d"/ros_*.libs 2>/dev/null; done | tr '\n' ':')${LD_LIBRARY_PATH:-}
export AMENT_PREFIX_PATH=$prefix _ROS_WHEELS_BOOTSTRAP_COMPLETE=1
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_LOCALHOST_ONLY=1 ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-77}
export FASTDDS_DEFAULT_PROFILES_FILE=$PWD/config/fastdds.xml PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import sys, torch, rclpy; print(sys.version.split()[0], torch.__version__, torch.cuda.get_device_name(), rclpy.__file__)"
weights=m2s_perception/weights/demo_student.pt
sha256sum "$weights"
bench="python3 bench/bench_node.py --checkpoint $weights --real $real"
$bench --device cuda --scans 30 --ensemble-members 0 1 --rounds 2
$bench --device cuda --scans 30 --input-reliability best_effort   # what a driver with sensor-data QoS sends
$bench --device cpu --scans 10
