"""What the launch file passes to the node (tested without `ros2 launch`)."""

from __future__ import annotations

import ast

from conftest import REPO
from seg_perception.ros.launch_args import LAUNCH_ARGUMENTS, node_launch_spec


def test_defaults_use_the_shipped_params_file_and_remap_every_input():
    spec = node_launch_spec({}, "/opt/share/seg_perception")
    assert spec.params_file == "/opt/share/seg_perception/config/seg_perception.yaml"
    remaps = dict(spec.remappings)
    assert remaps["image"] == "/camera/color/image_raw"
    assert remaps["image/compressed"] == "/camera/color/image_raw/compressed"
    assert set(remaps) == {"image", "image/compressed", "camera_info", "depth", "depth/camera_info"}
    assert spec.overrides == {"use_compressed": False}


def test_overrides_only_replace_what_was_given():
    spec = node_launch_spec({"image": "/head/rgb", "use_compressed": "true", "backend": "tensorrt",
                             "model_path": "/models/m.engine", "namespace": "robot1"}, "/s")
    assert spec.overrides == {"use_compressed": True, "backend": "tensorrt", "model_path": "/models/m.engine"}
    args = spec.ros_args()
    assert args[:3] == ["--ros-args", "-r", "__node:=seg_perception_node"]
    assert "__ns:=/robot1" in args and "image/compressed:=/head/rgb/compressed" in args
    assert "use_compressed:=true" in args


def test_the_launch_file_declares_every_argument_through_the_shared_table():
    tree = ast.parse((REPO / "launch" / "seg_perception.launch.py").read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "seg_perception.ros.launch_args" for a in n.names}
    assert {"LAUNCH_ARGUMENTS", "node_launch_spec"} <= imported
    for name, (default, description) in LAUNCH_ARGUMENTS.items():
        assert description, name
    assert {"namespace", "image", "camera_info", "depth", "use_compressed", "params_file", "backend", "model_path", "rviz"} <= set(LAUNCH_ARGUMENTS)


def test_a_camera_list_reaches_the_node_and_leaves_each_cameras_topics_under_its_name():
    spec = node_launch_spec({"cameras": "[front, left]",
                             "remappings": "front/image:=/cam_f/rgb; left/depth:=/cam_l/depth"}, "/s")
    assert spec.overrides["cameras"] == ["front", "left"]
    # The single-camera image/camera_info/depth arguments do not apply; given remappings do.
    assert spec.remappings == [("front/image", "/cam_f/rgb"), ("left/depth", "/cam_l/depth")]
    args = spec.ros_args()
    assert "cameras:=[front,left]" in args and "front/image:=/cam_f/rgb" in args
    assert node_launch_spec({"cameras": "front,left"}, "/s").overrides["cameras"] == ["front", "left"]
    assert "cameras" not in node_launch_spec({"cameras": ""}, "/s").overrides


def test_a_malformed_remapping_is_named():
    import pytest

    with pytest.raises(ValueError, match="'front/image' is not 'from:=to'"):
        node_launch_spec({"remappings": "front/image"}, "/s")
