"""Replay recorded frames into a running node over real topics and collect its outputs.

Used by ``seg-perception demo``, ``seg-perception regress --through-ros`` and the
tests: the node runs in its own process exactly as ``ros2 launch`` would start it;
this process plays the camera (and, for ``use_sim_time``, the clock) and listens
like a downstream consumer.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from visualization_msgs.msg import MarkerArray

from seg_perception.msg import InstanceArray, ModelInfo, PoseKeypointsArray
from seg_perception.ros.inputs import CALLBACKS_GET_MESSAGE_INFO
from seg_perception.ros.launch_args import NodeLaunchSpec




def prefer_shared_memory_for_large_samples() -> str | None:
    """Choose Fast DDS's ``LARGE_DATA`` transports for this process and the nodes it starts.

    For a tool's ``main`` only, before any rclpy context exists (it sets an environment
    variable of the whole process). With Fast DDS's default transports a sample larger
    than the shared-memory segment (a 640x480 32FC1 depth image is 1.2 MB) goes as UDP
    fragments; one lost fragment costs a reliable repair that took 1-3 s here, far more
    than ``depth_wait``. ``LARGE_DATA`` (Fast DDS 2.12 and later) keeps such samples in
    shared memory on one machine. The replay tools own both ends of every connection,
    so they choose it unless the user set the variable or another RMW. Returns the value
    in force, or None when left alone.
    """
    if os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp") not in ("rmw_fastrtps_cpp", "rmw_fastrtps_dynamic_cpp"):
        return None
    return os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")


def _poll(condition: Callable[[], bool], timeout: float, period: float = 0.02) -> bool:
    """Whether ``condition`` became true within ``timeout`` seconds (graph state has no event to wait on)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(period)
    return False


class NodeProcess:
    """``seg_perception_node`` in a child process, its log in a file."""

    def __init__(self, spec: NodeLaunchSpec, log_path: str | Path, env: dict[str, str] | None = None) -> None:
        self.spec = spec
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")
        cmd = [sys.executable, "-m", "seg_perception.ros.node", *spec.ros_args()]
        # faulthandler: a node that does not exit when told is sent SIGABRT (``stop``), and
        # Python writes every thread's stack to the log first: where it hung.
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONFAULTHANDLER": "1", **(env or {})})

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, chars: int = 4000) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self, sig: int = signal.SIGINT, timeout: float = 10.0) -> float:
        """Signal the node and wait; return the seconds it took to exit. One that has not
        exited after ``timeout`` gets SIGABRT (its threads' stacks go to the log), then SIGKILL."""
        t0 = time.monotonic()
        if self.alive():
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGABRT)
                try:
                    self.proc.wait(timeout=5.0)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        self._log.close()
        return time.monotonic() - t0


@dataclass
class Received:
    """Everything a consumer got from the node, in arrival order."""

    instances: list[InstanceArray] = field(default_factory=list)
    keypoints: list[PoseKeypointsArray] = field(default_factory=list)
    debug_images: list[Image] = field(default_factory=list)
    markers: list[MarkerArray] = field(default_factory=list)
    model_info: list[ModelInfo] = field(default_factory=list)
    # Wall-clock receipt time (ns) of each message, per list above, in the same order.
    arrival_ns: dict[str, list[int]] = field(default_factory=dict)
    # The publisher's send time (ns) of each message where rclpy reports it (Jazzy and
    # later): times the node itself, free of this process's scheduling delays.
    source_ns: dict[str, list[int]] = field(default_factory=dict)

    def clear(self, attr: str) -> None:
        getattr(self, attr).clear()
        self.arrival_ns.pop(attr, None)
        self.source_ns.pop(attr, None)


class CameraAndConsumer:
    """A test/tool-side ROS node: publishes camera topics, records the node's outputs.

    Runs in its own ``rclpy.Context`` with a background executor, so it can live
    inside pytest or a CLI without touching the global context.
    """

    def __init__(self, namespace: str = "", image_topic: str = "image", camera_info_topic: str = "camera_info",
                 compressed: bool = False,
                 camera_reliability: ReliabilityPolicy = ReliabilityPolicy.RELIABLE,
                 subscribe_debug_image: bool = False, subscribe_markers: bool = False, node_name: str = "seg_perception_player",
                 clock_topic: str | None = None, model_info_topic: str = "model_info") -> None:
        """``clock_topic``: also publish ``rosgraph_msgs/Clock`` there (``publish_clock``),
        for a node started with ``use_sim_time``; None publishes no clock.
        ``model_info_topic``: the node's one model_info (for one camera of a multi-camera
        node the player's namespace is the camera's, e.g. ``/ns/front``, and model_info
        is ``/ns/model_info``)."""
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = Node(node_name, namespace=namespace, context=self.context)
        self.received = Received()
        self._cond = threading.Condition()
        camera_qos = QoSProfile(depth=5, reliability=camera_reliability)
        topic = f"{image_topic}/compressed" if compressed else image_topic
        self.image_pub = self.node.create_publisher(CompressedImage if compressed else Image, topic, camera_qos)
        self.info_pub = self.node.create_publisher(CameraInfo, camera_info_topic, 5)
        self.clock_pub = self.node.create_publisher(Clock, clock_topic, 10) if clock_topic else None
        self.node.create_subscription(InstanceArray, "instances", self._on("instances"), 10)
        self.node.create_subscription(PoseKeypointsArray, "keypoints", self._on("keypoints"), 10)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(ModelInfo, model_info_topic, self._on("model_info"), latched)
        self._outputs = ["instances", "keypoints"]
        if subscribe_debug_image:
            self._outputs.append("debug/image")
            self.node.create_subscription(Image, "debug/image", self._on("debug_images"), 10)
        if subscribe_markers:
            self._outputs.append("debug/markers")
            self.node.create_subscription(MarkerArray, "debug/markers", self._on("markers"), 10)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._spin = threading.Thread(target=self.executor.spin, daemon=True)
        self._spin.start()

    def _on(self, attr: str) -> Callable[..., None]:
        def record(msg: Any, source_ns: int | None) -> None:
            now = time.time_ns()
            with self._cond:
                getattr(self.received, attr).append(msg)
                self.received.arrival_ns.setdefault(attr, []).append(now)
                self.received.source_ns.setdefault(attr, []).append(now if source_ns is None else source_ns)
                self._cond.notify_all()

        if CALLBACKS_GET_MESSAGE_INFO:
            return lambda msg, info: record(msg, info["source_timestamp"])
        return lambda msg: record(msg, None)

    def wait_for(self, predicate: Callable[[Received], bool], timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self.received), timeout)

    def wait_for_node(self, process: NodeProcess | None, timeout: float = 60.0) -> ModelInfo:
        """Wait until the node is active (its transient-local model_info arrives)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.wait_for(lambda r: bool(r.model_info), 0.2):
                # The image subscription is created right after model_info; let discovery match it,
                # and the node's output publishers ours (it renders debug/image only when subscribed).
                self.wait_for_subscriber(timeout=10.0)
                self._wait_for_output_publishers(timeout=10.0)
                return self.received.model_info[-1]
            if process is not None and not process.alive():
                raise RuntimeError(f"the node exited with code {process.proc.returncode}:\n{process.log_tail()}")
        tail = process.log_tail() if process is not None else ""
        raise TimeoutError(f"the node did not become active within {timeout:.0f} s\n{tail}")

    def wait_for_subscriber(self, timeout: float = 10.0) -> bool:
        return _poll(lambda: self.image_pub.get_subscription_count() > 0, timeout)

    def _wait_for_output_publishers(self, timeout: float) -> bool:
        return _poll(lambda: all(self.node.count_publishers(topic) > 0 for topic in self._outputs), timeout)

    def publish_clock(self, stamp_ns: int) -> None:
        """Publish the simulated time (nanoseconds); needs ``clock_topic``."""
        if self.clock_pub is None:
            raise RuntimeError("this player was created without a clock_topic")
        msg = Clock()
        msg.clock.sec, msg.clock.nanosec = int(stamp_ns // 1_000_000_000), int(stamp_ns % 1_000_000_000)
        self.clock_pub.publish(msg)

    def instances_for(self, stamp: tuple[int, int], occurrence: int = 0) -> InstanceArray | None:
        """The ``occurrence``-th InstanceArray received with header stamp ``(sec, nanosec)``."""
        with self._cond:
            same = [m for m in self.received.instances if (m.header.stamp.sec, m.header.stamp.nanosec) == stamp]
        return same[occurrence] if occurrence < len(same) else None

    def keypoints_for(self, stamp: tuple[int, int], occurrence: int = 0) -> PoseKeypointsArray | None:
        with self._cond:
            same = [m for m in self.received.keypoints if (m.header.stamp.sec, m.header.stamp.nanosec) == stamp]
        return same[occurrence] if occurrence < len(same) else None

    def publish(self, msg: Image | CompressedImage, camera_info: CameraInfo | None = None) -> None:
        if camera_info is not None:
            camera_info.header = msg.header
            self.info_pub.publish(camera_info)
        self.image_pub.publish(msg)

    def publish_and_wait(self, msg: Image | CompressedImage, timeout: float = 30.0,
                         camera_info: CameraInfo | None = None) -> InstanceArray | None:
        """Publish one frame and wait for the instances stamped with its header."""
        stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        self.publish(msg, camera_info)

        def arrived(r: Received) -> bool:
            return any((m.header.stamp.sec, m.header.stamp.nanosec) == stamp for m in r.instances)

        if not self.wait_for(arrived, timeout):
            return None
        return next(m for m in reversed(self.received.instances)
                    if (m.header.stamp.sec, m.header.stamp.nanosec) == stamp)

    def close(self) -> None:
        # The spin thread must have left the executor before the node and context go:
        # destroyed under a running spin it was seen looping with the GIL held for minutes.
        self.executor.shutdown(timeout_sec=10.0)
        self._spin.join(timeout=10.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def replay_in_lockstep(player: CameraAndConsumer, frames: Iterable[Image | CompressedImage],
                       timeout: float = 30.0, on_frame: Callable[[int, InstanceArray | None], None] | None = None
                       ) -> list[InstanceArray | None]:
    """Send each frame once the previous one's result arrived (no frame is dropped)."""
    results = []
    for i, frame in enumerate(frames):
        out = player.publish_and_wait(frame, timeout)
        results.append(out)
        if on_frame is not None:
            on_frame(i, out)
    return results


def replay_timed(player: CameraAndConsumer, frames: Iterable[tuple[int, Image | CompressedImage]], rate: float,
                 clock: bool = False, clock_period: float = 0.02,
                 on_publish: Callable[[int], None] | None = None) -> int:
    """Publish ``(bag_time_ns, message)`` frames spaced as recorded, ``rate`` times real time.

    As ``ros2 bag play --rate``: a frame goes out when the wall time since the first
    frame reaches its bag-time offset divided by ``rate``. With ``clock``, the
    simulated time (the bag time) is published every ``clock_period`` seconds and
    right before each frame, like ``ros2 bag play --clock``. The node keeps only the
    newest frame, so frames it cannot keep up with are dropped, as on the robot.
    ``frames`` may be a generator (read lazily); returns the number published.
    """
    if rate <= 0:
        raise ValueError(f"rate must be > 0 (got {rate}); use replay_in_lockstep for a lockstep replay")
    bag_start: int | None = None
    wall_start = 0.0
    count = 0
    for i, (bag_ns, msg) in enumerate(frames):
        if bag_start is None:
            bag_start, wall_start = bag_ns, time.monotonic()
        due = wall_start + (bag_ns - bag_start) / 1e9 / rate
        while True:
            now = time.monotonic()
            if now >= due:
                break
            if clock:
                player.publish_clock(bag_start + int((now - wall_start) * rate * 1e9))
            time.sleep(min(clock_period, due - now) if clock else due - now)
        if clock:
            player.publish_clock(bag_ns)
        player.publish(msg)
        count += 1
        if on_publish is not None:
            on_publish(i)
    return count
