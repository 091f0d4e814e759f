"""``seg_perception_node``: camera frames in, instance masks and keypoints out.

A lifecycle node (configure: load the model; activate: start topics) that stays
thin: it converts messages at the edge and calls ``SegmentationPipeline`` and the
core (tracking, grasp keypoints, 3D from registered depth, dense maps).
Two worker threads: "inference" always takes the newest frame (so latency stays
bounded when the camera is faster than the model) and runs the network; "outputs"
post-processes, tracks, adds 3D and publishes the previous frame meanwhile.

Depth: depth images are only buffered on arrival (``DepthPairing``); the outputs
thread pairs a colour frame with the depth image of the nearest stamp (within
``depth_sync_slop``) and decodes only that one. Depth often arrives a little after
colour, so the pairing is tried again after inference and, while a depth stream is
live, waited for up to ``depth_wait`` after the colour frame arrived.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import rclpy
from rcl_interfaces.msg import (
    FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult,
)
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from diagnostic_msgs.msg import DiagnosticArray
from visualization_msgs.msg import MarkerArray

try:  # Jazzy and later
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks

from seg_perception import params as param_specs
from seg_perception.core.depth3d import CameraIntrinsics, Depth3DParams, DepthSizeError, valid_depth
from seg_perception.core.drawing import draw_overlay
from seg_perception.core.frame_outputs import (DEPTH_PARAMETERS, DepthPairing, Frame3D, TrackingStage,
                                               cloud_points, depth3d_params_from, frame_3d, scaled_intrinsics,
                                               stamp_to_ns, tracker_params_from)
from seg_perception.core.grasp import grasp_keypoints
from seg_perception.core.image import ImageDecodeError
from seg_perception.core.maps import class_map, instance_map
from seg_perception.core.metadata import ModelMetadata
from seg_perception.core.postprocess import PostprocessParams
from seg_perception.core.tracking import TrackerParams
from seg_perception.core.types import Detections
from seg_perception.msg import InstanceArray, ModelInfo, PoseKeypointsArray
from seg_perception.pipeline import SegmentationPipeline, load_pipeline, postprocess_params_from
from seg_perception.ros import conversions, qos
from seg_perception.ros.diagnostics import ERROR, OK, WARN, ProblemBook, build_status, diagnostic_array
from seg_perception.ros.visualization import detections_to_markers, intrinsics_or_guess
from seg_perception.streaming import HandOff, LatestSlot, RollingStats

NODE_NAME = "seg_perception_node"
# Parameters whose change takes effect on the next frame (the rest need reconfigure).
_POSTPROCESS_PARAMS = {"score_threshold", "nms_iou_threshold", "top_k", "max_detections",
                       "mask_threshold", "class_agnostic_nms", "tracking_enabled", "tracking_low_score"}


def _camera_info_problem(msg: CameraInfo) -> str | None:
    """Why a CameraInfo cannot place pixels in 3D (no size, zero/non-finite K), or None."""
    if msg.width == 0 or msg.height == 0:
        return "no image size"
    try:
        CameraIntrinsics.from_k(msg.k)
    except ValueError as exc:
        return str(exc)
    return None


def _info_size(info: CameraInfo | None) -> str:
    return "none" if info is None else f"{info.width}x{info.height}"


def _descriptor(spec: param_specs.ParamSpec) -> ParameterDescriptor:
    desc = spec.description
    if spec.choices:
        desc += f" One of: {', '.join(spec.choices)}."
    # dynamic_typing: a value of the wrong type reaches our callback, which refuses
    # it with a reason naming the parameter (rclpy's own check says only "Wrong
    # parameter type, expected '2' got '4'").
    d = ParameterDescriptor(description=desc, read_only=spec.read_only, dynamic_typing=True)
    if spec.min is not None and isinstance(spec.default, float):
        d.floating_point_range = [FloatingPointRange(from_value=float(spec.min), to_value=float(spec.max), step=0.0)]
    elif spec.min is not None and isinstance(spec.default, int) and not isinstance(spec.default, bool):
        d.integer_range = [IntegerRange(from_value=int(spec.min), to_value=int(spec.max), step=int(spec.step or 1))]
    return d


@dataclass
class _InferredFrame:
    """A frame between the two worker threads: the network has run, nothing is published yet."""

    header: Any
    rgb: np.ndarray
    pipeline: SegmentationPipeline  # the one that ran it (a reconfigure may swap the node's)
    raw: dict[str, np.ndarray]
    received: float
    early_depth: tuple[int, Image] | None


class SegPerceptionNode(LifecycleNode):
    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._problems = ProblemBook()
        self._declare_parameters()
        self._check_parameter_groups()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._problems.throttle = self.p("log_throttle_period")

        self._pipeline: SegmentationPipeline | None = None
        # (message, monotonic receipt time, depth paired on arrival or None)
        self._slot: LatestSlot[tuple[Any, float, Any]] = LatestSlot()
        self._handoff: HandOff[_InferredFrame] = HandOff()
        self._workers: list[threading.Thread] = []
        self._stop = threading.Event()
        self._subs: list = []
        self._pubs: dict[str, Any] = {}
        self._camera_info: CameraInfo | None = None
        self._depth_camera_info: CameraInfo | None = None
        self._input_reliability = None
        self._depth_reliability = None
        self._depth_sub = None
        # Depth pairing: the executor thread adds, the worker pairs (and may wait briefly).
        self._depth: DepthPairing[Image] = DepthPairing(self._slop_ns(self.p("depth_sync_slop")))
        self._frames_with_3d = 0
        self._tracker: TrackingStage | None = None  # kept while tracking is off (ids never restart)
        self._tracking: TrackingStage | None = None  # the tracker in use; None: tracking off
        self._depth_params: Depth3DParams = depth3d_params_from(self.param_values())
        self._graph_timer = None
        self._last_stamp_ns: int | None = None
        self._input_stats = RollingStats()
        self._output_stats = RollingStats()
        self._latency = RollingStats()
        self._processed = 0

        # Diagnostics run in every state, so a model that fails to load is reported.
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(self.p("diagnostics_period"), self._publish_diagnostics)

    # ------------------------------------------------------------------ parameters
    def _declare_parameters(self) -> None:
        for spec in param_specs.PARAMETERS:
            try:
                self.declare_parameter(spec.name, spec.default, _descriptor(spec))
            except Exception as exc:  # wrong type or out of range in the params file
                self.declare_parameter(spec.name, spec.default, _descriptor(spec), ignore_override=True)
                self._report(f"parameter.{spec.name}", ERROR, f"{exc}; using the default {spec.default!r}")
            why = spec.check(self.get_parameter(spec.name).value)
            if why:  # e.g. a string outside its choices, which rclpy cannot range-check
                self._report(f"parameter.{spec.name}", ERROR, f"{why}; using the default {spec.default!r}")
                self.set_parameters([rclpy.parameter.Parameter(spec.name, value=spec.default)])

    def _check_parameter_groups(self) -> None:
        """Constraints between parameters (depth_min < depth_max, tracking_low_score <=
        tracking_high_score, an odd window) that no single range expresses: a params
        file that breaks one is reported and that group falls back to its defaults."""
        for group, build in (("depth", depth3d_params_from), ("tracking", tracker_params_from)):
            try:
                build(self.param_values())
            except ValueError as exc:
                names = [n for n in param_specs.PARAMETERS_BY_NAME if n.startswith(f"{group}_")]
                self._report(f"parameter.{group}", ERROR, f"{exc}; using the defaults of the {group}_* parameters")
                self.set_parameters([rclpy.parameter.Parameter(n, value=param_specs.PARAMETERS_BY_NAME[n].default)
                                     for n in names])

    @staticmethod
    def _slop_ns(seconds: float) -> int:
        return int(round(float(seconds) * 1e9))

    def p(self, name: str) -> Any:
        return self.get_parameter(name).value

    def param_values(self) -> dict[str, Any]:
        return {spec.name: self.p(spec.name) for spec in param_specs.PARAMETERS}

    def _on_set_parameters(self, parameters: list) -> SetParametersResult:
        for param in parameters:
            spec = param_specs.PARAMETERS_BY_NAME.get(param.name)
            if spec is None:
                continue
            why = spec.check(param.value)
            if why:
                self._report(f"parameter.{spec.name}", WARN, f"refused parameter update: {why}")
                return SetParametersResult(successful=False, reason=why)
        changed = {prm.name: prm.value for prm in parameters}
        values = {**self.param_values(), **changed}
        # Checked together, before anything changes: a bad combination is refused whole.
        try:
            depth_params = depth3d_params_from(values)
            tracker_params = tracker_params_from(values)
        except ValueError as exc:
            self._report("parameter.combination", WARN, f"refused parameter update: {exc}")
            return SetParametersResult(successful=False, reason=str(exc))
        if DEPTH_PARAMETERS.keys() & changed.keys():
            self._depth_params = depth_params
        if "depth_sync_slop" in changed:
            self._depth.slop_ns = self._slop_ns(changed["depth_sync_slop"])
        if self._pipeline is not None and any(n.startswith("tracking_") for n in changed):
            self._tracking = self._tracking_stage(values, tracker_params)
        if self._pipeline is not None and _POSTPROCESS_PARAMS & changed.keys():
            self._pipeline.params = self._postprocess_params(values)
        if "log_throttle_period" in changed:
            self._problems.throttle = float(changed["log_throttle_period"])
        return SetParametersResult(successful=True)

    def _postprocess_params(self, values: dict[str, Any]) -> PostprocessParams:
        """Post-processing keeps candidates down to the tracker's low score when tracking is on."""
        tracker = tracker_params_from(values) if values["tracking_enabled"] else None
        threshold = TrackingStage.detection_threshold(values["score_threshold"], tracker)
        return postprocess_params_from({**values, "score_threshold": threshold})

    def _tracking_stage(self, values: dict[str, Any], params: TrackerParams | None = None) -> TrackingStage | None:
        """The tracker for these parameters (None with tracking off). One tracker lives as
        long as the node and is reset with new parameters rather than replaced, so ids
        keep counting up across parameter changes, tracking off/on and reconfiguration:
        an id is never given to a second object."""
        params = params or tracker_params_from(values)
        if self._tracker is None:
            self._tracker = TrackingStage(params)
        else:
            self._tracker.reconfigure(params)
        return self._tracker if values["tracking_enabled"] else None

    # ------------------------------------------------------------------ problems
    def _report(self, kind: str, level: int, message: str) -> None:
        line = self._problems.report(kind, level, message)
        if line is None:
            return
        # One call site per severity: rclpy refuses a second severity from the same line
        # ("Logger severity cannot be changed between calls").
        if level >= ERROR:
            self.get_logger().error(line)
        else:
            self.get_logger().warning(line)

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        values = self.param_values()
        try:
            self._pipeline = load_pipeline(values)
        except Exception as exc:  # missing/corrupt model, missing backend: say which
            self._report("model", ERROR, f"cannot load the model: {exc}")
            return TransitionCallbackReturn.FAILURE
        self._problems.clear("model")
        self._pipeline.params = self._postprocess_params(values)
        self._tracking = self._tracking_stage(values)
        md = self._pipeline.metadata
        self.get_logger().info(
            f"model '{md.name}' ({md.architecture}, {md.input_width}x{md.input_height}, "
            f"{md.num_classes} classes, {md.num_keypoints} keypoints) on {self._pipeline.backend.name}")
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._pubs = {
            "instances": self.create_lifecycle_publisher(InstanceArray, "instances", 10),
            "keypoints": self.create_lifecycle_publisher(PoseKeypointsArray, "keypoints", 10),
            "model_info": self.create_lifecycle_publisher(ModelInfo, "model_info", latched),
            "debug_image": self.create_lifecycle_publisher(Image, "debug/image", 2),
            "markers": self.create_lifecycle_publisher(MarkerArray, "debug/markers", 2),
            "points": self.create_lifecycle_publisher(PointCloud2, "instances/points", 2),
            "instance_map": self.create_lifecycle_publisher(Image, "instance_map", 2),
            "class_map": self.create_lifecycle_publisher(Image, "class_map", 2),
        }
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)  # activates the lifecycle publishers
        backend = self._pipeline.backend
        info = conversions.model_info_msg(
            self._pipeline.metadata, backend.name, getattr(backend, "device", self.p("device")),
            backend.precision, str(getattr(backend, "model_path", self.p("model_path"))))
        info.header.stamp = self.get_clock().now().to_msg()
        self._pubs["model_info"].publish(info)
        self._depth.reset()  # depth from before a deactivate must not pair with new frames
        self._create_input_subscriptions()
        self._graph_timer = self.create_timer(1.0, self._check_input_qos)
        self._stop.clear()
        self._slot, self._handoff = LatestSlot(), HandOff()
        self._workers = [threading.Thread(target=self._inference_loop, name="seg_perception_inference", daemon=True),
                         threading.Thread(target=self._output_loop, name="seg_perception_outputs", daemon=True)]
        for worker in self._workers:
            worker.start()
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_worker()
        self._destroy_input_subscriptions()
        if self._graph_timer is not None:
            self.destroy_timer(self._graph_timer)
            self._graph_timer = None
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        for pub in self._pubs.values():
            self.destroy_lifecycle_publisher(pub) if hasattr(self, "destroy_lifecycle_publisher") else self.destroy_publisher(pub)
        self._pubs = {}
        if self._pipeline is not None:
            self._pipeline.close()
            self._pipeline = None
        self._tracking = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_worker()
        self._destroy_input_subscriptions()
        if self._pipeline is not None:
            self._pipeline.close()
            self._pipeline = None
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_worker()
        return TransitionCallbackReturn.SUCCESS

    def _stop_worker(self) -> None:
        self._stop.set()
        self._slot.close()
        self._handoff.close()
        self._depth.close()  # wakes a worker waiting for depth
        for worker in self._workers:
            worker.join(timeout=5.0)
        self._workers = []

    # ------------------------------------------------------------------ input
    def _image_topic(self) -> tuple[type, str]:
        if self.p("use_compressed"):
            return CompressedImage, "image/compressed"
        return Image, "image"

    def _create_input_subscriptions(self) -> None:
        msg_type, topic = self._image_topic()
        resolved = self.resolve_topic_name(topic)
        setting = self.p("input_reliability")
        self._input_reliability = qos.choose_reliability(setting, qos.offered_reliabilities(self, resolved))
        callbacks = SubscriptionEventCallbacks(incompatible_qos=lambda e: self._on_incompatible_qos(e, topic))
        self._subs = [
            self.create_subscription(msg_type, topic, self._on_image,
                                     qos.input_qos(self._input_reliability, self.p("input_queue_depth")),
                                     event_callbacks=callbacks),
            self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, 5),
            self.create_subscription(CameraInfo, "depth/camera_info", self._on_depth_camera_info, 5),
        ]
        self._create_depth_subscription()
        self.get_logger().info(
            f"listening on {resolved} ({qos.reliability_name(self._input_reliability)}, reliability={setting}); "
            f"depth (optional) on {self.resolve_topic_name('depth')}")

    def _create_depth_subscription(self) -> None:
        """The depth image gets the same QoS policy as the colour image (its own match)."""
        offered = qos.offered_reliabilities(self, self.resolve_topic_name("depth"))
        self._depth_reliability = qos.choose_reliability(self.p("input_reliability"), offered)
        callbacks = SubscriptionEventCallbacks(incompatible_qos=lambda e: self._on_incompatible_qos(e, "depth"))
        self._depth_sub = self.create_subscription(
            Image, "depth", self._on_depth, qos.input_qos(self._depth_reliability, self.p("input_queue_depth")),
            event_callbacks=callbacks)

    def _destroy_input_subscriptions(self) -> None:
        for sub in self._subs + ([self._depth_sub] if self._depth_sub is not None else []):
            self.destroy_subscription(sub)
        self._subs = []
        self._depth_sub = None

    def _check_input_qos(self) -> None:
        """Re-match the input reliability when the camera's publishers change (auto mode)."""
        if self.p("input_reliability") != "auto" or not self._subs:
            return
        for topic, current in ((self._image_topic()[1], self._input_reliability), ("depth", self._depth_reliability)):
            resolved = self.resolve_topic_name(topic)
            offered = qos.offered_reliabilities(self, resolved)
            if not offered:
                continue
            wanted = qos.choose_reliability("auto", offered)
            if wanted == current:
                continue
            self.get_logger().info(
                f"publishers on {resolved} now offer {', '.join(sorted({qos.reliability_name(r) for r in offered}))};"
                f" resubscribing {qos.reliability_name(wanted)}")
            if topic == "depth":
                self.destroy_subscription(self._depth_sub)
                self._create_depth_subscription()
            else:
                self._destroy_input_subscriptions()
                self._create_input_subscriptions()
                return

    def _on_incompatible_qos(self, event: Any, topic: str) -> None:
        resolved = self.resolve_topic_name(topic)
        current = self._depth_reliability if topic == "depth" else self._input_reliability
        self._report("qos", WARN,
                     f"a publisher on {resolved} offers QoS incompatible with this subscription "
                     f"({qos.reliability_name(current)}; last policy: {event.last_policy_kind}). "
                     "Fix: set input_reliability:=auto or best_effort, or make the camera publish reliable.")

    def _on_camera_info(self, msg: CameraInfo) -> None:
        why = _camera_info_problem(msg)
        if why:
            k = msg.k
            self._report("camera_info", WARN,
                         f"ignoring camera_info on {self.resolve_topic_name('camera_info')}: size {msg.width}x{msg.height}, "
                         f"fx={k[0]}, fy={k[4]} (needs a size and positive focal lengths)")
            self._camera_info = None
            return
        self._camera_info = msg

    def _on_depth_camera_info(self, msg: CameraInfo) -> None:
        why = _camera_info_problem(msg)
        if why:
            self._report("depth_camera_info", WARN,
                         f"ignoring depth camera_info on {self.resolve_topic_name('depth/camera_info')}: size "
                         f"{msg.width}x{msg.height}, fx={msg.k[0]}, fy={msg.k[4]} ({why}); 3D needs a calibrated camera")
            self._depth_camera_info = None
            return
        self._depth_camera_info = msg

    def _on_image(self, msg: Image | CompressedImage) -> None:
        self._input_stats.add()
        # Pair with depth now too: a slow model must not find its depth image evicted.
        early = self._depth.early(stamp_to_ns(msg.header.stamp.sec, msg.header.stamp.nanosec))
        self._slot.put((msg, time.monotonic(), early))

    def _on_depth(self, msg: Image) -> None:
        """Only buffered here; decoded by the worker once a colour frame pairs with it."""
        self._depth.add(stamp_to_ns(msg.header.stamp.sec, msg.header.stamp.nanosec), msg)

    # ------------------------------------------------------------------ processing
    # Two threads: "inference" decodes a frame and runs the network, "outputs" post-processes,
    # tracks, adds 3D and publishes it. The network of one frame overlaps the outputs of the
    # previous one; the one-item hand-off between them keeps frames in order.
    def _inference_loop(self) -> None:
        while not self._stop.is_set():
            item = self._slot.take(timeout=0.2)
            if item is None:
                continue
            try:
                frame = self._infer(*item)
            except Exception as exc:  # never let one frame kill the node
                self._report("inference", ERROR, f"frame failed: {type(exc).__name__}: {exc}")
                continue
            if frame is not None:
                self._handoff.put(frame)

    def _output_loop(self) -> None:
        while not self._stop.is_set():
            frame = self._handoff.take(timeout=0.2)
            if frame is None:
                continue
            try:
                self._finish(frame)
            except Exception as exc:  # never let one frame kill the node
                self._report("inference", ERROR, f"frame failed: {type(exc).__name__}: {exc}")

    def _infer(self, msg: Image | CompressedImage, received: float,
               early_depth: tuple[int, Image] | None) -> _InferredFrame | None:
        pipeline = self._pipeline
        if pipeline is None:
            return None
        self._check_header(msg)
        try:
            rgb = conversions.image_to_rgb(msg, self.p("max_image_pixels"))
        except ImageDecodeError as exc:
            self._report("input", WARN, f"dropped a frame on {self.resolve_topic_name(self._image_topic()[1])}: {exc}")
            return None
        return _InferredFrame(msg.header, rgb, pipeline, pipeline.forward(rgb), received, early_depth)

    def _finish(self, frame: _InferredFrame) -> None:
        rgb = frame.rgb
        height, width = rgb.shape[:2]
        stamp_ns = stamp_to_ns(frame.header.stamp.sec, frame.header.stamp.nanosec)
        detections = frame.pipeline.decode(frame.raw, (height, width))
        tracking = self._tracking
        if tracking is not None:
            detections = tracking.update(detections, stamp_ns, (height, width), self.p("score_threshold"))
        grasp = grasp_keypoints(detections.masks).keypoints if self.p("publish_grasp_keypoints") else None
        depth_msg = self._paired_depth(stamp_ns, frame.received, frame.early_depth)
        intrinsics = self._intrinsics_3d(width, height)  # after the pairing: its camera_info may come with it
        frame3d = self._frame_3d(detections, grasp, depth_msg, intrinsics, (height, width))
        self._publish_outputs(frame.pipeline.metadata, frame.header, rgb, detections, grasp, frame3d, intrinsics, tracking is not None)
        self._processed += 1
        self._frames_with_3d += frame3d is not None
        self._output_stats.add()
        self._latency.add(time.monotonic() - frame.received)
        self._problems.clear("inference")

    def _paired_depth(self, stamp_ns: int, received: float, early: tuple[int, Image] | None) -> Image | None:
        """The depth image paired with this frame (``DepthPairing``), or None; no pair
        despite a live depth stream is reported: usually depth and colour are stamped
        by different clocks."""
        pairing = self._depth.pair(stamp_ns, received + float(self.p("depth_wait")), early)
        if pairing.depth is None and pairing.live:
            newest = pairing.newest_ns
            offset = "" if newest is None else f"; the newest depth image is {(newest - stamp_ns) / 1e9:+.3f} s from it"
            self._report("depth_sync", WARN,
                         f"no depth image on {self.resolve_topic_name('depth')} within depth_sync_slop="
                         f"{self.p('depth_sync_slop')} s of the colour image{offset}; publishing without 3D "
                         "(do depth and colour share a clock? else raise depth_sync_slop or depth_wait)")
        return pairing.depth

    def _frame_3d(self, detections: Detections, grasp: np.ndarray | None, depth_msg: Image | None,
                  intrinsics: CameraIntrinsics | None, image_size: tuple[int, int]) -> Frame3D | None:
        """3D of the published instances, or None (reported) when this frame has none."""
        if depth_msg is None:
            return None
        topic = self.resolve_topic_name("depth")
        if intrinsics is None:
            self._report("depth", WARN, f"depth arrives on {topic} but no usable camera_info (colour or depth) "
                         f"describes the {image_size[1]}x{image_size[0]} image; publishing without 3D")
            return None
        try:
            depth = conversions.depth_to_metres(depth_msg, self.p("max_image_pixels"))
        except ImageDecodeError as exc:
            self._report("depth", WARN, f"dropped a depth image on {topic}: {exc}; publishing without 3D")
            return None
        params = self._depth_params
        if not valid_depth(depth, params.min_depth, params.max_depth).any():
            self._report("depth", WARN, f"depth image on {topic} has no valid readings (all NaN, inf, 0 or outside "
                         f"depth_min..depth_max = {params.min_depth}..{params.max_depth} m); publishing without 3D")
            return None
        try:
            return frame_3d(detections, depth, intrinsics, image_size, params, grasp)
        except DepthSizeError as exc:
            self._report("depth", WARN, f"depth image on {topic} does not fit the colour image: {exc}; "
                         "publishing without 3D")
            return None

    def _publish_outputs(self, md: ModelMetadata, header: Any, rgb: np.ndarray, detections: Detections,
                         grasp: np.ndarray | None, frame3d: Frame3D | None, intrinsics: CameraIntrinsics | None,
                         tracking: bool) -> None:
        """Every output of one frame; the optional ones only while enabled and subscribed."""
        pubs = self._pubs
        height, width = rgb.shape[:2]
        d3 = frame3d.instances if frame3d is not None else None
        instances, keypoints = conversions.detections_to_msgs(
            detections, header, width, height, md, self.p("mask_encoding"), instances_3d=d3, grasp=grasp,
            grasp_positions=frame3d.grasp if frame3d is not None else None,
            grasp_valid=frame3d.grasp_valid if frame3d is not None else None)
        pubs["instances"].publish(instances)
        if md.num_keypoints or grasp is not None:
            pubs["keypoints"].publish(keypoints)
        if self.p("publish_debug_image") and pubs["debug_image"].get_subscription_count() > 0:
            overlay = draw_overlay(rgb, detections, md.class_names, md.keypoint_names, md.skeleton,
                                   keypoint_threshold=self.p("keypoint_score_threshold"),
                                   ranges=np.linalg.norm(d3.centroids, axis=1) if d3 is not None else None)
            pubs["debug_image"].publish(conversions.rgb_to_image_msg(overlay, header))
        if self.p("publish_markers") and pubs["markers"].get_subscription_count() > 0:
            k = (intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy) if intrinsics is not None \
                else intrinsics_or_guess(None, width, height)
            pubs["markers"].publish(detections_to_markers(
                detections, header, md.class_names, md.skeleton, k, depth=self.p("marker_depth"),
                keypoint_threshold=self.p("keypoint_score_threshold"), instances_3d=d3))
        if (frame3d is not None and intrinsics is not None and self.p("publish_points")
                and pubs["points"].get_subscription_count() > 0):
            points = cloud_points(detections, frame3d.depth, intrinsics, self._depth_params,
                                  self.p("points_stride"), tracking)
            pubs["points"].publish(conversions.points_to_cloud_msg(points, header))
        if self.p("publish_instance_map") and pubs["instance_map"].get_subscription_count() > 0:
            ids = instance_map(detections, height, width, untracked="skip" if tracking else "index")
            pubs["instance_map"].publish(conversions.map_image_msg(ids, header))
        if self.p("publish_class_map") and pubs["class_map"].get_subscription_count() > 0:
            try:
                pubs["class_map"].publish(conversions.map_image_msg(class_map(detections, height, width), header))
            except ValueError as exc:  # a model with more than 255 classes
                self._report("class_map", WARN, f"class_map not published: {exc}")

    def _intrinsics_3d(self, width: int, height: int) -> CameraIntrinsics | None:
        """Intrinsics of the colour image: its camera_info, else the depth camera_info
        (registered depth has the colour intrinsics) scaled to the colour size."""
        k = self._intrinsics_for(width, height)
        if k is not None:
            return CameraIntrinsics.from_k(k)  # checked on arrival
        info = self._depth_camera_info
        if info is None:
            return None
        try:
            return scaled_intrinsics(info.k, (info.width, info.height), (width, height))
        except ValueError as exc:
            self._report("depth_camera_info", WARN, f"not using the depth camera_info on "
                         f"{self.resolve_topic_name('depth/camera_info')}: {exc}")
            return None

    def _intrinsics_for(self, width: int, height: int) -> list[float] | None:
        """The camera_info K if it describes this image size, else None (and a warning)."""
        info = self._camera_info
        if info is None:
            return None
        if (info.width, info.height) != (width, height):
            self._report("camera_info", WARN,
                         f"camera_info is for {info.width}x{info.height} but images are {width}x{height}; "
                         "not using it (check the camera_info remapping)")
            return None
        return list(info.k)

    def _check_header(self, msg: Image | CompressedImage) -> None:
        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        if self._last_stamp_ns is not None and stamp_ns < self._last_stamp_ns:
            self._report("stamp", WARN, "input stamps went backwards (bag restarted or clock jumped); outputs keep the input stamps")
        self._last_stamp_ns = stamp_ns
        if not msg.header.frame_id:
            self._report("frame_id", WARN, "input image has an empty frame_id; outputs and markers carry it as is")

    # ------------------------------------------------------------------ diagnostics
    def _publish_diagnostics(self) -> None:
        pipeline = self._pipeline
        state = "active" if self._workers else ("configured" if pipeline else "unconfigured")
        values = {
            "state": state,
            "input_rate_hz": f"{self._input_stats.rate():.2f}",
            "output_rate_hz": f"{self._output_stats.rate():.2f}",
            "latency_p50_ms": f"{self._latency.percentile(50) * 1e3:.1f}",
            "latency_p95_ms": f"{self._latency.percentile(95) * 1e3:.1f}",
            "frames_received": str(self._slot.received),
            "frames_processed": str(self._processed),
            "frames_dropped": str(self._slot.dropped),
            "problems_total": str(self._problems.total),
            "depth_received": str(self._depth.received),
            # Which intrinsics 3D can use: the newest usable camera_info of each stream, or "none".
            "camera_info": _info_size(self._camera_info),
            "depth_camera_info": _info_size(self._depth_camera_info),
            "frames_with_3d": str(self._frames_with_3d),
            "tracking": "on" if self._tracking is not None else "off",
            "tracks_active": str(self._tracking.num_tracks if self._tracking is not None else 0),
        }
        if pipeline is not None:
            md = pipeline.metadata
            values.update({"backend": pipeline.backend.name, "precision": pipeline.backend.precision,
                           "model": md.name, "architecture": md.architecture,
                           "input_reliability": qos.reliability_name(self._input_reliability) if self._input_reliability is not None else "-"})
        base = (OK, "running") if self._workers else (OK, state)
        status = build_status(f"{self.get_fully_qualified_name()}: segmentation", "seg_perception", self._problems.active(),
                              values, *base)
        self._diag_pub.publish(diagnostic_array(self.get_clock().now().to_msg(), [status]))

    def destroy_node(self) -> None:
        self._stop_worker()
        if self._pipeline is not None:
            self._pipeline.close()
            self._pipeline = None
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    node = None
    try:
        node = SegPerceptionNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        if node.p("autostart"):
            if node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                node.trigger_activate()
            else:
                node.get_logger().error("configure failed; the node stays unconfigured (see the error above)")
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
