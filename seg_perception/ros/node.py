"""``seg_perception_node``: camera frames in, instance masks and keypoints out.

A lifecycle shell, as Nav2's servers are: each transition is handed to the parts that
own it. ``ros.parameters`` declares and checks the parameters; ``ros.inputs.CameraInputs``
owns the subscriptions (QoS matching, camera_info, depth buffering);
``pipeline.FrameProcessor`` owns the frame's path after decoding (tracking and its
publish rule, grasp points, depth pairing, 3D) and is the same object offline
regression runs; ``ros.outputs.OutputPublisher`` owns the publishers.

Several cameras (parameter ``cameras``): each camera has its own inputs, frame
processor (tracker, depth pairing, 3D), publishers under its name, statistics and
problems (``_Camera``); the model and its backend are one, shared.

Two worker threads (``streaming.TwoStageWorkers``): "inference" always takes every
camera's newest frame (so latency stays bounded when a camera is faster than the
model, and a fast camera cannot starve a slow one), decodes each and runs the network
once for the batch; "outputs" post-processes, tracks, adds 3D and publishes the
previous batch's frames meanwhile, each with its own camera's header.

Depth: depth images are only buffered on arrival; the outputs thread pairs a colour
frame with the depth image of the nearest stamp (within ``depth_sync_slop``) and
decodes only that one. Depth often arrives a little after colour, so the pairing is
tried again after inference and, while a depth stream is live, waited for up to
``depth_wait`` after the colour frame arrived.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import CompressedImage, Image

from seg_perception import params as param_specs
from seg_perception.core.image import ImageDecodeError
from seg_perception.core.stamps import stamp_ns
from seg_perception.pipeline import FrameProcessor, Inferred, SegmentationPipeline, load_pipeline
from seg_perception.resources import model_load_problem
from seg_perception.ros import conversions, parameters, qos
from seg_perception.ros.diagnostics import ERROR, OK, WARN, ProblemBook, build_status, diagnostic_array
from seg_perception.ros.inputs import CameraInputs
from seg_perception.ros.outputs import OutputPublisher
from seg_perception.streaming import RollingStats, StageTimes, TwoStageWorkers

NODE_NAME = "seg_perception_node"


@dataclass
class _InferredFrame:
    """A frame between the two worker threads: the network has run, nothing is published yet."""

    camera: "_Camera"
    header: Any
    rgb: np.ndarray
    inferred: Inferred
    received: float  # monotonic seconds
    early_depth: tuple[int, Image] | None
    times: dict[str, float]  # seconds per stage so far


@dataclass
class _Arrived:
    """A colour frame as it arrived, waiting in its camera's newest-frame slot."""

    msg: Image | CompressedImage
    received: float  # monotonic seconds
    early_depth: Any
    transit: float | None  # seconds from the publisher's send to our callback, where rclpy says


class _Camera:
    """One camera's share of the node: its subscriptions, frame processor (tracker, depth
    pairing, 3D), publishers, statistics and problems. ``name`` "" is the single camera
    on the plain topic names."""

    def __init__(self, node: "SegPerceptionNode", name: str, first: bool) -> None:
        self.name = name
        self.node = node
        self.problems = ProblemBook(node.p("log_throttle_period"))
        prefix = f"{name}/" if name else ""
        self.processor = FrameProcessor(node.param_values(), self.warn, node.resolve_topic_name(prefix + "depth"))
        self.inputs = CameraInputs(node, node.p, self.warn, self.on_frame, self.processor.depth, prefix=name)
        self.outputs = OutputPublisher(node, node.p, self.warn, prefix=name, model_info=first)
        self.input_stats = RollingStats()
        self.output_stats = RollingStats()
        self.latency = RollingStats()
        self.stages = StageTimes()
        self.processed = 0

    def warn(self, kind: str, message: str) -> None:
        self.report(kind, WARN, message)

    def report(self, kind: str, level: int, message: str) -> None:
        line = self.problems.report(kind, level, message)
        if line is not None:
            self.node._log(level, f"[{self.name}] {line}" if self.name else line)

    def on_frame(self, msg: Image | CompressedImage, received: float, early: Any, transit: float | None) -> None:
        self.input_stats.add()
        self.node._workers.put(self.name, _Arrived(msg, received, early, transit))

    def decode(self, item: _Arrived, times: dict[str, float]) -> np.ndarray | None:
        """The frame as RGB, or None (reported on this camera only) when it cannot be decoded."""
        self.inputs.check_header(item.msg)
        t0 = time.perf_counter()
        try:
            rgb = conversions.image_to_rgb(item.msg, self.node.p("max_image_pixels"))
        except ImageDecodeError as exc:
            self.warn("input", f"dropped a frame on {self.node.resolve_topic_name(self.inputs.image_topic()[1])}: {exc}")
            return None
        times["decode"] = time.perf_counter() - t0
        return rgb

    def diagnostics(self, running: bool, slots: Any) -> dict[str, str]:
        reliability = self.inputs.reliability
        return {
            "input_rate_hz": f"{self.input_stats.rate():.2f}",
            "output_rate_hz": f"{self.output_stats.rate():.2f}",
            "latency_p50_ms": f"{self.latency.percentile(50) * 1e3:.1f}",
            "latency_p95_ms": f"{self.latency.percentile(95) * 1e3:.1f}",
            "frames_received": str(slots.received.get(self.name, 0)),
            "frames_processed": str(self.processed),
            "frames_dropped": str(slots.dropped.get(self.name, 0)),
            "input_reliability": qos.reliability_name(reliability) if reliability is not None else "-",
            **self.inputs.diagnostics(),
            **self.processor.diagnostics(),
            **self.stages.values(),
        }


class SegPerceptionNode(LifecycleNode):
    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._problems = ProblemBook()  # the node's own: model, inference, parameters
        parameters.declare(self, self._report)
        self._problems.throttle = self.p("log_throttle_period")
        self._model: SegmentationPipeline | None = None  # the node owns it (loads and closes it)
        names = list(self.param_values()["cameras"]) or [""]
        self._workers: TwoStageWorkers[_Arrived, _InferredFrame] = TwoStageWorkers(
            names, self._infer, self._finish, self._frame_failed, ("seg_perception_inference", "seg_perception_outputs"),
            wake=self._wake_depth_waits)  # wakes the outputs thread waiting for depth
        self._cameras = {name: _Camera(self, name, first=i == 0) for i, name in enumerate(names)}
        self.add_on_set_parameters_callback(self._on_set_parameters)
        # Diagnostics run in every state, so a model that fails to load is reported.
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(self.p("diagnostics_period"), self._publish_diagnostics)

    @property
    def _single(self) -> _Camera | None:
        """The one camera on the plain topic names, or None with named cameras."""
        return self._cameras.get("")

    # ------------------------------------------------------------------ parameters and problems
    def p(self, name: str) -> Any:
        return self.get_parameter(name).value

    def param_values(self) -> dict[str, Any]:
        return parameters.values_of(self)

    def _on_set_parameters(self, params: list) -> SetParametersResult:
        result, changed = parameters.check_update(params, self.param_values(), self._report)
        frame = param_specs.applying_on("frame", changed)
        if result.successful and frame:
            for camera in self._cameras.values():
                camera.processor.apply({**self.param_values(), **changed}, frame)
                if "log_throttle_period" in changed:
                    camera.problems.throttle = float(changed["log_throttle_period"])
            if "log_throttle_period" in changed:
                self._problems.throttle = float(changed["log_throttle_period"])
        return result

    def _report(self, kind: str, level: int, message: str) -> None:
        line = self._problems.report(kind, level, message)
        if line is not None:
            self._log(level, line)

    def _log(self, level: int, line: str) -> None:
        # One call site per severity: rclpy refuses a second severity from the same line
        # ("Logger severity cannot be changed between calls").
        if level >= ERROR:
            self.get_logger().error(line)
        else:
            self.get_logger().warning(line)

    def _warn(self, kind: str, message: str) -> None:
        self._report(kind, WARN, message)

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        values = self.param_values()
        from seg_perception.runtime.tensorrt_backend import build_progress

        try:
            with build_progress(self._configure_progress):
                self._model = load_pipeline(values)
        except Exception as exc:  # missing/corrupt model, missing backend: say which
            self._report("model", ERROR, model_load_problem(values, exc))
            return TransitionCallbackReturn.FAILURE
        self._problems.clear("model")
        for camera in self._cameras.values():
            camera.processor.attach(self._model)
            camera.outputs.configure()
        md = self._model.metadata
        named = [c for c in self._cameras if c]
        self.get_logger().info(
            f"model '{md.name}' ({md.architecture}, {md.input_width}x{md.input_height}, "
            f"{md.num_classes} classes, {md.num_keypoints} keypoints) on {self._model.backend.name}"
            + (f", shared by {len(named)} cameras ({', '.join(named)}), batched" if named else ""))
        return TransitionCallbackReturn.SUCCESS

    def _configure_progress(self, line: str) -> None:
        """A TensorRT engine build during configure (minutes): log it and show it on /diagnostics.

        The executor is busy with ``configure`` meanwhile, so the diagnostics timer cannot
        fire; this publishes the status itself (from TensorRT's threads too).
        """
        self.get_logger().info(line)
        part = "segmentation" if self._single is not None else "backend"  # the statuses _publish_diagnostics names
        status = build_status(f"{self.get_fully_qualified_name()}: {part}", "seg_perception", [],
                              {"state": "configuring", "engine_build": line}, OK, f"building TensorRT engine: {line}")
        self._diag_pub.publish(diagnostic_array(self.get_clock().now().to_msg(), [status]))

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)  # activates the lifecycle publishers
        for camera in self._cameras.values():
            camera.outputs.activate(self._model)
            camera.inputs.activate()
        self._workers.start()
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        for camera in self._cameras.values():
            camera.outputs.cleanup()
        self._release_model()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._workers.stop()
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        self._teardown()
        super().destroy_node()

    def _wake_depth_waits(self) -> None:
        for camera in getattr(self, "_cameras", {}).values():
            camera.processor.depth.close()

    def _stop(self) -> None:
        """Undo activate: the workers, then the subscriptions."""
        self._workers.stop()
        for camera in self._cameras.values():
            camera.inputs.deactivate()

    def _release_model(self) -> None:
        """Undo configure's model: the processors let go of it, the node closes it."""
        for camera in self._cameras.values():
            camera.processor.detach()
        if self._model is not None:
            self._model.close()
            self._model = None

    def _teardown(self) -> None:
        """Whatever state the node is in: stop, unsubscribe, release the model."""
        self._stop()
        self._release_model()

    # ------------------------------------------------------------------ frames
    def _infer(self, batch: list[tuple[str, _Arrived]]) -> list[_InferredFrame]:
        """Inference thread: decode each camera's newest frame, then one network batch for all."""
        started = time.monotonic()
        decoded = []
        for name, item in batch:
            camera = self._cameras[name]
            times = {"queue": started - item.received}
            if item.transit is not None:
                times["receipt"] = item.transit
            rgb = camera.decode(item, times)  # a bad frame is dropped for its camera only
            if rgb is not None:
                decoded.append((camera, item, rgb, times))
        if not decoded:
            return []
        shared: dict[str, float] = {}
        inferred = FrameProcessor.forward_together([c.processor for c, _, _, _ in decoded],
                                                   [rgb for _, _, rgb, _ in decoded], shared)
        frames = []
        for (camera, item, rgb, times), result in zip(decoded, inferred):
            if result is None:
                continue
            times["preprocess"] = shared.get("preprocess", 0.0) / len(decoded)
            times["network"] = shared.get("network", 0.0)  # the batch's time is every frame's wait
            frames.append(_InferredFrame(camera, item.msg.header, rgb, result, item.received, item.early_depth, times))
        return frames

    def _finish(self, frame: _InferredFrame) -> None:
        """Outputs thread: one camera's frame processor result for this frame, published;
        ``instances`` first, then the grasp points (only ``keypoints`` carries them) and the rest."""
        camera, times = frame.camera, frame.times
        t0 = time.perf_counter()
        stamp = stamp_ns(frame.header.stamp)
        result = camera.processor.detect(frame.inferred, stamp)
        t1 = time.perf_counter()
        depth_msg = camera.processor.pair_depth(stamp, frame.received, frame.early_depth)
        t2 = time.perf_counter()
        height, width = result.image_size
        intrinsics = camera.inputs.intrinsics(width, height)  # after the pairing: its camera_info may come with it
        result = camera.processor.add_3d(result, depth_msg, intrinsics, lambda msg: self._depth_to_metres(camera, msg))
        t3 = time.perf_counter()
        md = frame.inferred.model.metadata
        built = camera.outputs.publish_instances(md, frame.header, result, times)
        camera.latency.add(time.monotonic() - frame.received)  # the node's latency: to instances
        t4 = time.perf_counter()
        result = camera.processor.add_grasp(result)
        t5 = time.perf_counter()
        camera.outputs.publish_rest(md, frame.header, frame.rgb, result, built, times)
        times.update({"postprocess": t1 - t0, "depth_wait": t2 - t1, "tracking_3d": t3 - t2, "grasp": t5 - t4})
        camera.processed += 1
        camera.output_stats.add()
        for stage, seconds in times.items():
            camera.stages.add(stage, seconds)
        self._problems.clear("inference")

    def _depth_to_metres(self, camera: _Camera, msg: Image) -> np.ndarray | None:
        try:
            return conversions.depth_to_metres(msg, self.p("max_image_pixels"))
        except ImageDecodeError as exc:
            camera.warn("depth", f"dropped a depth image on {self.resolve_topic_name(camera.inputs.topic('depth'))}: "
                        f"{exc}; publishing without 3D")
            return None

    def _frame_failed(self, exc: Exception) -> None:
        """Never let one frame kill the node."""
        self._report("inference", ERROR, f"frame failed: {type(exc).__name__}: {exc}")

    # ------------------------------------------------------------------ diagnostics
    def _publish_diagnostics(self) -> None:
        model = self._model
        running = self._workers.running
        state = "active" if running else ("configured" if model else "unconfigured")
        slots = self._workers.slots
        for camera in self._cameras.values():
            camera.inputs.check_transport_loss()
        node_values = {"state": state, "problems_total": str(self._problems.total
                                                             + sum(c.problems.total for c in self._cameras.values()))}
        if model is not None:
            md = model.metadata
            node_values.update({"backend": model.backend.name, "precision": model.backend.precision,
                                "model": md.name, "architecture": md.architecture})
        name = self.get_fully_qualified_name()
        base = "running" if running else state
        single = self._single
        if single is not None:  # one camera: one status, as before several cameras existed
            values = {**node_values, **single.diagnostics(running, slots)}
            problems = sorted(self._problems.active() + single.problems.active(),
                              key=lambda kp: (-kp[1].level, -kp[1].last))
            statuses = [build_status(f"{name}: segmentation", "seg_perception", problems, values, OK, base)]
        else:
            workers = self._workers
            backend_values = {**node_values, "cameras": ",".join(self._cameras),
                              "batch_size_mean": f"{workers.batched_frames / max(1, workers.batches):.2f}",
                              "batches": str(self._workers.batches),
                              "frames_batched": str(self._workers.batched_frames)}
            statuses = [build_status(f"{name}: backend", "seg_perception", self._problems.active(),
                                     backend_values, OK, base)]
            for camera in self._cameras.values():
                statuses.append(build_status(f"{name}: camera {camera.name}", f"seg_perception/{camera.name}",
                                             camera.problems.active(), camera.diagnostics(running, slots), OK, base))
        self._diag_pub.publish(diagnostic_array(self.get_clock().now().to_msg(), statuses))


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    node = None
    autostart_failed = False
    try:
        node = SegPerceptionNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        if node.p("autostart"):
            if node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                node.trigger_activate()
            else:
                autostart_failed = True
                node.get_logger().error("autostart: configure failed; the node stays unconfigured and will exit "
                                        "with status 1 (see the error above)")
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # A failed autostart that nobody configured since is a failed start (launch and systemd see it).
        failed = autostart_failed and (node is None or node._model is None)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
