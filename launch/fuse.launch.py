"""Run fusion_node: thermal + RGB in, fused RGB-looking image out.

    ros2 launch fusion_ros fuse.launch.py thermal_topic:=/boson/image_raw rgb_topic:=/cam/image_raw
    ros2 launch fusion_ros fuse.launch.py --show-args

The node reads config/fusion.yaml (every parameter documented there); the launch arguments
override the most common ones. The node gets FASTDDS_DEFAULT_PROFILES_FILE set to the shipped
shared-memory profile so camera-sized images reach it (start your camera drivers with the same
profile), unless fastdds_profile:=keep (or an empty value from an including launch file) leaves the
environment's setting as it is.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node


def _sibling(topic, name):
    """``a/b/image_raw`` -> ``a/b/<name>``: camera_info lives beside its image (image_transport convention)."""
    return PythonExpression(["'/'.join('", topic, "'.split('/')[:-1] + ['", name, "'])"])


#: fastdds_profile values that leave FASTDDS_DEFAULT_PROFILES_FILE as the environment has it. ``ros2 launch``
#: refuses ``name:=`` with nothing after it, so the command line says ``keep``; an including launch file may pass ''.
_KEEP_PROFILE = ("", "keep")


def _fusion_node(context):
    """The node. ``method`` and ``device`` override the params file only when given: a default here would
    silently replace the file's choice (e.g. a file exported by ``fusion-ros ui``). The Fast DDS profile is
    set for the node only, and never to an empty path (Fast DDS would fail to parse it)."""
    given = {
        "method": LaunchConfiguration("method").perform(context),
        "device": LaunchConfiguration("device").perform(context),
    }
    overrides = {name: value for name, value in given.items() if value}
    overrides["use_sim_time"] = LaunchConfiguration("use_sim_time").perform(context) == "true"
    profile = LaunchConfiguration("fastdds_profile").perform(context).strip()
    env = {} if profile in _KEEP_PROFILE else {"FASTDDS_DEFAULT_PROFILES_FILE": profile}
    rgb_topic = LaunchConfiguration("rgb_topic")
    fused_topic = LaunchConfiguration("fused_topic")
    return [
        Node(
            package="fusion_ros",
            executable="fusion_node",
            name="fusion_node",
            namespace=LaunchConfiguration("namespace"),
            output="screen",
            emulate_tty=True,
            additional_env=env,
            parameters=[LaunchConfiguration("params_file"), overrides],
            remappings=[
                ("thermal/image_raw", LaunchConfiguration("thermal_topic")),
                ("rgb/image_raw", rgb_topic),
                ("rgb/image_raw/compressed", [rgb_topic, "/compressed"]),
                ("rgb/camera_info", _sibling(rgb_topic, "camera_info")),
                ("fused/image_raw", fused_topic),
                ("fused/camera_info", _sibling(fused_topic, "camera_info")),
            ],
        )
    ]


def generate_launch_description():
    share = get_package_share_directory("fusion_ros")
    args = [
        DeclareLaunchArgument(
            "method",
            default_value="",
            description="fusion method (fusion-ros methods lists them and whether their weights are present); "
            "empty: the params file's (balanced in the shipped one); switch live with: "
            "ros2 param set /<namespace>/fusion_node method <name>",
        ),
        DeclareLaunchArgument("thermal_topic", default_value="thermal/image_raw",
                              description="thermal sensor_msgs/Image topic (mono8, mono16, 16UC1, 8UC1 or 32FC1)"),
        DeclareLaunchArgument("rgb_topic", default_value="rgb/image_raw",
                              description="RGB sensor_msgs/Image topic (rgb8, bgr8, rgba8, bgra8 or mono8); its camera_info "
                              "is read from the sibling topic camera_info, and <rgb_topic>/compressed is used "
                              "with rgb.transport compressed"),
        DeclareLaunchArgument("fused_topic", default_value="fused/image_raw",
                              description="fused sensor_msgs/Image output (same header, size and encoding as the RGB input); "
                              "the RGB camera_info is republished on its sibling topic camera_info"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node and its relative topics"),
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "fusion.yaml"),
                              description="parameters YAML keyed /**/fusion_node (any namespace; a plain fusion_node: "
                              "key is ignored once namespace:= is set): /**/fusion_node: ros__parameters: ..."),
        DeclareLaunchArgument("device", default_value="",
                              description="compute device: auto (CUDA when present, else CPU), cpu, cuda or cuda:N "
                              "(without CUDA the node warns and runs on CPU); empty: the params file's (auto in the shipped one)"),
        DeclareLaunchArgument("use_sim_time", default_value="false", choices=["true", "false"],
                              description="use /clock (bag replay with --clock, simulators)"),
        DeclareLaunchArgument("fastdds_profile", default_value=os.path.join(share, "config", "fastdds_shm.xml"),
                              description="Fast DDS XML profile the node uses (large images over shared memory); keep: "
                              "leave FASTDDS_DEFAULT_PROFILES_FILE as the environment has it (an including launch file "
                              "may also pass an empty value)"),
    ]
    return LaunchDescription(
        args
        + [
            SetEnvironmentVariable("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp"),
            OpaqueFunction(function=_fusion_node),
        ]
    )
