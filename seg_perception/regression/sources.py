"""The recordings a regression run replays: checked up front, read with errors that name
the file, the topic and the frame.

A run that fails half-way must say where, and must not produce a golden run, so each
recording is inspected before any frame is processed (does it open, does the topic
exist and carry images, how many frames), and reading errors during the run name the
frame that could not be read.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from seg_perception.core.stamps import stamp_ns
from seg_perception.bags import IMAGE_TYPES, BagError, BagImage, choose_image_topic, read_images
from seg_perception.core.image import ImageDecodeError, decode_compressed, decode_image
from seg_perception.regression.records import format_stamp


class FrameError(RuntimeError):
    """One frame could not be read or decoded; the message names bag, topic and frame."""


@dataclass
class BagSource:
    """One recording to replay: where it is, which topic, how many images."""

    path: Path
    key: str
    topic: str
    msgtype: str
    frames: int
    storage: str
    # The camera this source is, when a recording holds several (its image topic);
    # "" for a recording of one camera. Each camera has its own tracker.
    camera: str = ""

    @property
    def compressed(self) -> bool:
        return self.msgtype.endswith("CompressedImage")

    def info(self) -> dict[str, Any]:
        info = {"path": str(self.path), "topic": self.topic, "msgtype": self.msgtype, "storage": self.storage,
                "frames_in_bag": self.frames}
        if self.camera:
            info["camera"] = self.camera
        return info


def _storage(path: Path) -> str:
    files = [path] if path.is_file() else list(path.iterdir())
    if any(p.suffix == ".mcap" for p in files):
        return "mcap"
    if any(p.suffix == ".db3" for p in files):
        return "sqlite3"
    return "unknown"


def bag_key(path: Path, taken: set[str], camera: str = "") -> str:
    """A recording's name in the run: its directory (or file stem), with the camera's
    topic for one camera of several (``hsr__front_image``), made unique."""
    base = (path.stem if path.is_file() else path.name) or "bag"
    if camera:
        base += "__" + re.sub(r"[^A-Za-z0-9]+", "_", camera).strip("_")
    key, n = base, 2
    while key in taken:
        key, n = f"{base}_{n}", n + 1
    return key


def inspect_bag(path: str | Path, topic: str | None, taken: set[str] | None = None, camera: bool = False) -> BagSource:
    """Open a recording and choose its image topic; BagError says what is wrong and where.
    ``camera``: the topic is one camera of several in this recording (its own key and tracker)."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    path = Path(path)
    if not path.exists():
        raise BagError(f"bag not found: {path}")
    try:
        with AnyReader([path], default_typestore=get_typestore(Stores.ROS2_KILTED)) as reader:
            if topic:
                types = sorted({c.msgtype for c in reader.connections if c.topic == topic})
                if types and not set(types) <= set(IMAGE_TYPES):
                    listing = ", ".join(sorted({c.topic for c in reader.connections if c.msgtype in IMAGE_TYPES}))
                    raise BagError(f"{path}: topic {topic} has message type {', '.join(types)}, which regress "
                                   f"cannot replay (it reads {' or '.join(IMAGE_TYPES)}); image topics in this bag: "
                                   f"{listing or 'none'}")
            chosen = choose_image_topic(reader, topic, path)
            conns = [c for c in reader.connections if c.topic == chosen]
            msgtypes = sorted({c.msgtype for c in conns})
            if len(msgtypes) > 1:
                raise BagError(f"{path}: topic {chosen} carries several message types ({', '.join(msgtypes)})")
            count = sum(int(c.msgcount) for c in conns)
    except BagError:
        raise
    except Exception as exc:  # rosbags raises its own types (and sqlite3/OSError) for unreadable files
        raise BagError(f"cannot read bag {path}: {type(exc).__name__}: {exc}") from None
    if count == 0:
        raise BagError(f"{path}: topic {chosen} has no messages")
    name = chosen if camera else ""
    return BagSource(path, bag_key(path, taken or set(), name), chosen, msgtypes[0], count, _storage(path), name)


ALL_CAMERAS = "all"


def camera_topics(path: str | Path, topic: str | None) -> list[str | None]:
    """The image topics to replay from one recording: ``topic`` as given (None: its only
    colour topic), a comma-separated list, or "all" (every colour image topic: a
    recording of several cameras)."""
    if topic is None or ("," not in topic and topic != ALL_CAMERAS):
        return [topic]
    if topic != ALL_CAMERAS:
        return [t.strip() for t in topic.split(",") if t.strip()]
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    from seg_perception.bags import image_topics

    path = Path(path)
    if not path.exists():
        raise BagError(f"bag not found: {path}")
    try:
        with AnyReader([path], default_typestore=get_typestore(Stores.ROS2_KILTED)) as reader:
            topics = sorted(t for t in image_topics(reader) if "depth" not in t.lower())
    except Exception as exc:  # rosbags raises its own types for unreadable files
        raise BagError(f"cannot read bag {path}: {type(exc).__name__}: {exc}") from None
    if not topics:
        raise BagError(f"{path}: no sensor_msgs Image or CompressedImage topic (besides depth)")
    return list(topics)


def inspect_bags(paths: Sequence[str | Path], topic: str | None) -> list[BagSource]:
    """One source per recording, or per camera of a recording when ``topic`` names several
    (``camera_topics``): each camera is replayed and compared on its own."""
    sources: list[BagSource] = []
    for p in paths:
        topics = camera_topics(p, topic)
        for t in topics:
            sources.append(inspect_bag(p, t, {s.key for s in sources}, camera=len(topics) > 1))
    return sources


def iter_frames(source: BagSource) -> Iterator[BagImage]:
    """The images of ``source`` in order; FrameError names the frame a read failed at.

    A recording that ends before the count its index promised (a truncated file) is
    an error too, not a shorter run.
    """
    it = read_images(source.path, source.topic)
    index = 0
    while True:
        try:
            frame = next(it)
        except StopIteration:
            break
        except BagError as exc:
            raise FrameError(f"{exc} (bag {source.path}, topic {source.topic}, reading frame {index} of "
                             f"{source.frames}; frames 0..{index - 1} were read)") from None
        yield frame
        index += 1
    if index != source.frames:
        raise FrameError(f"bag {source.path}, topic {source.topic}: the recording ended after {index} of the "
                         f"{source.frames} frames its index lists (truncated or damaged file)")


class InputDigest:
    """sha256 over a recording's image messages as stored (CDR bytes), in order.

    Stored in a run's manifest so a comparison can tell "the model changed" from
    "the recording changed" (a regenerated or re-encoded recording).
    """

    def __init__(self) -> None:
        self._sha = hashlib.sha256()

    def add(self, frame: BagImage) -> None:
        self._sha.update(len(frame.raw).to_bytes(8, "little"))
        self._sha.update(frame.raw)

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


def frame_rgb(source: BagSource, frame: BagImage, max_pixels: int) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB of a recorded image, decoded as the node decodes it."""
    msg = frame.msg
    try:
        if source.compressed:
            return decode_compressed(msg.format, np.asarray(msg.data, np.uint8), max_pixels=max_pixels)
        return decode_image(msg.encoding, int(msg.width), int(msg.height), int(msg.step),
                            np.asarray(msg.data, np.uint8), is_bigendian=bool(msg.is_bigendian),
                            max_pixels=max_pixels)
    except ImageDecodeError as exc:
        raise FrameError(f"bag {source.path}, topic {source.topic}, frame {frame.index} "
                         f"(stamp {format_stamp(stamp_ns(msg.header.stamp))}): cannot decode the image: {exc}") from None
