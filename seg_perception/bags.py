"""Reading camera recordings and writing output bags with ``rosbags`` (no ROS needed).

Output bags register the package's own message definitions, so ``ros2 bag info``
and ``rosbags`` read them like any other bag.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from seg_perception.core.stamps import stamp_ns

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
PACKAGE = "seg_perception"


class BagError(RuntimeError):
    """A bag could not be read as asked; the message names the file and topic."""


def msg_dir() -> Path:
    """The package's .msg files (``resources``: the checkout's, else the installed share directory's)."""
    from seg_perception.resources import ResourceError, resource

    try:
        return resource("msg")
    except ResourceError as exc:  # pragma: no cover - only without both
        raise BagError(str(exc)) from None


def typestore():
    """A Kilted typestore with seg_perception/msg/* registered."""
    store = get_typestore(Stores.ROS2_KILTED)
    types: dict[str, Any] = {}
    for path in sorted(msg_dir().glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"{PACKAGE}/msg/{path.stem}"))
    store.register(types)
    return store


@dataclass
class BagImage:
    """One image message of a recording: its topic, receive time and the message."""

    topic: str
    index: int
    timestamp_ns: int
    msgtype: str
    msg: Any  # rosbags' deserialised Image or CompressedImage
    raw: bytes  # the CDR bytes as stored (rclpy.serialization.deserialize_message takes them)


def image_topics(reader: AnyReader) -> dict[str, str]:
    return {c.topic: c.msgtype for c in reader.connections if c.msgtype in IMAGE_TYPES}


def choose_image_topic(reader: AnyReader, topic: str | None, path: str | Path) -> str:
    """The topic to read: the one asked for, else the only colour image topic."""
    topics = image_topics(reader)
    if topic:
        if topic not in topics:
            listing = ", ".join(f"{c.topic} ({c.msgtype})" for c in reader.connections) or "none"
            raise BagError(f"{path}: no image topic '{topic}'; topics: {listing}")
        return topic
    colour = {t: m for t, m in topics.items() if "depth" not in t.lower()}
    if len(colour) == 1:
        return next(iter(colour))
    if not colour:
        raise BagError(f"{path}: no sensor_msgs Image or CompressedImage topic (besides depth)")
    raise BagError(f"{path}: several image topics ({', '.join(sorted(colour))}); choose one with --topic")


def read_images(path: str | Path, topic: str | None = None) -> Iterator[BagImage]:
    """Image messages of one topic in recording order; BagError names what is wrong."""
    path = Path(path)
    if not path.exists():
        raise BagError(f"bag not found: {path}")
    try:
        with AnyReader([path], default_typestore=get_typestore(Stores.ROS2_KILTED)) as reader:
            chosen = choose_image_topic(reader, topic, path)
            conns = [c for c in reader.connections if c.topic == chosen]
            for index, (conn, timestamp, raw) in enumerate(reader.messages(connections=conns)):
                try:
                    msg = reader.deserialize(raw, conn.msgtype)
                except Exception as exc:
                    raise BagError(f"{path}: topic {chosen}, message {index}: cannot deserialise: {exc}") from None
                yield BagImage(chosen, index, timestamp, conn.msgtype, msg, bytes(raw))
    except BagError:
        raise
    except Exception as exc:
        raise BagError(f"cannot read bag {path}: {type(exc).__name__}: {exc}") from None


def read_camera_infos(path: str | Path) -> dict[str, Any]:
    """The first CameraInfo of each CameraInfo topic (for markers and 3D)."""
    out: dict[str, Any] = {}
    with AnyReader([Path(path)], default_typestore=get_typestore(Stores.ROS2_KILTED)) as reader:
        conns = [c for c in reader.connections if c.msgtype == "sensor_msgs/msg/CameraInfo"]
        for conn, _, raw in reader.messages(connections=conns):
            out.setdefault(conn.topic, reader.deserialize(raw, conn.msgtype))
    return out


def rosbags_image_to_fields(msg: Any) -> dict[str, Any]:
    """The fields of a rosbags Image/CompressedImage as plain Python values."""
    if hasattr(msg, "encoding"):
        return dict(encoding=msg.encoding, width=int(msg.width), height=int(msg.height), step=int(msg.step),
                    data=np.asarray(msg.data, dtype=np.uint8), is_bigendian=bool(msg.is_bigendian))
    return dict(format=msg.format, data=np.asarray(msg.data, dtype=np.uint8))


class OutputBag:
    """Writes serialised (CDR) messages to a new rosbag2 bag, MCAP by default."""

    def __init__(self, path: str | Path, storage: str = "mcap") -> None:
        self.path = Path(path)
        if self.path.exists():
            raise BagError(f"output bag {self.path} already exists; remove it or choose another path")
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self._store = typestore()
        self._writer = Writer(self.path, version=9, storage_plugin=plugin)
        self._writer.open()
        self._conns: dict[str, Any] = {}
        self.count = 0

    def write(self, topic: str, msgtype: str, timestamp_ns: int, cdr: bytes) -> None:
        conn = self._conns.get(topic)
        if conn is None:
            conn = self._conns[topic] = self._writer.add_connection(topic, msgtype, typestore=self._store)
        self._writer.write(conn, timestamp_ns, cdr)
        self.count += 1

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> "OutputBag":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


@dataclass
class Companions:
    """The depth image and camera infos recorded with one colour frame (CDR bytes, or None)."""

    camera_info: bytes | None = None
    depth: bytes | None = None
    depth_camera_info: bytes | None = None


def _shared_depth(a: str, b: str) -> int:
    """How many leading name components topics ``a`` and ``b`` share (``/front/color/x``,
    ``/front/depth/y``: 1), which tells the topics of one camera in a multi-camera bag."""
    n = 0
    for x, y in zip(a.strip("/").split("/"), b.strip("/").split("/")):
        if x != y:
            break
        n += 1
    return n


def _closest(topics: list[str], to: str) -> str | None:
    """The topic sharing the most leading components with ``to`` (ties: the first by name)."""
    return max(sorted(topics), key=lambda t: _shared_depth(t, to), default=None)


def read_companions(path: str | Path, frames: list[BagImage], max_offset_s: float = 0.5) -> list[Companions]:
    """For each colour frame, the depth image and camera infos nearest to it by header stamp.

    Topics are recognised by type and name: a depth topic is an Image topic with
    "depth" in its name; its camera info shares the depth topic's namespace. In a
    recording of several cameras each colour topic takes the depth and camera info
    topics that share the most of its name (``/front/color/image_raw`` pairs with
    ``/front/depth/image_raw``, not ``/left/...``). The messages keep their own stamps:
    the node decides whether depth is close enough.
    """
    colour = frames[0].topic if frames else ""
    with AnyReader([Path(path)], default_typestore=get_typestore(Stores.ROS2_KILTED)) as reader:
        by_topic: dict[str, list[tuple[int, bytes]]] = {}
        wanted = [c for c in reader.connections if c.topic != colour and (
            c.msgtype == "sensor_msgs/msg/CameraInfo"
            or (c.msgtype == "sensor_msgs/msg/Image" and "depth" in c.topic.lower()))]
        for conn, _, raw in reader.messages(connections=wanted):
            by_topic.setdefault(conn.topic, []).append((stamp_ns(reader.deserialize(raw, conn.msgtype).header.stamp), bytes(raw)))
        types = {c.topic: c.msgtype for c in wanted}
    colour_ns = colour.rsplit("/", 1)[0]
    depth_topic = _closest([t for t, m in types.items() if m.endswith("Image")], colour)
    depth_ns = depth_topic.rsplit("/", 1)[0] if depth_topic else None
    infos = [t for t, m in types.items() if m.endswith("CameraInfo")]
    colour_info = next((t for t in infos if t.rsplit("/", 1)[0] == colour_ns), None) or \
        _closest([t for t in infos if "depth" not in t.lower()], colour)
    depth_info = next((t for t in infos if depth_ns and t.rsplit("/", 1)[0] == depth_ns), None)

    def nearest(topic: str | None, t: int) -> bytes | None:
        if topic is None or topic not in by_topic:
            return None
        stamp, raw = min(by_topic[topic], key=lambda item: abs(item[0] - t))
        return raw if abs(stamp - t) <= max_offset_s * 1e9 else None

    stamps = [stamp_ns(f.msg.header.stamp) for f in frames]
    return [Companions(nearest(colour_info, t), nearest(depth_topic, t), nearest(depth_info, t)) for t in stamps]
