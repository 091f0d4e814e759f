"""The through-ROS run: recordings replayed into the real node over DDS, its outputs recorded.

This checks what the offline run cannot: the node's parameter handling, QoS,
message conversion and threading. The node runs in its own process exactly as
``ros2 launch`` starts it (``node_launch_spec``), in a namespace of its own and with
``/clock`` remapped into it, so a replay next to a live robot stack disturbs nothing.
Images go out with their recorded header stamps; each output is matched to its
input by that stamp.

``rate`` 0 replays in lockstep (the next image once the last one's output arrived:
nothing is dropped, the run is deterministic); ``rate`` r > 0 replays r times real
time, and the node drops what it cannot keep up with, as on the robot.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Sequence

from seg_perception.core.stamps import NS_PER_SEC
from seg_perception.regression.golden import RunWriter, sha256_of
from seg_perception.regression.messages import (
    INSTANCE_ARRAY, MODEL_INFO, OUTPUT_TOPICS, POSE_KEYPOINTS_ARRAY, frame_from_instance_array,
)
from seg_perception.regression.records import FrameResult
from seg_perception.regression.sources import BagSource, InputDigest, frame_rgb, iter_frames


class _Sent(NamedTuple):
    """What is kept of one published frame (not its pixels) until its output is recorded."""

    index: int
    bag_ns: int
    stamp: tuple[int, int]
    frame_id: str
    width: int
    height: int


class NodeRunError(RuntimeError):
    """The node could not be started or stopped answering; the message carries its log."""


def run_through_ros(
    sources: Sequence[BagSource],
    *,
    params_file: Path,
    values: Mapping[str, Any],
    overrides: Mapping[str, Any],
    writer: RunWriter,
    log_path: Path,
    rate: float = 0.0,
    use_sim_time: bool = False,
    timeout: float = 30.0,
    startup_timeout: float = 120.0,
    domain_id: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Replay each of ``sources`` into a fresh node; write its outputs through ``writer``.

    Recordings are independent units, as in the offline run: each gets a node of its own
    (so its tracker and track ids start afresh); the node's log of recording i > 0 goes
    to ``log_path`` with ``.i`` before the suffix.

    ``values`` are the effective parameters (params file + overrides), used for
    decoding checks; ``overrides`` go to the node as ``-p name:=value`` on top of
    ``params_file``. Returns the manifest's model and backend entries, as the node
    reported them in ``model_info``. Raises FrameError for an unreadable frame and
    NodeRunError when the node fails.
    """
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import CompressedImage, Image

    from seg_perception.ros.launch_args import node_launch_spec
    from seg_perception.ros.replay import CameraAndConsumer, NodeProcess, replay_timed

    types = {s.msgtype for s in sources}
    if len(types) > 1:
        raise ValueError("--through-ros replays all recordings into one node, which subscribes to either raw or "
                         f"compressed images; these recordings mix {', '.join(sorted(types))}: run them separately")
    compressed = sources[0].compressed
    msg_type = CompressedImage if compressed else Image
    namespace = f"seg_regress_{os.getpid()}"
    from seg_perception.resources import package_root

    repo = package_root()  # the default params file comes from here (a params file is always given)
    spec = node_launch_spec({"namespace": namespace, "image": "camera/image", "camera_info": "camera/camera_info",
                             "params_file": str(params_file), "use_compressed": str(compressed).lower()}, repo)
    spec.overrides.update(overrides)
    spec.overrides["use_compressed"] = compressed  # follows the recordings, whatever the params file says
    clock_topic = None
    if use_sim_time:
        spec.overrides["use_sim_time"] = True
        clock_topic = f"/{namespace}/clock"
        spec.remappings.append(("/clock", clock_topic))
    if domain_id is None:
        domain_id = int(os.environ.get("ROS_DOMAIN_ID") or random.randint(150, 220))
    os.environ["ROS_DOMAIN_ID"] = str(domain_id)  # rclpy.init below reads it from the environment

    occurrences: dict[tuple[int, int], int] = {}
    max_pixels = int(values["max_image_pixels"])
    info = None

    def checked(source: BagSource, digest: InputDigest) -> Iterator[tuple[_Sent, Any]]:
        """What we keep of each frame that decodes locally, and its rclpy message."""
        for frame in iter_frames(source):
            digest.add(frame)
            frame_rgb(source, frame, max_pixels)  # the same error as the offline run, naming the frame
            m = frame.msg
            sent = _Sent(frame.index, frame.timestamp_ns, (int(m.header.stamp.sec), int(m.header.stamp.nanosec)),
                         str(m.header.frame_id), int(getattr(m, "width", 0)), int(getattr(m, "height", 0)))
            yield sent, deserialize_message(frame.raw, msg_type)

    for number, source in enumerate(sources):
        log = log_path if number == 0 else log_path.with_suffix(f".{number}{log_path.suffix}")
        node = NodeProcess(spec, log, {"ROS_DOMAIN_ID": str(domain_id)})
        player = None
        try:
            player = CameraAndConsumer(namespace=namespace, image_topic="camera/image",
                                       camera_info_topic="camera/camera_info", compressed=compressed,
                                       node_name=f"seg_regress_player_{os.getpid()}", clock_topic=clock_topic)
            info = _wait_until_active(player, node, startup_timeout)
            # The node publishes keypoints for models with keypoints, and the grasp set for all.
            has_keypoints = bool(info.keypoint_names) or bool(values.get("publish_grasp_keypoints", True))
            writer.add_bag(source.key, source.info())
            digest = InputDigest()
            published: list[_Sent] = []
            if rate == 0:
                for sent, msg in checked(source, digest):
                    if clock_topic:
                        player.publish_clock(sent.bag_ns)
                    # Wait for one more output with this stamp than before: a stamp may repeat.
                    before = _count(player.received.instances, sent.stamp)
                    player.publish(msg)
                    arrived = player.wait_for(lambda r: _count(r.instances, sent.stamp) > before, timeout)
                    if not arrived and not node.alive():
                        raise NodeRunError(f"the node exited (code {node.proc.returncode}) at {source.key} frame "
                                           f"{sent.index}:\n{node.log_tail()}")
                    published.append(sent)
                    if progress is not None:
                        progress(1)
            else:
                def timed() -> Iterator[tuple[int, Any]]:
                    for sent, msg in checked(source, digest):
                        published.append(sent)
                        yield sent.bag_ns, msg

                replay_timed(player, timed(), rate, clock=clock_topic is not None,
                             on_publish=lambda _: progress(1) if progress is not None else None)
                # Wait (up to `timeout`) for an output per published frame; the node may have dropped some.
                wanted = Counter(sent.stamp for sent in published)
                player.wait_for(lambda rec: all(_count(rec.instances, s) >= n for s, n in wanted.items()), timeout)
            occurrences.clear()  # a new node's outputs: stamps count from zero again
            for sent in published:
                _record(writer, player, source, sent, occurrences, has_keypoints, info, serialize_message,
                        first=sent is published[0])
            writer.set_bag_info(input_sha256=digest.hexdigest())
        finally:
            if player is not None:
                player.close()
            node.stop()
    return _manifest_entries(info)


def _wait_until_active(player: Any, node: Any, timeout: float) -> Any:
    """Wait for the node's model_info; fail fast (with its log) when configure failed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if player.wait_for(lambda r: bool(r.model_info), 0.5):
            info = player.wait_for_node(node, timeout=10.0)
            if player.image_pub.get_subscription_count() == 0:
                raise NodeRunError(f"the node is active but does not subscribe to {player.image_pub.topic_name}:"
                                   f"\n{node.log_tail()}")
            return info
        if not node.alive():
            raise NodeRunError(f"the node exited with code {node.proc.returncode}:\n{node.log_tail()}")
        if "configure failed" in node.log_tail():
            raise NodeRunError(f"the node could not configure (see its log {node.log_path}):\n{node.log_tail()}")
    raise NodeRunError(f"the node did not become active within {timeout:.0f} s:\n{node.log_tail()}")


def _record(writer: RunWriter, player: Any, source: BagSource, sent: _Sent,
            occurrences: dict[tuple[int, int], int], has_keypoints: bool, info: Any,
            serialize: Callable[[Any], bytes], first: bool) -> None:
    """Write what the node published for one input frame (or a dropped-frame record)."""
    stamp, bag_ns = sent.stamp, sent.bag_ns
    nth = occurrences.get(stamp, 0)
    occurrences[stamp] = nth + 1
    if first:  # the latched model_info, once per output bag, before the first output
        writer.write_message(OUTPUT_TOPICS[MODEL_INFO], MODEL_INFO, bag_ns, serialize(info))
    result = player.instances_for(stamp, nth)
    if result is None:
        writer.write_frame(FrameResult(source.key, sent.index, stamp[0] * NS_PER_SEC + stamp[1], bag_ns,
                                       sent.frame_id, sent.width, sent.height, None))
        return
    writer.write_message(OUTPUT_TOPICS[INSTANCE_ARRAY], INSTANCE_ARRAY, bag_ns, serialize(result))
    if has_keypoints:
        kp = player.keypoints_for(stamp, nth)
        if kp is None and player.wait_for(lambda r: _count(r.keypoints, stamp) > nth, 5.0):
            kp = player.keypoints_for(stamp, nth)
        if kp is not None:
            writer.write_message(OUTPUT_TOPICS[POSE_KEYPOINTS_ARRAY], POSE_KEYPOINTS_ARRAY, bag_ns, serialize(kp))
    writer.write_frame(frame_from_instance_array(result, source.key, sent.index, bag_ns))


def _count(messages: Sequence[Any], stamp: tuple[int, int]) -> int:
    return sum(1 for m in messages if (m.header.stamp.sec, m.header.stamp.nanosec) == stamp)


def _manifest_entries(info: Any) -> dict[str, Any]:
    path = Path(info.model_path)
    return {
        "model": {"name": info.model_name, "architecture": info.architecture, "path": str(path),
                  "sha256": sha256_of(path) if path.is_file() else None,
                  "class_names": list(info.class_names), "keypoint_names": list(info.keypoint_names),
                  "input_size": [int(info.input_width), int(info.input_height)]},
        "backend": {"backend": info.backend, "device": info.device, "precision": info.precision,
                    "model_path": info.model_path},
    }


__all__ = ["run_through_ros", "NodeRunError"]
