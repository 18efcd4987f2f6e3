"""Segment a LiDAR's PointCloud2 with m2s:

    ros2 launch m2s_perception segment.launch.py checkpoint:=/path/to/student.pt input_topic:=/points rviz:=true

Parameters come from config/segment.yaml (or params_file:=...); a launch argument given on the
command line overrides the file, an empty one leaves the file's value. The node's topics are
relative (points, labelled_points, filtered_points) inside ``namespace``: ``input_topic``,
``output_topic`` and ``filtered_topic`` remap them. With the defaults the node reads
/velodyne_points and publishes /m2s/labelled_points and /m2s/filtered_points.
"""

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchContext, LaunchDescription

PACKAGE = "m2s_perception"
REMAPS = {"input_topic": "points", "output_topic": "labelled_points", "filtered_topic": "filtered_points"}
# launch argument → parameter type
OVERRIDES = {"checkpoint": str, "device": str, "intensity_scale": float, "ensemble_members": int}


def segment_node(context: LaunchContext) -> list[Node]:
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    overrides = {name: kind(arg(name)) for name, kind in OVERRIDES.items() if arg(name)}
    overrides["use_sim_time"] = arg("use_sim_time").lower() in ("true", "1")
    node = Node(
        package=PACKAGE,
        executable="m2s-segment",
        name=arg("node_name"),
        namespace=arg("namespace"),
        output="screen",
        emulate_tty=True,
        parameters=[arg("params_file"), overrides],
        remappings=[(relative, arg(name)) for name, relative in REMAPS.items() if arg(name)],
        arguments=["--ros-args", "--log-level", arg("log_level")],
    )
    return [node]


def rviz(context: LaunchContext) -> list[Node]:
    frame = LaunchConfiguration("fixed_frame").perform(context)
    config = PathJoinSubstitution([FindPackageShare(PACKAGE), "config", "m2s.rviz"])
    return [
        Node(
            package="rviz2",
            executable="rviz2",
            name="m2s_rviz",
            arguments=["-d", config, *(["-f", frame] if frame else [])],
            parameters=[{"use_sim_time": LaunchConfiguration("use_sim_time")}],
            condition=IfCondition(LaunchConfiguration("rviz")),
        )
    ]


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare(PACKAGE)
    arguments = [
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution([share, "config", "segment.yaml"]),
            description="node parameters (/**: ros__parameters: form)",
        ),
        DeclareLaunchArgument(
            "checkpoint", default_value="", description="m2s checkpoint (.pt); empty: the params file's value"
        ),
        DeclareLaunchArgument("input_topic", default_value="/velodyne_points", description="PointCloud2 to segment"),
        DeclareLaunchArgument(
            "output_topic", default_value="", description="labelled PointCloud2; empty: <namespace>/labelled_points"
        ),
        DeclareLaunchArgument(
            "filtered_topic", default_value="", description="filtered PointCloud2; empty: <namespace>/filtered_points"
        ),
        DeclareLaunchArgument("namespace", default_value="m2s", description="the node's namespace"),
        DeclareLaunchArgument("node_name", default_value="m2s_segment", description="the node's name"),
        DeclareLaunchArgument("device", default_value="", description="auto, cpu, cuda, cuda:N; empty: params file"),
        DeclareLaunchArgument(
            "intensity_scale", default_value="", description="sensor full-scale intensity; empty: params file"
        ),
        DeclareLaunchArgument(
            "ensemble_members", default_value="", description="run the first N networks of an ensemble; empty: file"
        ),
        DeclareLaunchArgument("log_level", default_value="info", description="debug, info, warn, error, fatal"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="follow /clock (bag replay)"),
        DeclareLaunchArgument("rviz", default_value="false", description="start rviz2 with config/m2s.rviz"),
        DeclareLaunchArgument(
            "fixed_frame", default_value="", description="RViz fixed frame (rviz2 -f); empty: the config's velodyne"
        ),
    ]
    return LaunchDescription([*arguments, OpaqueFunction(function=segment_node), OpaqueFunction(function=rviz)])
