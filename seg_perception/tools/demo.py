"""``seg-perception demo``: the node on a recording, outputs to a bag and PNGs.

Starts ``seg_perception_node`` in its own process as ``ros2 launch`` would, plays
the recording's colour frames into it over DDS (one frame at a time, so none is
dropped), records ``instances``/``keypoints`` into an MCAP bag and saves the
``debug/image`` overlays as PNG files.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import time
from pathlib import Path

import cv2
import numpy as np


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seg-perception demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bag", required=True, help="rosbag2 recording (directory or .mcap/.db3 file)")
    parser.add_argument("--topic", default=None, help="colour image topic (default: the only one in the bag)")
    parser.add_argument("--out", default="demo_output", help="output directory (replaced if it exists)")
    parser.add_argument("--model", default="", help="model path (default: the shipped model)")
    parser.add_argument("--params", default="", help="parameter YAML (default: config/seg_perception.yaml)")
    parser.add_argument("--backend", default="", help="backend override")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each result")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # ROS imports here so `--help` works without a sourced ROS environment.
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import CompressedImage, Image

    from seg_perception.bags import BagError, OutputBag, read_images
    from seg_perception.core.image import decode_image
    from seg_perception.ros.launch_args import node_launch_spec
    from seg_perception.ros.replay import CameraAndConsumer, NodeProcess

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    (out / "overlays").mkdir(parents=True)
    repo = Path(__file__).resolve().parents[2]
    spec = node_launch_spec({"params_file": args.params or str(repo / "config" / "seg_perception.yaml"),
                             "model_path": args.model, "backend": args.backend,
                             "image": "/demo/camera/image", "camera_info": "/demo/camera/camera_info"}, repo)
    try:
        frames = list(read_images(args.bag, args.topic))
    except BagError as exc:
        print(f"error: {exc}")
        return 2
    if not frames:
        print(f"error: {args.bag}: no frames on the image topic")
        return 2
    env = {"ROS_DOMAIN_ID": os.environ.get("ROS_DOMAIN_ID", str(random.randint(150, 220)))}
    os.environ.update(env)
    node = NodeProcess(spec, out / "node.log", env)
    player = CameraAndConsumer(image_topic="/demo/camera/image", camera_info_topic="/demo/camera/camera_info",
                               compressed=frames[0].msgtype.endswith("CompressedImage"), subscribe_debug_image=True)
    msg_type = CompressedImage if frames[0].msgtype.endswith("CompressedImage") else Image
    latencies, missing = [], 0
    try:
        info = player.wait_for_node(node, timeout=120.0)
        print(f"node active: model '{info.model_name}' ({info.architecture}) on {info.backend}; "
              f"{len(frames)} frames from {frames[0].topic}")
        with OutputBag(out / "outputs") as bag:
            for frame in frames:
                msg = deserialize_message(frame.raw, msg_type)
                t0 = time.monotonic()
                result = player.publish_and_wait(msg, timeout=args.timeout)
                if result is None:
                    missing += 1
                    print(f"  frame {frame.index}: no result within {args.timeout:.0f} s")
                    continue
                latencies.append(time.monotonic() - t0)
                stamp_ns = result.header.stamp.sec * 1_000_000_000 + result.header.stamp.nanosec
                bag.write("/seg_perception/instances", "seg_perception/msg/InstanceArray", stamp_ns,
                          serialize_message(result))
                if info.keypoint_names:  # keypoints travel separately; wait for the same stamp
                    player.wait_for(lambda r: any(k.header.stamp == result.header.stamp for k in r.keypoints), 5.0)
                kp = [k for k in player.received.keypoints if k.header.stamp == result.header.stamp]
                if kp:
                    bag.write("/seg_perception/keypoints", "seg_perception/msg/PoseKeypointsArray", stamp_ns,
                              serialize_message(kp[-1]))
                best = sorted(result.instances, key=lambda i: -i.score)[:5]
                names = ", ".join(f"{i.class_name} {i.score:.2f}" for i in best) or "nothing"
                if len(result.instances) > len(best):
                    names += ", ..."
                print(f"  frame {frame.index}: {len(result.instances)} instances ({names}), "
                      f"{latencies[-1] * 1e3:.0f} ms")
            player.wait_for(lambda r: len(r.debug_images) >= len(latencies), 5.0)
        for i, img in enumerate(player.received.debug_images):
            rgb = decode_image(img.encoding, img.width, img.height, img.step, img.data)
            cv2.imwrite(str(out / "overlays" / f"frame_{i:04d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    except (TimeoutError, RuntimeError) as exc:
        print(f"error: {exc}")
        return 1
    finally:
        player.close()
        node.stop()
    print(f"\nprocessed {len(latencies)} of {len(frames)} frames; mean latency {np.mean(latencies) * 1e3:.1f} ms "
          f"(publish to result, over DDS between two processes)" if latencies else "no frame processed")
    print(f"output bag: {out / 'outputs'} (instances, keypoints; read it with rosbags)")
    print(f"overlays:   {out / 'overlays'} ({len(player.received.debug_images)} PNG files)")
    print(f"node log:   {out / 'node.log'}")
    return 0 if latencies and not missing else 1


if __name__ == "__main__":
    raise SystemExit(main())
