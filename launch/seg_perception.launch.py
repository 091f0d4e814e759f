"""Start seg_perception_node (and optionally RViz) with the camera topics remapped.

    ros2 launch seg_perception seg_perception.launch.py image:=/camera/color/image_raw
    ros2 launch seg_perception seg_perception.launch.py image:=/camera/image use_compressed:=true rviz:=true
    ros2 launch seg_perception seg_perception.launch.py cameras:='[front, left]' \
        remappings:='front/image:=/front_cam/color/image_raw;left/image:=/left_cam/color/image_raw'
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from seg_perception.ros.launch_args import LAUNCH_ARGUMENTS, node_launch_spec


def _launch_setup(context, *args, **kwargs):
    share = get_package_share_directory("seg_perception")
    values = {name: LaunchConfiguration(name).perform(context) for name in LAUNCH_ARGUMENTS}
    spec = node_launch_spec(values, share)
    actions = [
        Node(
            package="seg_perception",
            executable="seg_perception_node",
            name=spec.name,
            namespace=spec.namespace,
            parameters=[spec.params_file, spec.overrides],
            remappings=spec.remappings,
            arguments=["--ros-args", "--log-level", spec.log_level],
            output="screen",
            emulate_tty=True,
        )
    ]
    if values["rviz"].lower() in ("1", "true", "yes", "on"):
        actions.append(Node(
            package="rviz2",
            executable="rviz2",
            name="seg_perception_rviz",
            namespace=spec.namespace,
            arguments=["-d", os.path.join(share, "config", "seg_perception.rviz")],
            output="screen",
        ))
    return actions


def generate_launch_description():
    declared = [
        DeclareLaunchArgument(name, default_value=default, description=description)
        for name, (default, description) in LAUNCH_ARGUMENTS.items()
    ]
    return LaunchDescription(declared + [OpaqueFunction(function=_launch_setup)])
