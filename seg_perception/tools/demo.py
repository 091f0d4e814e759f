"""``seg-perception demo``: the node on recordings, outputs to bags and PNGs.

For each recording: starts ``seg_perception_node`` in its own process as
``ros2 launch`` would, plays the recording's colour frames (with its depth image
and camera infos, when recorded) into it over DDS one frame at a time, so none
is dropped, records ``instances``, ``keypoints`` and ``debug/markers`` (boxes, 3D
boxes and centroids, for RViz or Foxglove) into an MCAP bag and saves the
``debug/image`` overlays (masks, track ids, ranges) as PNG files.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from seg_perception.core.stamps import stamp_ns as header_stamp_ns

NS = "/demo/camera"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seg-perception demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bag", required=True, action="append",
                        help="rosbag2 recording (directory or .mcap/.db3 file); repeat for several")
    parser.add_argument("--topic", default=None, help="colour image topic (default: the only one in each bag)")
    parser.add_argument("--out", default="demo_output", help="output directory (replaced if it exists)")
    parser.add_argument("--model", default="", help="model path (default: the shipped model)")
    parser.add_argument("--params", default="", help="parameter YAML (default: config/seg_perception.yaml)")
    parser.add_argument("--backend", default="", help="backend override")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each result")
    return parser


@dataclass
class DemoResult:
    frames: int = 0
    latencies: list[float] = field(default_factory=list)
    missing: int = 0
    overlays: int = 0
    markers: int = 0
    with_3d: int = 0  # instances with 3D
    track_ids: set[int] = field(default_factory=set)


def run_one(bag: str, out: Path, args: argparse.Namespace, repo: Path) -> DemoResult:
    """Play one recording through a fresh node; raise RuntimeError/TimeoutError/BagError on failure."""
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image

    from seg_perception.bags import OutputBag, read_companions, read_images
    from seg_perception.core.image import decode_image
    from seg_perception.ros.launch_args import node_launch_spec
    from seg_perception.ros.replay import CameraAndConsumer, NodeProcess

    frames = list(read_images(bag, args.topic))
    if not frames:
        raise RuntimeError(f"{bag}: no frames on the image topic")
    companions = read_companions(bag, frames)
    (out / "overlays").mkdir(parents=True)
    from seg_perception.resources import default_params_file

    spec = node_launch_spec({"params_file": args.params or str(default_params_file()),
                             "model_path": args.model, "backend": args.backend, "image": f"{NS}/image",
                             "camera_info": f"{NS}/camera_info", "depth": f"{NS}/depth",
                             "depth_camera_info": f"{NS}/depth/camera_info"}, repo)
    # Lockstep playback sends each depth image just before its colour image; give it time to
    # arrive (Jazzy's Fast DDS 2.14 delivered a 1.2 MB depth image later than the default
    # 0.1 s on a busy machine). Where depth never matches (hsr_people's is 0.2 s off colour)
    # this costs at most this long per frame.
    spec.overrides["depth_wait"] = 0.5
    compressed = frames[0].msgtype.endswith("CompressedImage")
    node = NodeProcess(spec, out / "node.log")
    player = CameraAndConsumer(image_topic=f"{NS}/image", camera_info_topic=f"{NS}/camera_info",
                               compressed=compressed, subscribe_debug_image=True, subscribe_markers=True)
    depth_pub = player.node.create_publisher(Image, f"{NS}/depth", 5)
    depth_info_pub = player.node.create_publisher(CameraInfo, f"{NS}/depth/camera_info", 5)
    result = DemoResult(frames=len(frames))
    try:
        info = player.wait_for_node(node, timeout=120.0)
        has_depth = any(c.depth for c in companions)
        print(f"node active: model '{info.model_name}' ({info.architecture}) on {info.backend}; "
              f"{len(frames)} frames from {frames[0].topic}{' with depth' if has_depth else ''}")
        overlays_on = markers_on = True
        with OutputBag(out / "outputs") as out_bag:
            for frame, extra in zip(frames, companions):
                msg = deserialize_message(frame.raw, CompressedImage if compressed else Image)
                if extra.depth_camera_info:
                    depth_info_pub.publish(deserialize_message(extra.depth_camera_info, CameraInfo))
                if extra.depth:
                    depth_pub.publish(deserialize_message(extra.depth, Image))
                info_msg = deserialize_message(extra.camera_info, CameraInfo) if extra.camera_info else None
                t0 = time.monotonic()
                instances = player.publish_and_wait(msg, timeout=args.timeout, camera_info=info_msg)
                if instances is None:
                    result.missing += 1
                    print(f"  frame {frame.index}: no result within {args.timeout:.0f} s")
                    continue
                result.latencies.append(time.monotonic() - t0)
                stamp_ns = header_stamp_ns(instances.header.stamp)
                out_bag.write("/seg_perception/instances", "seg_perception/msg/InstanceArray", stamp_ns,
                              serialize_message(instances))
                # Keypoints and the overlay travel on their own topics: wait for the same stamp.
                stamp = instances.header.stamp
                same = lambda r: any(k.header.stamp == stamp for k in r.keypoints)  # noqa: E731
                if player.wait_for(same, 5.0 if info.keypoint_names else 1.0):
                    kp = next(k for k in reversed(player.received.keypoints) if k.header.stamp == stamp)
                    out_bag.write("/seg_perception/keypoints", "seg_perception/msg/PoseKeypointsArray", stamp_ns,
                                  serialize_message(kp))
                if overlays_on and player.wait_for(lambda r: any(d.header.stamp == stamp for d in r.debug_images),
                                                   args.timeout):
                    img = next(d for d in reversed(player.received.debug_images) if d.header.stamp == stamp)
                    rgb = decode_image(img.encoding, img.width, img.height, img.step, img.data)
                    cv2.imwrite(str(out / "overlays" / f"frame_{frame.index:04d}.png"),
                                cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
                    result.overlays += 1
                elif overlays_on:  # publish_debug_image off in the params file, or the node is overloaded
                    print(f"  frame {frame.index}: no debug/image overlay within {args.timeout:.0f} s; "
                          "not waiting for overlays any more")
                    overlays_on = False
                if markers_on and player.wait_for(lambda r: any(_marker_stamp(m) == stamp for m in r.markers), 5.0):
                    markers = next(m for m in reversed(player.received.markers) if _marker_stamp(m) == stamp)
                    out_bag.write("/seg_perception/debug/markers", "visualization_msgs/msg/MarkerArray", stamp_ns,
                                  serialize_message(markers))
                    result.markers += 1
                elif markers_on:  # publish_markers off in the params file
                    print(f"  frame {frame.index}: no debug/markers within 5 s; not waiting for markers any more")
                    markers_on = False
                result.with_3d += sum(inst.has_3d for inst in instances.instances)
                result.track_ids.update(inst.id for inst in instances.instances if inst.id)
                print(f"  frame {frame.index}: {describe(instances)}, {result.latencies[-1] * 1e3:.0f} ms")
    finally:
        player.close()
        node.stop()
    return result


def _marker_stamp(msg):
    return msg.markers[0].header.stamp if msg.markers else None


def describe(msg) -> str:
    """``3 instances (bottle #2 0.91 @ 0.98 m, ...)``: the best five, with track id and range."""
    best = sorted(msg.instances, key=lambda i: -i.score)[:5]
    parts = []
    for inst in best:
        text = f"{inst.class_name}{f' #{inst.id}' if inst.id else ''} {inst.score:.2f}"
        if inst.has_3d:  # the distance of the centroid, as the overlay labels
            c = inst.centroid
            text += f" @ {float(np.sqrt(c.x ** 2 + c.y ** 2 + c.z ** 2)):.2f} m"
        parts.append(text)
    more = ", ..." if len(msg.instances) > len(best) else ""
    return f"{len(msg.instances)} instances ({', '.join(parts) or 'nothing'}{more})"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from seg_perception.bags import BagError

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    from seg_perception.resources import package_root

    repo = package_root()
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(150, 220)))
    from seg_perception.ros.replay import prefer_shared_memory_for_large_samples

    transports = prefer_shared_memory_for_large_samples()
    if transports:
        print(f"DDS: FASTDDS_BUILTIN_TRANSPORTS={transports} (large images through shared memory; docs/performance.md)")
    status = 0
    for bag in args.bag:
        name = Path(bag).name.removesuffix(".mcap").removesuffix(".db3")
        bag_out = out / name if len(args.bag) > 1 else out
        print(f"\n== {bag}")
        try:
            r = run_one(bag, bag_out, args, repo)
        except BagError as exc:
            print(f"error: {exc}")
            status = max(status, 2)
            continue
        except (TimeoutError, RuntimeError) as exc:
            print(f"error: {exc}")
            status = max(status, 1)
            continue
        if r.latencies:
            print(f"processed {len(r.latencies)} of {r.frames} frames; mean latency {np.mean(r.latencies) * 1e3:.1f} ms "
                  "(publish to result, over DDS between two processes)")
        else:
            print("no frame processed")
        print(f"tracking:   {len(r.track_ids)} track ids; {r.with_3d} instances with 3D")
        print(f"output bag: {bag_out / 'outputs'} (instances, keypoints, {r.markers} marker arrays; "
              "read it with rosbags, view the markers in RViz or Foxglove)")
        print(f"overlays:   {bag_out / 'overlays'} ({r.overlays} PNG files)")
        print(f"node log:   {bag_out / 'node.log'}")
        if r.missing or not r.latencies:
            status = max(status, 1)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
