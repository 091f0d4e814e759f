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
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from seg_perception.core.stamps import stamp_ns as header_stamp_ns

NS = "/demo/camera"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seg-perception demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bag", required=True, action="append",
                        help="rosbag2 recording (directory or .mcap/.db3 file); repeat for several")
    parser.add_argument("--topic", default=None,
                        help="colour image topic (default: the only one in each bag); several, comma-separated, or "
                             "'all': one node for all those cameras (the 'cameras' parameter)")
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


def names_from_topics(topics: list[str]) -> list[str]:
    """Short ROS names for the cameras of a recording, from their image topics: the part
    of each topic that differs (``/front/color/image_raw``, ``/left/color/image_raw`` ->
    ``front``, ``left``), ``camera<i>`` where that gives no valid, distinct name."""
    parts = [t.strip("/").split("/") for t in topics]
    head = 0
    while all(len(p) > head + 1 for p in parts) and len({p[head] for p in parts}) == 1:
        head += 1
    tail = 0
    while all(len(p) > head + tail + 1 for p in parts) and len({p[-1 - tail] for p in parts}) == 1:
        tail += 1
    names = ["_".join(p[head:len(p) - tail]) for p in parts]
    names = [re.sub(r"[^A-Za-z0-9_]", "_", n) for n in names]
    if len(set(names)) != len(names) or any(not n or not n[0].isalpha() for n in names):
        names = [f"camera{i}" for i in range(len(topics))]
    return names


class CameraPlayback:
    """One camera of a recording played into the node, its outputs recorded.

    ``name`` is the camera's name in the node's ``cameras`` list ("" for a single-camera
    node): its topics are ``<NS>/<name>/...`` and its outputs go to
    ``/seg_perception/<name>/...`` in the output bag and ``overlays/<name>/``.
    """

    def __init__(self, bag: str, topic: str | None, name: str, out: Path) -> None:
        from seg_perception.bags import read_companions, read_images

        self.frames = list(read_images(bag, topic))
        if not self.frames:
            raise RuntimeError(f"{bag}: no frames on the image topic {topic or ''}".rstrip())
        self.companions = read_companions(bag, self.frames)
        self.name = name
        self.ns = f"{NS}/{name}" if name else NS
        self.bag_prefix = f"/seg_perception/{name}" if name else "/seg_perception"
        self.overlay_dir = out / "overlays" / name if name else out / "overlays"
        self.overlay_dir.mkdir(parents=True)
        self.compressed = self.frames[0].msgtype.endswith("CompressedImage")
        self.result = DemoResult(frames=len(self.frames))
        self.overlays_on = self.markers_on = True
        self.player: Any = None
        self._label = f"[{name}] " if name else ""

    def topics(self) -> dict[str, str]:
        """This camera's input topics, as the node's launch arguments name them."""
        return {"image": f"{self.ns}/image", "camera_info": f"{self.ns}/camera_info",
                "depth": f"{self.ns}/depth", "depth_camera_info": f"{self.ns}/depth/camera_info"}

    def connect(self, multi_camera: bool) -> None:
        from sensor_msgs.msg import CameraInfo, Image

        from seg_perception.ros.replay import CameraAndConsumer

        # A multi-camera node: one player per camera, in the camera's namespace, and one
        # model_info. A single-camera node's outputs are in the root namespace.
        namespace, model_info = (self.ns, f"{NS}/model_info") if multi_camera else ("", "model_info")
        self.player = CameraAndConsumer(
            namespace=namespace, image_topic=f"{self.ns}/image", camera_info_topic=f"{self.ns}/camera_info",
            compressed=self.compressed, subscribe_debug_image=True, subscribe_markers=True,
            node_name=f"demo_player_{self.name}" if self.name else "demo_player", model_info_topic=model_info)
        self._depth_pub = self.player.node.create_publisher(Image, f"{self.ns}/depth", 5)
        self._depth_info_pub = self.player.node.create_publisher(CameraInfo, f"{self.ns}/depth/camera_info", 5)

    def describe_input(self) -> str:
        has_depth = any(c.depth for c in self.companions)
        return f"{self._label}{len(self.frames)} frames from {self.frames[0].topic}{' with depth' if has_depth else ''}"

    def send(self, k: int) -> tuple[tuple[int, int], float]:
        """Publish frame ``k`` (its depth and camera infos first); (its stamp, when sent)."""
        from rclpy.serialization import deserialize_message
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image

        frame, extra = self.frames[k], self.companions[k]
        msg = deserialize_message(frame.raw, CompressedImage if self.compressed else Image)
        if extra.depth_camera_info:
            self._depth_info_pub.publish(deserialize_message(extra.depth_camera_info, CameraInfo))
        if extra.depth:
            self._depth_pub.publish(deserialize_message(extra.depth, Image))
        info_msg = deserialize_message(extra.camera_info, CameraInfo) if extra.camera_info else None
        self.player.publish(msg, info_msg)
        return (msg.header.stamp.sec, msg.header.stamp.nanosec), time.monotonic()

    def collect(self, k: int, stamp: tuple[int, int], sent: float, out_bag: Any, timeout: float,
                keypoints_expected: bool) -> None:
        """Wait for frame ``k``'s outputs and record them."""
        from rclpy.serialization import serialize_message

        from seg_perception.core.image import decode_image

        player, result, index = self.player, self.result, self.frames[k].index
        if not player.wait_for(lambda r: any(_stamp(m) == stamp for m in r.instances), timeout):
            result.missing += 1
            print(f"  {self._label}frame {index}: no result within {timeout:.0f} s")
            return
        result.latencies.append(time.monotonic() - sent)
        instances = _newest(player.received.instances, stamp)  # a looped recording repeats stamps
        stamp_ns = header_stamp_ns(instances.header.stamp)
        out_bag.write(f"{self.bag_prefix}/instances", "seg_perception/msg/InstanceArray", stamp_ns,
                      serialize_message(instances))
        # Keypoints and the overlay travel on their own topics: wait for the same stamp.
        if player.wait_for(lambda r: any(_stamp(m) == stamp for m in r.keypoints), 5.0 if keypoints_expected else 1.0):
            out_bag.write(f"{self.bag_prefix}/keypoints", "seg_perception/msg/PoseKeypointsArray", stamp_ns,
                          serialize_message(_newest(player.received.keypoints, stamp)))
        if self.overlays_on and player.wait_for(lambda r: any(_stamp(d) == stamp for d in r.debug_images), timeout):
            img = _newest(player.received.debug_images, stamp)
            rgb = decode_image(img.encoding, img.width, img.height, img.step, img.data)
            cv2.imwrite(str(self.overlay_dir / f"frame_{index:04d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            result.overlays += 1
        elif self.overlays_on:  # publish_debug_image off in the params file, or the node is overloaded
            print(f"  {self._label}frame {index}: no debug/image overlay within {timeout:.0f} s; "
                  "not waiting for overlays any more")
            self.overlays_on = False
        if self.markers_on and player.wait_for(lambda r: any(_marker_stamp(m) == stamp for m in r.markers), 5.0):
            markers = next(m for m in reversed(player.received.markers) if _marker_stamp(m) == stamp)
            out_bag.write(f"{self.bag_prefix}/debug/markers", "visualization_msgs/msg/MarkerArray", stamp_ns,
                          serialize_message(markers))
            result.markers += 1
        elif self.markers_on:  # publish_markers off in the params file
            print(f"  {self._label}frame {index}: no debug/markers within 5 s; not waiting for markers any more")
            self.markers_on = False
        result.with_3d += sum(inst.has_3d for inst in instances.instances)
        result.track_ids.update(inst.id for inst in instances.instances if inst.id)
        print(f"  {self._label}frame {index}: {describe(instances)}, {result.latencies[-1] * 1e3:.0f} ms")

    def close(self) -> None:
        if self.player is not None:
            self.player.close()


def run_one(bag: str, out: Path, args: argparse.Namespace, repo: Path) -> dict[str, DemoResult]:
    """Play one recording through a fresh node: {camera name ("" for one camera): result}.
    Raises RuntimeError/TimeoutError/BagError on failure.

    Several cameras (``--topic all`` or a list) go into one node started with
    ``cameras``: each time step, every camera's frame is published, then every camera's
    outputs are awaited, so the node may batch them and drops none.
    """
    from seg_perception.bags import OutputBag
    from seg_perception.regression.sources import camera_topics
    from seg_perception.resources import default_params_file
    from seg_perception.ros.launch_args import node_launch_spec
    from seg_perception.ros.replay import NodeProcess

    topics = camera_topics(bag, args.topic)
    names = names_from_topics([t or "" for t in topics]) if len(topics) > 1 else [""]
    cameras = [CameraPlayback(bag, topic, name, out) for topic, name in zip(topics, names)]
    launch = {"params_file": args.params or str(default_params_file()), "model_path": args.model,
              "backend": args.backend}
    if len(cameras) > 1:
        launch.update(namespace=NS, cameras="[" + ", ".join(names) + "]")
    else:
        launch.update(cameras[0].topics())
    spec = node_launch_spec(launch, repo)
    # Lockstep playback sends each depth image just before its colour image; give it time to
    # arrive (Jazzy's Fast DDS 2.14 delivered a 1.2 MB depth image later than the default
    # 0.1 s on a busy machine). Where depth never matches (hsr_people's is 0.2 s off colour)
    # this costs at most this long per frame.
    spec.overrides["depth_wait"] = 0.5
    node = NodeProcess(spec, out / "node.log")
    try:
        info = None
        for camera in cameras:
            camera.connect(multi_camera=len(cameras) > 1)
            info = camera.player.wait_for_node(node, timeout=120.0)
        print(f"node active: model '{info.model_name}' ({info.architecture}) on {info.backend}"
              f"{f'; cameras {names}' if len(cameras) > 1 else ''}")
        for camera in cameras:
            print(f"  {camera.describe_input()}")
        with OutputBag(out / "outputs") as out_bag:
            for k in range(max(len(c.frames) for c in cameras)):
                sent = [(c, c.send(k)) for c in cameras if k < len(c.frames)]
                for camera, (stamp, t0) in sent:
                    camera.collect(k, stamp, t0, out_bag, args.timeout, bool(info.keypoint_names))
    finally:
        for camera in cameras:
            camera.close()
        node.stop()
    return {c.name: c.result for c in cameras}


def _stamp(msg: Any) -> tuple[int, int]:
    return msg.header.stamp.sec, msg.header.stamp.nanosec


def _newest(messages: list, stamp: tuple[int, int]) -> Any:
    return next(m for m in reversed(messages) if _stamp(m) == stamp)


def _marker_stamp(msg: Any) -> tuple[int, int] | None:
    return _stamp(msg.markers[0]) if msg.markers else None


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
            results = run_one(bag, bag_out, args, repo)
        except BagError as exc:
            print(f"error: {exc}")
            status = max(status, 2)
            continue
        except (TimeoutError, RuntimeError) as exc:
            print(f"error: {exc}")
            status = max(status, 1)
            continue
        for camera, r in results.items():
            label = f"[{camera}] " if camera else ""
            if r.latencies:
                print(f"{label}processed {len(r.latencies)} of {r.frames} frames; mean latency "
                      f"{np.mean(r.latencies) * 1e3:.1f} ms (publish to result, over DDS between two processes)")
            else:
                print(f"{label}no frame processed")
            print(f"{label}tracking:   {len(r.track_ids)} track ids; {r.with_3d} instances with 3D")
            if r.missing or not r.latencies:
                status = max(status, 1)
        print(f"output bag: {bag_out / 'outputs'} (instances, keypoints, "
              f"{sum(r.markers for r in results.values())} marker arrays; "
              "read it with rosbags, view the markers in RViz or Foxglove)")
        print(f"overlays:   {bag_out / 'overlays'} ({sum(r.overlays for r in results.values())} PNG files)")
        print(f"node log:   {bag_out / 'node.log'}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
