"""The node's inputs for one camera: image, depth and camera_info subscriptions.

``CameraInputs`` owns the subscriptions across activate/deactivate, matches their
reliability to what the camera's publishers offer (``ros.qos``; re-matched when the
publishers change), reports incompatible QoS with the fix, checks camera_info on
arrival and chooses the intrinsics 3D uses. Colour frames go to ``on_frame`` with
their receipt time and the depth paired on arrival; depth images are only buffered
(``DepthPairing``), decoded once a colour frame pairs with them.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from rclpy.lifecycle import LifecycleNode
from rclpy.subscription import Subscription
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

try:  # Jazzy and later
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks

from seg_perception.core.depth3d import CameraIntrinsics
from seg_perception.core.stamps import stamp_ns
from seg_perception.pipeline.depth import DepthPairing, scaled_intrinsics
from seg_perception.ros import qos
from seg_perception.streaming import SequenceGaps

# rclpy passes a MessageInfo (publisher id, publication sequence number, source
# timestamp) to two-argument subscription callbacks since Iron/Jazzy; Humble's rclpy
# does not, and then transport loss cannot be counted (reported as "unknown").
CALLBACKS_GET_MESSAGE_INFO = hasattr(Subscription, "CallbackType")

# (message, monotonic receipt time, depth paired on arrival or None, seconds from the
# publisher's send to our callback or None where rclpy does not say)
FrameSink = Callable[[Any, float, Any, "float | None"], None]


def _transit(sent_ns: int | None) -> float | None:
    """Seconds since the publisher sent the message (DDS transport and our executor's
    wait), from the MessageInfo source timestamp; None if unknown or implausible."""
    if not sent_ns:
        return None
    seconds = (time.time_ns() - int(sent_ns)) / 1e9
    return seconds if 0.0 <= seconds < 60.0 else None


def camera_info_problem(msg: CameraInfo) -> str | None:
    """Why a CameraInfo cannot place pixels in 3D (no size, zero/non-finite K), or None."""
    if msg.width == 0 or msg.height == 0:
        return "no image size"
    try:
        CameraIntrinsics.from_k(msg.k)
    except ValueError as exc:
        return str(exc)
    return None


def info_size(info: CameraInfo | None) -> str:
    return "none" if info is None else f"{info.width}x{info.height}"


class CameraInputs:
    """One camera's subscriptions (module docstring).

    param:    reads a parameter's current value (``node.p``).
    warn:     (problem kind, message) for a throttled warning.
    on_frame: receives every colour frame (the newest-frame slot).
    depth:    the pairing that buffers depth images (the camera's ``FrameProcessor.depth``).
    """

    def __init__(self, node: LifecycleNode, param: Callable[[str], Any], warn: Callable[[str, str], None],
                 on_frame: FrameSink, depth: DepthPairing, prefix: str = "") -> None:
        self._node = node
        self.prefix = prefix
        self.transport = SequenceGaps()
        self._p = param
        self._warn = warn
        self._on_frame = on_frame
        self.depth = depth
        self._subs: list = []
        self._depth_sub = None
        self._graph_timer = None
        self.camera_info: CameraInfo | None = None
        self.depth_camera_info: CameraInfo | None = None
        self.reliability = None
        self._depth_reliability = None
        self._last_stamp_ns: int | None = None

    # ------------------------------------------------------------------ lifecycle
    def activate(self) -> None:
        self.depth.reset()  # depth from before a deactivate must not pair with new frames
        self._subscribe()
        self._graph_timer = self._node.create_timer(1.0, self._check_qos)

    def deactivate(self) -> None:
        for sub in self._subs + ([self._depth_sub] if self._depth_sub is not None else []):
            self._node.destroy_subscription(sub)
        self._subs = []
        self._depth_sub = None
        if self._graph_timer is not None:
            self._node.destroy_timer(self._graph_timer)
            self._graph_timer = None

    # ------------------------------------------------------------------ subscriptions
    def topic(self, name: str) -> str:
        """This camera's relative topic ``name`` (``front/image`` for camera ``front``)."""
        return f"{self.prefix}/{name}" if self.prefix else name

    def image_topic(self) -> tuple[type, str]:
        if self._p("use_compressed"):
            return CompressedImage, self.topic("image/compressed")
        return Image, self.topic("image")

    def _subscribe(self) -> None:
        node = self._node
        msg_type, topic = self.image_topic()
        resolved = node.resolve_topic_name(topic)
        setting = self._p("input_reliability")
        self.reliability = qos.choose_reliability(setting, qos.offered_reliabilities(node, resolved))
        callbacks = SubscriptionEventCallbacks(incompatible_qos=lambda e: self._on_incompatible_qos(e, topic))
        self._subs = [
            node.create_subscription(msg_type, topic, self._image_callback(),
                                     qos.input_qos(self.reliability, self._p("input_queue_depth")),
                                     event_callbacks=callbacks),
            node.create_subscription(CameraInfo, self.topic("camera_info"), self._on_camera_info, 5),
            node.create_subscription(CameraInfo, self.topic("depth/camera_info"), self._on_depth_camera_info, 5),
        ]
        self._subscribe_depth()
        node.get_logger().info(
            f"listening on {resolved} ({qos.reliability_name(self.reliability)}, reliability={setting}); "
            f"depth (optional) on {node.resolve_topic_name(self.topic('depth'))}")

    def _subscribe_depth(self) -> None:
        """The depth image gets the same QoS policy as the colour image (its own match)."""
        node = self._node
        depth = self.topic("depth")
        offered = qos.offered_reliabilities(node, node.resolve_topic_name(depth))
        self._depth_reliability = qos.choose_reliability(self._p("input_reliability"), offered)
        callbacks = SubscriptionEventCallbacks(incompatible_qos=lambda e: self._on_incompatible_qos(e, depth))
        self._depth_sub = node.create_subscription(
            Image, depth, self._on_depth, qos.input_qos(self._depth_reliability, self._p("input_queue_depth")),
            event_callbacks=callbacks)

    def _check_qos(self) -> None:
        """Re-match the input reliability when the camera's publishers change (auto mode)."""
        if self._p("input_reliability") != "auto" or not self._subs:
            return
        node = self._node
        depth = self.topic("depth")
        for topic, current in ((self.image_topic()[1], self.reliability), (depth, self._depth_reliability)):
            resolved = node.resolve_topic_name(topic)
            offered = qos.offered_reliabilities(node, resolved)
            wanted = qos.rematch(self._p("input_reliability"), current, offered)
            if wanted is None:
                continue
            node.get_logger().info(
                f"publishers on {resolved} now offer {', '.join(sorted({qos.reliability_name(r) for r in offered}))};"
                f" resubscribing {qos.reliability_name(wanted)}")
            if topic == depth:
                node.destroy_subscription(self._depth_sub)
                self._subscribe_depth()
            else:
                timer, self._graph_timer = self._graph_timer, None
                self.deactivate()
                self._subscribe()
                self._graph_timer = timer
                return

    def _on_incompatible_qos(self, event: Any, topic: str) -> None:
        resolved = self._node.resolve_topic_name(topic)
        current = self._depth_reliability if topic == self.topic("depth") else self.reliability
        self._warn("qos",
                   f"a publisher on {resolved} offers QoS incompatible with this subscription "
                   f"({qos.reliability_name(current)}; last policy: {event.last_policy_kind}). "
                   "Fix: set input_reliability:=auto or best_effort, or make the camera publish reliable.")

    # ------------------------------------------------------------------ callbacks
    def _on_camera_info(self, msg: CameraInfo) -> None:
        why = camera_info_problem(msg)
        if why:
            k = msg.k
            self._warn("camera_info",
                       f"ignoring camera_info on {self._node.resolve_topic_name(self.topic('camera_info'))}: size "
                       f"{msg.width}x{msg.height}, fx={k[0]}, fy={k[4]} (needs a size and positive focal lengths)")
            self.camera_info = None
            return
        self.camera_info = msg

    def _on_depth_camera_info(self, msg: CameraInfo) -> None:
        why = camera_info_problem(msg)
        if why:
            self._warn("depth_camera_info",
                       f"ignoring depth camera_info on {self._node.resolve_topic_name(self.topic('depth/camera_info'))}: size "
                       f"{msg.width}x{msg.height}, fx={msg.k[0]}, fy={msg.k[4]} ({why}); 3D needs a calibrated camera")
            self.depth_camera_info = None
            return
        self.depth_camera_info = msg

    def _image_callback(self) -> Callable[..., None]:
        """The image callback; it takes rclpy's MessageInfo where rclpy passes one
        (Jazzy and later), whose publication sequence numbers show frames lost in transport."""
        if CALLBACKS_GET_MESSAGE_INFO:
            return self._on_image
        return lambda msg: self._on_image(msg, None)

    def _on_image(self, msg: Image | CompressedImage, info: Any) -> None:
        """``info``: rclpy's MessageInfo, or None. A required argument: rclpy passes it
        only to callbacks that cannot be called with the message alone."""
        received = time.monotonic()
        sent_ns = None
        if info is not None:
            self.transport.add(info.get("publisher_gid"), info.get("publication_sequence_number"))
            sent_ns = info.get("source_timestamp")
        # Pair with depth now too: a slow model must not find its depth image evicted.
        early = self.depth.early(stamp_ns(msg.header.stamp))
        self._on_frame(msg, received, early, _transit(sent_ns))

    def _on_depth(self, msg: Image) -> None:
        """Only buffered here; decoded by the worker once a colour frame pairs with it."""
        self.depth.add(stamp_ns(msg.header.stamp), msg)

    # ------------------------------------------------------------------ per frame
    def check_header(self, msg: Image | CompressedImage) -> None:
        stamp = stamp_ns(msg.header.stamp)
        if self._last_stamp_ns is not None and stamp < self._last_stamp_ns:
            self._warn("stamp", "input stamps went backwards (bag restarted or clock jumped); "
                       "outputs keep the input stamps")
        self._last_stamp_ns = stamp
        if not msg.header.frame_id:
            self._warn("frame_id", "input image has an empty frame_id; outputs and markers carry it as is")

    def intrinsics(self, width: int, height: int) -> CameraIntrinsics | None:
        """Intrinsics of the colour image: its camera_info, else the depth camera_info
        (registered depth has the colour intrinsics) scaled to the colour size."""
        info = self.camera_info
        if info is not None:
            if (info.width, info.height) == (width, height):
                return CameraIntrinsics.from_k(list(info.k))  # checked on arrival
            self._warn("camera_info",
                       f"camera_info is for {info.width}x{info.height} but images are {width}x{height}; "
                       "not using it (check the camera_info remapping)")
        info = self.depth_camera_info
        if info is None:
            return None
        try:
            return scaled_intrinsics(info.k, (info.width, info.height), (width, height))
        except ValueError as exc:
            self._warn("depth_camera_info", f"not using the depth camera_info on "
                       f"{self._node.resolve_topic_name(self.topic('depth/camera_info'))}: {exc}")
            return None

    def diagnostics(self) -> dict[str, str]:
        """Which intrinsics 3D can use (the newest usable camera_info of each stream, or
        "none"), and frames the camera's publishers sent that never arrived."""
        known = CALLBACKS_GET_MESSAGE_INFO and self.transport.known
        return {"camera_info": info_size(self.camera_info), "depth_camera_info": info_size(self.depth_camera_info),
                "frames_published": str(self.transport.sent) if known else "unknown",
                "frames_lost_in_transport": str(self.transport.lost) if known else "unknown"}

    def check_transport_loss(self) -> None:
        """Warn (throttled) when frames went missing between the camera and us since the last call."""
        sent, lost = self.transport.since_last_check()
        if lost <= 0:
            return
        topic = self._node.resolve_topic_name(self.image_topic()[1])
        self._warn("transport_loss",
                   f"{lost} of {sent} frames published on {topic} never arrived (lost in DDS transport before "
                   f"this node: large frames over UDP, usually with a best-effort publisher; reliability here: "
                   f"{qos.reliability_name(self.reliability) if self.reliability is not None else '-'}). Fix: make "
                   "the camera publish reliable, or set FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA (or a Fast DDS "
                   "shared-memory profile) for both the camera and this node, or raise the socket buffers "
                   "(sysctl net.core.rmem_max / wmem_max)")
