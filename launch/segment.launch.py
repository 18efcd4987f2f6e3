"""Segment a LiDAR's PointCloud2 with m2s:

    ros2 launch m2s_perception segment.launch.py checkpoint:=/path/to/student.pt input_topic:=/points rviz:=true

Parameters come from config/segment.yaml (or params_file:=...); a launch argument given on the
command line overrides the file, an empty one leaves the file's value.
"""

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchContext, LaunchDescription

PACKAGE = "m2s_perception"
OVERRIDABLE = ("checkpoint", "input_topic", "output_topic")


def segment_node(context: LaunchContext) -> list[Node]:
    overrides = {name: LaunchConfiguration(name).perform(context) for name in OVERRIDABLE}
    overrides = {name: value for name, value in overrides.items() if value}
    overrides["use_sim_time"] = LaunchConfiguration("use_sim_time").perform(context).lower() in ("true", "1")
    node = Node(
        package=PACKAGE,
        executable="m2s-segment",
        name="m2s_segment",
        output="screen",
        emulate_tty=True,
        parameters=[LaunchConfiguration("params_file"), overrides],
    )
    return [node]


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
        DeclareLaunchArgument("input_topic", default_value="", description="PointCloud2 to segment"),
        DeclareLaunchArgument("output_topic", default_value="", description="labelled PointCloud2"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="follow /clock (bag replay)"),
        DeclareLaunchArgument("rviz", default_value="false", description="start rviz2 with config/m2s.rviz"),
    ]
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="m2s_rviz",
        arguments=["-d", PathJoinSubstitution([share, "config", "m2s.rviz"])],
        parameters=[{"use_sim_time": LaunchConfiguration("use_sim_time")}],
        condition=IfCondition(LaunchConfiguration("rviz")),
    )
    return LaunchDescription([*arguments, OpaqueFunction(function=segment_node), rviz])
