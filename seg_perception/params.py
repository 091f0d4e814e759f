"""Every tunable of the node and the offline tools, declared once.

The node declares these as ROS parameters (with descriptions and ranges); the
offline tools (demo, bag regression, benchmark) read the same YAML file through
``load_params_yaml`` so a value tuned on the robot reaches them unchanged.
No ROS imports here: the tools run without ROS.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, TypeVar, Union

import yaml

Value = Union[bool, int, float, str, list]
D = TypeVar("D")


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Value
    description: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    # Integer parameters only: allowed values are min, min + step, ... (rclpy enforces
    # it through the descriptor's IntegerRange step; e.g. odd window sizes).
    step: int | None = None
    # When a change takes effect: "frame" (the next frame), "configure" (the next
    # configure transition: model and backend), "activate" (the next activate:
    # subscriptions) or "start" (read-only: only at start-up).
    applies: str = "frame"

    @property
    def read_only(self) -> bool:
        return self.applies == "start"

    def check(self, value: Any) -> str | None:
        """Return why ``value`` is not acceptable, or None if it is."""
        expected = type(self.default)
        if expected is list:
            return self._check_names(value)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            return f"{self.name} must be {expected.__name__}, got {type(value).__name__} {value!r}"
        if self.min is not None and value < self.min:
            return f"{self.name}={value} is below the minimum {self.min}"
        if self.max is not None and value > self.max:
            return f"{self.name}={value} is above the maximum {self.max}"
        if self.step and (value - self.min) % self.step:
            return f"{self.name}={value} is not {self.min:g} plus a multiple of {self.step}"
        if self.choices and value not in self.choices:
            return f"{self.name}={value!r} is not one of {', '.join(self.choices)}"
        return None

    def _check_names(self, value: Any) -> str | None:
        """A list of camera names (``cameras``): each a relative ROS name, none twice.
        None is the empty list (rclpy reads ``[]`` in a params file as not set)."""
        if value is None:
            return None
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            return f"{self.name} must be a list of strings, got {type(value).__name__} {value!r}"
        for name in value:
            if not CAMERA_NAME.fullmatch(name):
                return (f"{self.name}: {name!r} is not a relative topic name (letters, digits, '_' and inner '/', "
                        "starting with a letter)")
        if len(set(value)) != len(value):
            return f"{self.name} names a camera twice: {list(value)}"
        return None


# A camera name prefixes its topics (``front/image``): a relative ROS name.
CAMERA_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*(/[A-Za-z][A-Za-z0-9_]*)*")


PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("autostart", True, "Configure and activate on start-up, without a lifecycle manager.", applies="start"),
    # Model and backend
    ParamSpec("model_path", "", "ONNX model, TensorRT engine or .pth checkpoint; its metadata JSON lies beside it. Empty: the shipped default model.", applies="configure"),
    ParamSpec("backend", "auto", "Inference backend; 'auto' picks the fastest one installed.", choices=("auto", "onnxruntime", "tensorrt", "torch"), applies="configure"),
    ParamSpec("device", "cpu", "Device for the torch/onnxruntime backends: 'cpu', 'cuda' or 'cuda:N'.", applies="configure"),
    ParamSpec("precision", "fp32", "Numeric precision where the backend supports it.", choices=("fp32", "fp16", "int8"), applies="configure"),
    ParamSpec("threads", 0, "CPU threads for inference; 0 lets the backend decide.", min=0, max=256, applies="configure"),
    # Post-processing
    ParamSpec("score_threshold", 0.3, "Minimum class score of a published instance; with tracking on, an instance that continues a track is published down to tracking_low_score (tracks start only at this score or above).", min=0.0, max=1.0),
    ParamSpec("nms_iou_threshold", 0.5, "Box IoU above which Fast NMS suppresses the lower-scored instance of a class.", min=0.0, max=1.0),
    ParamSpec("top_k", 200, "Candidates per class kept for NMS.", min=1, max=5000),
    ParamSpec("max_detections", 100, "Most instances published per image.", min=1, max=1000),
    ParamSpec("mask_threshold", 0.5, "Mask probability above which a pixel belongs to the instance.", min=0.01, max=0.99),
    ParamSpec("class_agnostic_nms", False, "Suppress overlapping instances across classes, not only within one."),
    ParamSpec("nms_candidate_threshold", 0.05, "A prior takes part in NMS (with all its classes) only if its best class score exceeds this; the official YOLACT nms_conf_thresh. Matters only when score_threshold is lower.", min=0.0, max=1.0),
    ParamSpec("nms_second_threshold", False, "Also drop (prior, class) pairs at or below nms_candidate_threshold before NMS (official fast_nms second_threshold; off as in the official evaluation)."),
    ParamSpec("clip_boxes_before_nms", False, "YOLACT deviation from the official code: clip boxes to the image before NMS (this package's earlier behaviour; changes which border boxes survive)."),
    ParamSpec("box_region_masks", False, "YOLACT deviation from the official code: cut masks to the box's pixel region instead of cropping at prototype resolution with one pixel of padding (masks then end at the box). Always on for models whose metadata has mask_crop \"box\" (trained by seg_perception)."),
    ParamSpec("keypoint_score_threshold", 0.3, "Keypoints below this score are drawn as missing (they are still published).", min=0.0, max=1.0),
    # Outputs
    ParamSpec("mask_encoding", "coco_rle", "Encoding of InstanceMask: 'coco_rle' (compact) or 'mono8' (raw bytes).", choices=("coco_rle", "mono8")),
    ParamSpec("publish_debug_image", True, "Publish debug/image (only computed while someone subscribes)."),
    ParamSpec("publish_markers", True, "Publish debug/markers (only computed while someone subscribes)."),
    ParamSpec("marker_depth", 1.0, "Distance (m) of the plane 2D markers are drawn on when no depth is given.", min=0.05, max=100.0),
    ParamSpec("publish_grasp_keypoints", True, "Publish the model-free grasp keypoints (set 'grasp': centroid, grasp_a, grasp_b) of every instance on keypoints."),
    ParamSpec("publish_points", False, "Publish instances/points, the masked depth points of all instances (PointCloud2), while subscribed."),
    ParamSpec("points_stride", 2, "Keep every n-th pixel in x and y for instances/points (bounds the message size).", min=1, max=16),
    ParamSpec("publish_instance_map", False, "Publish instance_map (mono16: Instance.id, or index + 1 with tracking off; 0 = none) while subscribed."),
    ParamSpec("publish_class_map", False, "Publish class_map (mono8: class id + 1; 0 = none) while subscribed."),
    # Tracking
    ParamSpec("tracking_enabled", True, "Give instances ids that are stable across frames (ByteTrack-style tracker on boxes and masks). With tracking on, an instance with a track id is published even below score_threshold (down to tracking_low_score)."),
    ParamSpec("tracking_high_score", 0.5, "Detections at or above this score are matched first and may start tracks.", min=0.0, max=1.0),
    ParamSpec("tracking_low_score", 0.1, "Detections between this and tracking_high_score only extend tracks seen in the previous frame; post-processing keeps candidates down to min(score_threshold, this).", min=0.0, max=1.0),
    ParamSpec("tracking_new_track_score", 0.6, "An unmatched detection needs this score (and score_threshold) to start a track.", min=0.0, max=1.0),
    ParamSpec("tracking_match_iou", 0.2, "Minimum track/detection similarity (box and mask IoU) for a high-score match.", min=0.0, max=1.0),
    ParamSpec("tracking_low_match_iou", 0.4, "Minimum similarity for a low-score detection to extend a track.", min=0.0, max=1.0),
    ParamSpec("tracking_mask_weight", 0.25, "Weight of mask IoU against box IoU in the similarity.", min=0.0, max=1.0),
    ParamSpec("tracking_min_hits", 2, "Consecutive matched frames before a track gets an id.", min=1, max=100),
    ParamSpec("tracking_max_age", 30, "Frames a track survives without a match (occlusion, missed detections).", min=0, max=1000),
    ParamSpec("tracking_class_aware", True, "Only match a track to detections of its own class."),
    ParamSpec("tracking_matcher", "auto", "Assignment: optimal (hungarian, needs SciPy), greedy, or auto (hungarian when SciPy is installed).", choices=("auto", "hungarian", "greedy")),
    # 3D from registered depth
    ParamSpec("depth_sync_slop", 0.02, "Largest stamp difference (s) at which a depth image pairs with a colour image; without a pair the frame is published without 3D.", min=0.0, max=1.0),
    ParamSpec("depth_wait", 0.1, "Longest time (s) after a colour frame arrived that the node waits for its depth image while depth is streaming (depth often arrives after colour); 0 never waits.", min=0.0, max=1.0),
    ParamSpec("depth_min", 0.1, "Depth readings nearer than this (m) are ignored.", min=0.0, max=100.0),
    ParamSpec("depth_max", 10.0, "Depth readings farther than this (m) are ignored.", min=0.01, max=1000.0),
    ParamSpec("depth_erosion_px", 2, "Radius (px) the mask is eroded by before taking depth, so silhouette pixels on the background are not used.", min=0, max=50),
    ParamSpec("depth_min_points", 20, "Fewer valid depth points in the mask than this and the instance has no 3D.", min=1, max=1_000_000),
    ParamSpec("depth_centroid_method", "median", "Centroid of the masked points: per-axis median (robust to mask bleeding) or depth-gated mean.", choices=("median", "trimmed_mean")),
    ParamSpec("depth_trim_percentile", 90.0, "Percentile of the points' distance in depth from their median depth that scales the outlier gate of the oriented box.", min=1.0, max=100.0),
    ParamSpec("depth_trim_factor", 2.0, "Points deviating from the median depth by more than this times that percentile are left out of the box.", min=0.1, max=100.0),
    ParamSpec("depth_keypoint_window", 5, "Side (px, odd) of the window whose median depth places a keypoint in 3D.", min=1, max=51, step=2),
    # Input
    ParamSpec("cameras", [], "Camera names for several cameras in one node with one model (e.g. [front, left]): each camera's topics are the single-camera names under its name (front/image, front/instances, ...), frames of all cameras run through the network as one batch. Empty: one camera on the plain topic names.", applies="start"),
    ParamSpec("use_compressed", False, "Subscribe to image/compressed (jpeg/png) instead of image.", applies="activate"),
    ParamSpec("input_reliability", "auto", "Input QoS reliability; 'auto' matches what the camera's publishers offer.", choices=("auto", "reliable", "best_effort"), applies="activate"),
    ParamSpec("input_queue_depth", 1, "Input subscription history depth (the node keeps only the newest frame).", min=1, max=100, applies="activate"),
    ParamSpec("max_image_pixels", 7680 * 4320, "Frames with more pixels than this are refused (protects memory).", min=1, max=1 << 30),
    # Diagnostics and logging
    ParamSpec("diagnostics_period", 1.0, "Seconds between /diagnostics messages.", min=0.1, max=60.0),
    ParamSpec("log_throttle_period", 5.0, "Seconds between repeated log lines about the same problem.", min=0.0, max=3600.0),
)

PARAMETERS_BY_NAME = {p.name: p for p in PARAMETERS}


def defaults() -> dict[str, Value]:
    return {p.name: list(p.default) if isinstance(p.default, list) else p.default for p in PARAMETERS}


def applying_on(when: str, names: set[str] | Mapping[str, Any]) -> set[str]:
    """Those of ``names`` whose change takes effect at ``when`` (``ParamSpec.applies``):
    the node hands "frame" parameters to the frame processor at once; the others are
    read by the next configure or activate transition."""
    return {n for n in names if n in PARAMETERS_BY_NAME and PARAMETERS_BY_NAME[n].applies == when}


def to_dataclass(cls: type[D], values: Mapping[str, Any], prefix: str = "",
                 renames: Mapping[str, str] | None = None) -> D:
    """An instance of the dataclass ``cls`` (a core parameter object) from the parameters
    named ``prefix + field`` (or ``renames[field]``), each converted to its spec's type
    (a ROS parameter may hold 1 for 1.0); fields without such a parameter keep their
    default. The one mapping from parameters to the core's parameter objects; the
    dataclass's own checks raise ValueError for a bad combination."""
    renames = renames or {}
    kwargs = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        name = renames.get(f.name, prefix + f.name)
        spec = PARAMETERS_BY_NAME.get(name)
        if spec is not None:
            kwargs[f.name] = type(spec.default)(values[name])
    return cls(**kwargs)


# Parameters rclpy itself owns; a params file for the node may set them.
ROS_OWN_PARAMETERS = ("use_sim_time", "start_type_description_service", "start_parameter_event_publisher")


def is_ros_own(name: str) -> bool:
    """A parameter rclpy owns (not ours to check)."""
    return name in ROS_OWN_PARAMETERS or name.startswith("qos_overrides.")


def unknown_parameter_problem(name: str) -> str:
    """``unknown parameter 'x'`` with the closest known name, so a typo in a params file is found.

    A misspelt parameter is otherwise silently ignored by a ROS node (the default runs).
    """
    import difflib

    close = difflib.get_close_matches(name, list(PARAMETERS_BY_NAME), n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else " (see config/seg_perception.yaml for the known ones)"
    return f"unknown parameter '{name}'{hint}"


def unknown_parameters(names: Iterable[str]) -> list[tuple[str, str]]:
    """``(name, problem sentence)`` per name that is neither ours nor rclpy's, in sorted order."""
    return [(n, unknown_parameter_problem(n)) for n in sorted(names)
            if n not in PARAMETERS_BY_NAME and not is_ros_own(n)]


def validate(values: dict[str, Any]) -> dict[str, Value]:
    """Check names, types and ranges; return the values merged over the defaults."""
    merged = defaults()
    problems = []
    for name, value in values.items():
        spec = PARAMETERS_BY_NAME.get(name)
        if is_ros_own(name):
            continue
        if spec is None:
            problems.append(unknown_parameter_problem(name))
            continue
        why = spec.check(value)
        if why:
            problems.append(why)
        elif isinstance(spec.default, list):
            merged[name] = list(value or [])
        else:
            merged[name] = float(value) if isinstance(spec.default, float) else value
    if problems:
        raise ValueError("; ".join(problems))
    return merged


def load_params_yaml(path: str | Path, node_name: str = "seg_perception_node") -> dict[str, Value]:
    """Read a ROS 2 parameter file (``node: ros__parameters: {...}``) for the offline tools.

    Entries for ``/**`` and for ``node_name`` (with or without a namespace) are
    merged in file order; the result is validated and merged over the defaults.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise FileNotFoundError(f"parameter file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"parameter file {path} is not valid YAML: {exc}") from None
    values: dict[str, Any] = {}
    for key, section in raw.items():
        if not isinstance(section, dict) or "ros__parameters" not in section:
            continue
        if key in ("/**", node_name) or str(key).rstrip("/").split("/")[-1] == node_name:
            values.update(_flatten(section["ros__parameters"] or {}))
    try:
        return validate(values)
    except ValueError as exc:
        raise ValueError(f"parameter file {path}: {exc}") from None


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def markdown_table() -> str:
    """The parameter table of docs/parameters.md, generated so it cannot drift from the declarations."""
    when = {"frame": "next frame", "configure": "next configure", "activate": "next activate", "start": "start-up only"}
    rows = ["| name | default | range / choices | applies | description |", "| --- | --- | --- | --- | --- |"]
    for p in PARAMETERS:
        rng = f"{p.min:g} .. {p.max:g}" if p.min is not None else ", ".join(p.choices)
        if p.step:
            rng += f" (step {p.step})"
        d = p.default
        dv = '""' if d == "" else (str(d).lower() if isinstance(d, bool) else str(d))
        rows.append(f"| `{p.name}` | `{dv}` | {rng} | {when[p.applies]} | {p.description} |")
    return "\n".join(rows) + "\n"
