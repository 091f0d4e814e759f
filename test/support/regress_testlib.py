"""Helpers for the regression-tool tests: small bags written on the spot, running the CLI."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import pytest

from conftest import HSR_IMAGE_TOPIC, HSR_MCAP, HSR_SQLITE

HSR_STAMPS_NS = [1556880098522459261, 1556880138807392590, 1556880145209200613, 1556880150437078707,
                 1556880154157335274]


def run_regress(capsys: pytest.CaptureFixture, *argv: Any) -> tuple[int, str, str]:
    """``seg-perception regress ARGV`` in this process (as the CLI runs it); (exit code, stdout, stderr)."""
    from seg_perception.tools.cli import main

    capsys.readouterr()
    code = main(["regress", "--no-progress", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def tree_digest(path: Path) -> dict[str, str]:
    """sha256 of every file under ``path`` (to show a golden run was not touched)."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


def hsr_rgb_frames() -> list[tuple[int, Any]]:
    """(bag time, rosbags Image) of the real recording's colour frames."""
    from seg_perception.bags import read_images

    return [(f.timestamp_ns, f.msg) for f in read_images(HSR_MCAP, HSR_IMAGE_TOPIC)]


def write_bag(path: Path, messages: Sequence[tuple[str, str, int, Any]], storage: str = "mcap",
              extra_types: dict[str, Any] | None = None) -> Path:
    """A rosbag2 bag of ``(topic, msgtype, bag time ns, rosbags message)``; returns its directory."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    from seg_perception.bags import typestore

    store = typestore()
    if extra_types:
        store.register(extra_types)
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    conns: dict[str, Any] = {}
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        for topic, msgtype, t, msg in messages:
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=store)
            writer.write(conns[topic], t, store.serialize_cdr(msg, msgtype))
    return path


def image_msg(rgb: np.ndarray, stamp_ns: int, frame_id: str = "camera", data: bytes | None = None) -> Any:
    """A rosbags sensor_msgs/Image (rgb8) of ``rgb``; ``data`` replaces its pixels (to corrupt it)."""
    from seg_perception.bags import typestore

    t = typestore().types
    header = t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](
        sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000), frame_id=frame_id)
    h, w = rgb.shape[:2]
    payload = np.frombuffer(data if data is not None else np.ascontiguousarray(rgb).tobytes(), np.uint8)
    return t["sensor_msgs/msg/Image"](header=header, height=h, width=w, encoding="rgb8", is_bigendian=0,
                                      step=w * 3, data=payload)


def compressed_msg(image: Any, fmt: str) -> Any:
    """The rosbags CompressedImage (``fmt`` png or jpeg) of a rosbags rgb8 Image, same header."""
    from seg_perception.bags import typestore

    rgb = np.asarray(image.data, np.uint8).reshape(image.height, image.width, 3)
    ok, buf = cv2.imencode(".png" if fmt == "png" else ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    t = typestore().types
    return t["sensor_msgs/msg/CompressedImage"](header=image.header, format=f"rgb8; {fmt} compressed bgr8",
                                                data=np.frombuffer(buf.tobytes(), np.uint8))


def message_fields(msg: Any) -> Any:
    """A rosbags message as nested plain values (arrays as lists), for equality checks."""
    if hasattr(msg, "__dataclass_fields__"):
        return {k: message_fields(getattr(msg, k)) for k in msg.__dataclass_fields__ if k != "__msgtype__"}
    if isinstance(msg, np.ndarray):
        return msg.tolist()
    if isinstance(msg, (list, tuple)):
        return [message_fields(m) for m in msg]
    return msg


def read_bag_messages(path: Path) -> list[tuple[str, int, Any]]:
    """(topic, bag time, deserialised message) of an output bag, in order."""
    from rosbags.highlevel import AnyReader

    from seg_perception.bags import typestore

    with AnyReader([path], default_typestore=typestore()) as reader:
        return [(c.topic, t, reader.deserialize(raw, c.msgtype)) for c, t, raw in reader.messages()]


@pytest.fixture(scope="module")
def hsr_golden(tmp_path_factory: pytest.TempPathFactory, known_answer_model: Path, hsr_bag: Path) -> Path:
    """A golden run of the known-answer model over both storage formats of the real recording."""
    from seg_perception.tools.regress import main

    root = tmp_path_factory.mktemp("hsr_golden")
    code = main([str(HSR_MCAP), str(HSR_SQLITE), "--golden", str(root / "golden"), "--model", str(known_answer_model),
                 "--backend", "onnxruntime", "--update-golden", "--out", str(root / "out"), "--no-progress"])
    assert code == 0
    return root / "golden"


FRONT, LEFT = "/front/color/image_raw", "/left/color/image_raw"


def two_camera_bag(path: Path, left_image=lambda rgb: rgb[:, ::-1]) -> Path:
    """The real recording's frames as the front camera and, mirrored, as the left camera."""
    messages = []
    for bag_ns, msg in hsr_rgb_frames():
        rgb = np.asarray(msg.data, np.uint8).reshape(msg.height, msg.width, 3)
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        messages.append((FRONT, "sensor_msgs/msg/Image", bag_ns, image_msg(rgb, stamp, "front")))
        other = np.ascontiguousarray(left_image(rgb))
        messages.append((LEFT, "sensor_msgs/msg/Image", bag_ns + 1_000_000, image_msg(other, stamp + 1000, "left")))
    return write_bag(path, messages)
