"""What ``seg_perception.launch.py`` passes to the node, as a pure function.

The launch file and the tests both call ``node_launch_spec``, so the test that
starts the node process (``ros2 launch`` cannot run on the CI machines) starts it
with exactly the parameters and remappings the launch file would pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# name -> (default, description); the launch file declares each of these.
LAUNCH_ARGUMENTS: dict[str, tuple[str, str]] = {
    "namespace": ("", "Namespace of the node and its relative topics."),
    "node_name": ("seg_perception_node", "Name of the node."),
    "image": ("/camera/color/image_raw", "Colour image topic (sensor_msgs/Image); image/compressed is <image>/compressed."),
    "camera_info": ("/camera/color/camera_info", "CameraInfo topic of the colour image."),
    "depth": ("/camera/aligned_depth_to_color/image_raw", "Depth image registered to the colour image (16UC1 mm or 32FC1 m)."),
    "depth_camera_info": ("/camera/aligned_depth_to_color/camera_info", "CameraInfo of the depth image."),
    "cameras": ("", "Several cameras in one node with one model: names as '[front, left]' or 'front,left'. "
                    "Each camera's topics are <name>/image, <name>/camera_info, <name>/depth, "
                    "<name>/depth/camera_info in and <name>/instances, ... out (remap them with 'remappings'); "
                    "the image/camera_info/depth arguments then do not apply. Empty: one camera."),
    "remappings": ("", "Extra remappings 'from:=to', separated by ';' (e.g. "
                       "'front/image:=/front_cam/color/image_raw;left/image:=/left_cam/color/image_raw')."),
    "use_compressed": ("false", "Subscribe to <image>/compressed (jpeg/png) instead of the raw image."),
    "params_file": ("", "Parameter YAML file; empty: the package's config/seg_perception.yaml."),
    "backend": ("", "Override the backend parameter (auto, onnxruntime, tensorrt, torch); empty: keep the file's."),
    "model_path": ("", "Override the model_path parameter; empty: keep the file's."),
    "rviz": ("false", "Also start RViz with config/seg_perception.rviz."),
    "log_level": ("info", "Logging level of the node."),
}


@dataclass
class NodeLaunchSpec:
    name: str
    namespace: str
    params_file: str
    overrides: dict[str, object] = field(default_factory=dict)
    remappings: list[tuple[str, str]] = field(default_factory=list)
    log_level: str = "info"

    def ros_args(self) -> list[str]:
        """The same as command-line arguments (what ``ros2 run ... --ros-args`` takes)."""
        args = ["--ros-args", "-r", f"__node:={self.name}"]
        if self.namespace:
            args += ["-r", f"__ns:={self.namespace if self.namespace.startswith('/') else '/' + self.namespace}"]
        args += ["--params-file", self.params_file]
        for key, value in self.overrides.items():
            if isinstance(value, list):
                text = "[" + ",".join(str(v) for v in value) + "]"
            else:
                text = str(value).lower() if isinstance(value, bool) else str(value)
            args += ["-p", f"{key}:={text}"]
        for src, dst in self.remappings:
            args += ["-r", f"{src}:={dst}"]
        args += ["--log-level", self.log_level]
        return args


def _truthy(text: str) -> bool:
    return text.strip().lower() in ("1", "true", "yes", "on")


def camera_names(text: str) -> list[str]:
    """The ``cameras`` argument ('[front, left]', 'front,left' or 'front left') as a list."""
    names = (name.strip("'\"") for name in text.strip().strip("[]").replace(",", " ").split())
    return [name for name in names if name]


def extra_remappings(text: str) -> list[tuple[str, str]]:
    """The ``remappings`` argument ('a:=b;c:=d') as pairs; ValueError naming a malformed one."""
    pairs = []
    for item in (part.strip() for part in text.split(";")):
        if not item:
            continue
        src, sep, dst = item.partition(":=")
        if not sep or not src.strip() or not dst.strip():
            raise ValueError(f"remappings: {item!r} is not 'from:=to'")
        pairs.append((src.strip(), dst.strip()))
    return pairs


def node_launch_spec(values: dict[str, str], share_dir: str | Path) -> NodeLaunchSpec:
    """Turn launch-argument strings (defaults filled in) into the node's settings."""
    v = {k: d for k, (d, _) in LAUNCH_ARGUMENTS.items()}
    v.update({k: str(x) for k, x in values.items()})
    params_file = v["params_file"] or str(Path(share_dir) / "config" / "seg_perception.yaml")
    overrides: dict[str, object] = {"use_compressed": _truthy(v["use_compressed"])}
    if v["backend"]:
        overrides["backend"] = v["backend"]
    if v["model_path"]:
        overrides["model_path"] = v["model_path"]
    cameras = camera_names(v["cameras"])
    if cameras:
        overrides["cameras"] = cameras
        remappings: list[tuple[str, str]] = []  # each camera's topics stay relative, under its name
    else:
        image = v["image"]
        remappings = [
            ("image", image),
            ("image/compressed", f"{image}/compressed"),
            ("camera_info", v["camera_info"]),
            ("depth", v["depth"]),
            ("depth/camera_info", v["depth_camera_info"]),
        ]
    remappings += extra_remappings(v["remappings"])
    return NodeLaunchSpec(name=v["node_name"], namespace=v["namespace"], params_file=params_file,
                          overrides=overrides, remappings=remappings, log_level=v["log_level"])
