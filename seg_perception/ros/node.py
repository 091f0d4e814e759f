"""``seg_perception_node``: camera frames in, instance masks and keypoints out.

A lifecycle node (configure: load the model; activate: start topics) that stays
thin: it converts messages at the edge and calls ``SegmentationPipeline``.
Inference runs in a worker thread that always takes the newest frame, so latency
stays bounded when the camera is faster than the model.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import rclpy
from rcl_interfaces.msg import (
    FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult,
)
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from diagnostic_msgs.msg import DiagnosticArray
from visualization_msgs.msg import MarkerArray

try:  # Jazzy and later
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks

from seg_perception import params as param_specs
from seg_perception.core.drawing import draw_overlay
from seg_perception.core.image import ImageDecodeError
from seg_perception.msg import InstanceArray, ModelInfo, PoseKeypointsArray
from seg_perception.pipeline import SegmentationPipeline, load_pipeline, postprocess_params_from
from seg_perception.ros import conversions, qos
from seg_perception.ros.diagnostics import ERROR, OK, WARN, ProblemBook, build_status, diagnostic_array
from seg_perception.ros.visualization import detections_to_markers, intrinsics_or_guess
from seg_perception.streaming import LatestSlot, RollingStats

NODE_NAME = "seg_perception_node"
# Parameters whose change takes effect on the next frame (the rest need reconfigure).
_POSTPROCESS_PARAMS = {"score_threshold", "nms_iou_threshold", "top_k", "max_detections",
                       "mask_threshold", "class_agnostic_nms"}


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
        d.integer_range = [IntegerRange(from_value=int(spec.min), to_value=int(spec.max), step=1)]
    return d


class SegPerceptionNode(LifecycleNode):
    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._problems = ProblemBook()
        self._declare_parameters()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._problems.throttle = self.p("log_throttle_period")

        self._pipeline: SegmentationPipeline | None = None
        self._slot: LatestSlot[tuple[Any, float]] = LatestSlot()
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self._subs: list = []
        self._pubs: dict[str, Any] = {}
        self._camera_info: CameraInfo | None = None
        self._input_reliability = None
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
        if self._pipeline is not None and _POSTPROCESS_PARAMS & changed.keys():
            values = {**self.param_values(), **changed}
            self._pipeline.params = postprocess_params_from(values)
        if "log_throttle_period" in changed:
            self._problems.throttle = float(changed["log_throttle_period"])
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ problems
    def _report(self, kind: str, level: int, message: str) -> None:
        line = self._problems.report(kind, level, message)
        if line is not None:
            log = self.get_logger()
            (log.error if level >= ERROR else log.warning)(line)

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        values = self.param_values()
        try:
            self._pipeline = load_pipeline(values)
        except Exception as exc:  # missing/corrupt model, missing backend: say which
            self._report("model", ERROR, f"cannot load the model: {exc}")
            return TransitionCallbackReturn.FAILURE
        self._problems.clear("model")
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
        self._create_input_subscriptions()
        self._graph_timer = self.create_timer(1.0, self._check_input_qos)
        self._stop.clear()
        self._slot = LatestSlot()
        self._worker = threading.Thread(target=self._worker_loop, name="seg_perception_inference", daemon=True)
        self._worker.start()
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
        if self._worker is not None:
            self._worker.join(timeout=5.0)
            self._worker = None

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
        callbacks = SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible_qos)
        self._subs = [
            self.create_subscription(msg_type, topic, self._on_image,
                                     qos.input_qos(self._input_reliability, self.p("input_queue_depth")),
                                     event_callbacks=callbacks),
            self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, 5),
        ]
        self.get_logger().info(
            f"listening on {resolved} ({qos.reliability_name(self._input_reliability)}, reliability={setting})")

    def _destroy_input_subscriptions(self) -> None:
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []

    def _check_input_qos(self) -> None:
        """Re-match the input reliability when the camera's publishers change (auto mode)."""
        if self.p("input_reliability") != "auto" or not self._subs:
            return
        resolved = self.resolve_topic_name(self._image_topic()[1])
        offered = qos.offered_reliabilities(self, resolved)
        if not offered:
            return
        wanted = qos.choose_reliability("auto", offered)
        if wanted != self._input_reliability:
            self.get_logger().info(
                f"publishers on {resolved} now offer {', '.join(sorted({qos.reliability_name(r) for r in offered}))};"
                f" resubscribing {qos.reliability_name(wanted)}")
            self._destroy_input_subscriptions()
            self._create_input_subscriptions()

    def _on_incompatible_qos(self, event: Any) -> None:
        topic = self.resolve_topic_name(self._image_topic()[1])
        self._report("qos", WARN,
                     f"a publisher on {topic} offers QoS incompatible with this subscription "
                     f"({qos.reliability_name(self._input_reliability)}; last policy: {event.last_policy_kind}). "
                     "Fix: set input_reliability:=auto or best_effort, or make the camera publish reliable.")

    def _on_camera_info(self, msg: CameraInfo) -> None:
        k = msg.k
        if not (math.isfinite(k[0]) and math.isfinite(k[4]) and k[0] > 0 and k[4] > 0) or msg.width == 0 or msg.height == 0:
            self._report("camera_info", WARN,
                         f"ignoring camera_info on {self.resolve_topic_name('camera_info')}: size {msg.width}x{msg.height}, "
                         f"fx={k[0]}, fy={k[4]} (needs a size and positive focal lengths)")
            self._camera_info = None
            return
        self._camera_info = msg

    def _on_image(self, msg: Image | CompressedImage) -> None:
        self._input_stats.add()
        self._slot.put((msg, time.monotonic()))

    # ------------------------------------------------------------------ processing
    def _worker_loop(self) -> None:
        while not self._stop.is_set():
            item = self._slot.take(timeout=0.2)
            if item is None:
                continue
            try:
                self._process(*item)
            except Exception as exc:  # never let one frame kill the node
                self._report("inference", ERROR, f"frame failed: {type(exc).__name__}: {exc}")

    def _process(self, msg: Image | CompressedImage, received: float) -> None:
        pipeline = self._pipeline
        if pipeline is None:
            return
        self._check_header(msg)
        try:
            rgb = conversions.image_to_rgb(msg, self.p("max_image_pixels"))
        except ImageDecodeError as exc:
            self._report("input", WARN, f"dropped a frame on {self.resolve_topic_name(self._image_topic()[1])}: {exc}")
            return
        detections = pipeline(rgb)
        height, width = rgb.shape[:2]
        k = self._intrinsics_for(width, height)
        md = pipeline.metadata
        instances, keypoints = conversions.detections_to_msgs(
            detections, msg.header, width, height, md, self.p("mask_encoding"))
        pubs = self._pubs
        pubs["instances"].publish(instances)
        if md.num_keypoints:
            pubs["keypoints"].publish(keypoints)
        if self.p("publish_debug_image") and pubs["debug_image"].get_subscription_count() > 0:
            overlay = draw_overlay(rgb, detections, md.class_names, md.keypoint_names, md.skeleton,
                                   keypoint_threshold=self.p("keypoint_score_threshold"))
            pubs["debug_image"].publish(conversions.rgb_to_image_msg(overlay, msg.header))
        if self.p("publish_markers") and pubs["markers"].get_subscription_count() > 0:
            pubs["markers"].publish(detections_to_markers(
                detections, msg.header, md.class_names, md.skeleton, intrinsics_or_guess(k, width, height),
                depth=self.p("marker_depth"), keypoint_threshold=self.p("keypoint_score_threshold")))
        self._processed += 1
        self._output_stats.add()
        self._latency.add(time.monotonic() - received)
        self._problems.clear("inference")

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
        state = "active" if self._worker is not None else ("configured" if pipeline else "unconfigured")
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
        }
        if pipeline is not None:
            md = pipeline.metadata
            values.update({"backend": pipeline.backend.name, "precision": pipeline.backend.precision,
                           "model": md.name, "architecture": md.architecture,
                           "input_reliability": qos.reliability_name(self._input_reliability) if self._input_reliability is not None else "-"})
        base = (OK, "running") if self._worker is not None else (OK, state)
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
