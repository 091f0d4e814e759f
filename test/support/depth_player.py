"""A depth camera in its own process: publishes a recording's depth images on command.

``python test/support/depth_player.py --bag BAG --depth TOPIC --info TOPIC`` reads the bag's
depth images (``/camera/depth/image_raw``) and depth camera_info, prints ``ready``
once the node subscribes, then takes one JSON command per line on stdin and
answers ``sent <index>`` after publishing:

    {"index": 3, "sec": 1700000000, "nanosec": 210000000, "variant": "mm16", "delay": 0.0}

The stamp is the colour frame's moved by the test (depth lags colour by a few
milliseconds on real cameras). ``delay`` seconds pass before publishing (depth
arriving after colour). Variants, as drivers and faults produce them:

    m32          as recorded: 32FC1 metres, NaN where there is no reading
    mm16         16UC1 millimetres, 0 where there is no reading
    half         32FC1 at half resolution (a decimated registered stream) with a
                 matching half-resolution camera_info
    holes        32FC1 with the rectangles of ``"holes": [[x0, y0, x1, y1, "nan"|"inf"|0], ...]``
    wrong_aspect 32FC1 cut to 640x400: not the colour image's view
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--bag", required=True)
    p.add_argument("--depth", required=True)
    p.add_argument("--info", required=True)
    args = p.parse_args(argv)

    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rclpy.serialization import deserialize_message, serialize_message
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore
    from sensor_msgs.msg import CameraInfo, Image

    from seg_perception.bags import read_images
    from seg_perception.synth.recording import DEPTH_INFO_TOPIC, DEPTH_TOPIC

    frames = [deserialize_message(f.raw, Image) for f in read_images(args.bag, DEPTH_TOPIC)]
    with AnyReader([Path(args.bag)], default_typestore=get_typestore(Stores.ROS2_KILTED)) as reader:
        conns = [c for c in reader.connections if c.topic == DEPTH_INFO_TOPIC]
        info_raw = next(bytes(raw) for _, _, raw in reader.messages(connections=conns))
    info_full = deserialize_message(info_raw, CameraInfo)

    rclpy.init()
    node = rclpy.create_node("depth_camera")
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    depth_pub = node.create_publisher(Image, args.depth, qos)
    info_pub = node.create_publisher(CameraInfo, args.info, 5)
    deadline = time.monotonic() + 30  # both matched, or the first (volatile) messages are lost
    while min(depth_pub.get_subscription_count(), info_pub.get_subscription_count()) == 0 \
            and time.monotonic() < deadline:
        time.sleep(0.02)
    matched = min(depth_pub.get_subscription_count(), info_pub.get_subscription_count()) > 0
    # Matching is seen here first; until the node's readers have matched these writers too,
    # a volatile sample (the first camera_info) can still be lost.
    time.sleep(1.0)
    print("ready" if matched else "no subscriber", flush=True)

    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        if cmd.get("quit"):
            break
        src = frames[int(cmd["index"])]
        metres = np.frombuffer(bytes(src.data), "<f4").reshape(src.height, src.width).copy()
        info = deserialize_message(serialize_message(info_full), CameraInfo)
        variant = cmd.get("variant", "m32")
        if variant == "mm16":
            with np.errstate(invalid="ignore"):
                mm = np.where(np.isfinite(metres), np.round(metres * 1000.0), 0).astype(np.uint16)
            msg = _image(mm, "16UC1")
        elif variant == "half":
            msg = _image(metres[::2, ::2], "32FC1")
            info.width, info.height = src.width // 2, src.height // 2
            k = list(info.k)
            k[0], k[4] = k[0] / 2, k[4] / 2
            k[2], k[5] = (k[2] + 0.5) / 2 - 0.5, (k[5] + 0.5) / 2 - 0.5
            info.k = k
        elif variant == "holes":
            for x0, y0, x1, y1, value in cmd["holes"]:
                metres[y0:y1, x0:x1] = float(value)
            msg = _image(metres, "32FC1")
        elif variant == "wrong_aspect":
            msg = _image(metres[:400], "32FC1")
        else:
            msg = _image(metres, "32FC1")
        msg.header.frame_id = src.header.frame_id
        msg.header.stamp.sec, msg.header.stamp.nanosec = int(cmd["sec"]), int(cmd["nanosec"])
        info.header = msg.header
        time.sleep(float(cmd.get("delay", 0.0)))
        info_pub.publish(info)
        depth_pub.publish(msg)
        print(f"sent {cmd['index']}", flush=True)

    node.destroy_node()
    rclpy.try_shutdown()
    return 0


def _image(array: np.ndarray, encoding: str):
    from sensor_msgs.msg import Image

    a = np.ascontiguousarray(array.astype("<u2" if encoding == "16UC1" else "<f4"))
    return Image(height=a.shape[0], width=a.shape[1], encoding=encoding, is_bigendian=0, step=a.strides[0],
                 data=a.tobytes())


if __name__ == "__main__":
    raise SystemExit(main())
