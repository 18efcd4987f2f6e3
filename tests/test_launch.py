"""``colcon build`` of the package, then ``launch/segment.launch.py`` run the way ``ros2 launch`` runs it.

ROS 2's ``launch`` and ``launch_ros`` are not on PyPI; ``../shared/vendor/`` (beside the clone, in CI
too) holds their unmodified upstream sources (see its README). They are pip-installed with
``--no-deps`` into a temporary folder, never into the environment. Where ``../shared/vendor`` or
colcon (the ``dev`` extra) is missing, these tests skip.

``launch_ros`` imports ``composition_interfaces.srv`` (LoadNode, UnloadNode, ListNodes) at import
time for composable nodes; that message package is not installable here and segment.launch.py
starts no composable node, so the test puts a STAND-IN module with those three names (empty
Request/Response classes) on the launch process's PYTHONPATH. Nothing else is replaced: the
installed console script, the ament index, the params file and the launch arguments are real.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from m2s_perception.pointcloud2 import make_cloud, read_fields
from tests.segment_process import REPO, CloudClient

VENDOR = Path(os.environ.get("M2S_VENDOR_DIR", REPO.parent / "shared" / "vendor"))  # the env var: for worktrees
HDL64_POINTS = 120_000
TARBALLS = ("ros2-launch-3.7.1.tar.gz", "ros2-launch_ros-0.28.0.tar.gz")

COMPOSITION_STAND_IN = '''"""STAND-IN for composition_interfaces.srv (tests only): launch_ros imports these names."""


class _Service:
    class Request:
        pass

    class Response:
        pass


class LoadNode(_Service):
    pass


class UnloadNode(_Service):
    pass


class ListNodes(_Service):
    pass
'''

# What `ros2 launch PKG FILE ARG:=VALUE` does: a LaunchService including the file with the arguments.
RUN_LAUNCH_FILE = """
import sys
from launch import LaunchDescription, LaunchService
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from ament_index_python.packages import get_package_share_directory

path = get_package_share_directory("m2s_perception") + "/launch/segment.launch.py"
arguments = [a.split(":=", 1) for a in sys.argv[1:]]
service = LaunchService()
service.include_launch_description(
    LaunchDescription([IncludeLaunchDescription(PythonLaunchDescriptionSource(path), launch_arguments=arguments)])
)
sys.exit(service.run())
"""


def _missing() -> str | None:
    if not all((VENDOR / t).is_file() for t in TARBALLS):
        return f"{VENDOR} with the launch/launch_ros sources is absent"
    for module in ("colcon_core", "colcon_ros", "osrf_pycommon", "lark"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install -e '.[dev]')"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=str(_missing()))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A colcon workspace holding a copy of this checkout, built; plus vendor launch and the stand-in."""
    ws = tmp_path_factory.mktemp("colcon_ws")
    ignore = shutil.ignore_patterns(
        ".git", ".venv", "runs", "data", "build", "install", "log", "__pycache__", "*.egg-info"
    )
    shutil.copytree(REPO, ws / "src" / "m2s", ignore=ignore)
    build = subprocess.run(
        [sys.executable, "-m", "colcon", "--log-base", "log", "build", "--base-paths", "src", "--build-base",
         "build", "--install-base", "install", "--event-handlers", "console_direct-"],
        cwd=ws, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout + build.stderr
    pip = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps"]
    vendor = subprocess.run(
        [*pip, "--target", str(ws / "vendor"), *(str(VENDOR / t) for t in TARBALLS)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert vendor.returncode == 0, vendor.stderr
    srv = ws / "stand_in" / "composition_interfaces" / "srv"
    srv.mkdir(parents=True)
    (srv.parent / "__init__.py").write_text("")
    (srv / "__init__.py").write_text(COMPOSITION_STAND_IN)
    (ws / "run_launch_file.py").write_text(RUN_LAUNCH_FILE)
    return ws


def test_colcon_installs_the_node_launch_file_configs_and_profile(workspace: Path):
    share = workspace / "install" / "m2s_perception" / "share" / "m2s_perception"
    for relative in ("package.xml", "launch/segment.launch.py", "config/segment.yaml", "config/m2s.rviz",
                     "config/fastdds.xml"):  # fmt: skip
        assert (share / relative).is_file(), relative
    assert (share.parent / "ament_index" / "resource_index" / "packages" / "m2s_perception").is_file()
    assert os.access(workspace / "install" / "m2s_perception" / "lib" / "m2s_perception" / "m2s-segment", os.X_OK)


def _cloud(sec: int, n: int = 3000) -> PointCloud2:
    rng = np.random.default_rng(sec)
    rho, phi = rng.uniform(3, 40, n), rng.uniform(-np.pi, np.pi, n)
    columns = {
        "x": rho * np.cos(phi),
        "y": rho * np.sin(phi),
        "z": rng.uniform(-2, 0.5, n),
        "intensity": rng.uniform(0, 1, n),
    }
    header = Header(frame_id="lidar")
    header.stamp.sec = sec
    return make_cloud(PointCloud2, PointField, header, {k: v.astype(np.float32) for k, v in columns.items()})


def _processes_under(path: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any(str(path) in part for part in process.info["cmdline"] or ()):
            found.append(process)
    return found


@pytest.mark.ros
def test_launch_file_starts_the_installed_node_which_answers_on_the_remapped_topic(workspace: Path):
    """`segment.launch.py input_topic:=/points ensemble_members:=2` after `colcon build`: a best-effort
    driver's HDL-64-sized cloud in, its labels out (packaged demo weights, two of their four networks,
    the params file's other defaults), Ctrl-C ends all."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(workspace / "vendor"), str(workspace / "stand_in")])
    log_path = workspace / "launch.log"
    arguments = "input_topic:=/points ensemble_members:=2"
    command = f"source install/setup.bash && exec {sys.executable} run_launch_file.py {arguments}"
    with open(log_path, "wb") as log:
        # its own session: SIGINT reaches only the launch process, which must stop its node itself
        launch = subprocess.Popen(["bash", "-c", command], cwd=workspace, env=env, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    client = CloudClient("/points", "/m2s/labelled_points")
    # A LiDAR driver: sensor-data QoS (best effort), an HDL-64-sized scan (1.9 MB, needs config/fastdds.xml)
    driver = client.node.create_publisher(PointCloud2, "/points", qos_profile_sensor_data)
    try:
        subscribed = client.wait_until(lambda: driver.get_subscription_count() > 0 or launch.poll() is not None, 90)
        assert subscribed and launch.poll() is None, log_path.read_text(errors="replace")
        node = [p for p in _processes_under(workspace / "install") if "m2s-segment" in " ".join(p.cmdline())]
        assert node, "the node does not run from the colcon install space"
        # best effort: the node's reader may match us a moment after we matched it; resend until answered
        assert client.probe(driver, _cloud(7, HDL64_POINTS), 60), log_path.read_text(errors="replace")
        out = client.outputs[(7, 0)]
        assert (out.header.frame_id, out.width) == ("lidar", HDL64_POINTS)
        labels = read_fields(out, ["label"])["label"].ravel()
        assert labels.size == HDL64_POINTS and labels.max() <= 19
    finally:
        client.close()
        launch.send_signal(signal.SIGINT)
        try:
            code = launch.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(launch.pid, signal.SIGKILL)
            raise
    log = log_path.read_text(errors="replace")
    assert code == 0, log
    deadline = time.monotonic() + 5
    while _processes_under(workspace / "install") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _processes_under(workspace / "install"), "processes left after the launch ended"
    assert "process started with pid" in log and "m2s-segment" in log
    assert "torch" in log and "2 networks averaged" in log  # the launch argument reached the node
