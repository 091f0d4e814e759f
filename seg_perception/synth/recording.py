"""Synthetic RGB-D recordings as rosbag2 bags, with COCO ground truth beside them.

The bag looks like what a RealSense-style driver records with depth aligned to
colour, so the node, bag replay and regression tools can be exercised end to end
without a camera:

    /camera/color/image_raw     sensor_msgs/msg/Image       rgb8
    /camera/depth/image_raw     sensor_msgs/msg/Image       32FC1, metres, NaN = no reading,
                                                            registered to the colour image
    /camera/color/camera_info   sensor_msgs/msg/CameraInfo  plumb_bob, zero distortion
    /camera/depth/camera_info   sensor_msgs/msg/CameraInfo  same intrinsics (registered)

All four share one header per frame (frame_id ``camera_color_optical_frame``, the
frame's stamp) and are logged at that stamp, so stamps increase monotonically at
exactly ``fps``. The ground truth (``ground_truth.json`` inside the bag directory
unless ``gt_path`` says otherwise) is COCO as written by ``synth.coco``, one image
entry per frame, aligned by ``frame_index`` and ``stamp_ns``, with track ids and
3D centroids.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seg_perception.synth.coco import FRAME_ID, progress_bar, coco_document, dump_json, frame_to_coco
from seg_perception.synth.scene import DEFAULT_START_STAMP_NS, Frame, SequenceConfig, generate_sequence

COLOR_TOPIC = "/camera/color/image_raw"
DEPTH_TOPIC = "/camera/depth/image_raw"
COLOR_INFO_TOPIC = "/camera/color/camera_info"
DEPTH_INFO_TOPIC = "/camera/depth/camera_info"
TOPICS = (COLOR_TOPIC, DEPTH_TOPIC, COLOR_INFO_TOPIC, DEPTH_INFO_TOPIC)
GT_FILE_NAME = "ground_truth.json"


class _Messages:
    """Builds the ROS messages of one frame with a rosbags typestore (no rclpy needed)."""

    def __init__(self, typestore) -> None:
        self.ts = typestore
        t = typestore.types
        self.Time = t["builtin_interfaces/msg/Time"]
        self.Header = t["std_msgs/msg/Header"]
        self.Image = t["sensor_msgs/msg/Image"]
        self.CameraInfo = t["sensor_msgs/msg/CameraInfo"]
        self.Roi = t["sensor_msgs/msg/RegionOfInterest"]

    def header(self, stamp_ns: int):
        return self.Header(stamp=self.Time(sec=int(stamp_ns // 10**9), nanosec=int(stamp_ns % 10**9)),
                           frame_id=FRAME_ID)

    def image(self, header, data: np.ndarray, encoding: str):
        h, w = data.shape[:2]
        flat = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
        return self.Image(header=header, height=h, width=w, encoding=encoding, is_bigendian=0,
                          step=int(flat.size // h), data=flat)

    def camera_info(self, header, frame: Frame):
        cam = frame.camera
        K = cam.K
        P = np.zeros((3, 4))
        P[:, :3] = K
        return self.CameraInfo(header=header, height=cam.height, width=cam.width, distortion_model="plumb_bob",
                               d=np.zeros(5), k=K.reshape(-1), r=np.eye(3).reshape(-1), p=P.reshape(-1),
                               binning_x=0, binning_y=0,
                               roi=self.Roi(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


def write_recording(bag_path: str | Path, seed: int, n_frames: int, fps: float = 15.0, width: int = 640,
                    height: int = 480, storage: str = "mcap", gt_path: str | Path | None = None,
                    config: SequenceConfig | None = None, start_stamp_ns: int = DEFAULT_START_STAMP_NS,
                    progress: bool = False) -> Path:
    """Render a ``generate_sequence`` recording into a new rosbag2 bag at ``bag_path``.

    ``storage`` is "mcap" or "sqlite3". The bag directory must not exist (rosbag2
    never overwrites). Returns the path of the ground-truth JSON.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
    if storage not in plugins:
        raise ValueError(f"storage must be 'mcap' or 'sqlite3', got {storage!r}")
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    bag_path = Path(bag_path)
    if bag_path.exists():
        raise FileExistsError(f"bag {bag_path} exists already; rosbag2 bags are never overwritten")
    gt = Path(gt_path) if gt_path is not None else bag_path / GT_FILE_NAME
    typestore = get_typestore(Stores.ROS2_HUMBLE)
    msgs = _Messages(typestore)
    images, annotations = [], []
    bar = progress_bar(n_frames, "frames", progress)
    # Version 8 metadata is the oldest rosbags writes; Humble's rosbag2 reads it.
    with Writer(bag_path, version=8, storage_plugin=plugins[storage]) as writer:
        conns = {
            COLOR_TOPIC: writer.add_connection(COLOR_TOPIC, "sensor_msgs/msg/Image", typestore=typestore),
            DEPTH_TOPIC: writer.add_connection(DEPTH_TOPIC, "sensor_msgs/msg/Image", typestore=typestore),
            COLOR_INFO_TOPIC: writer.add_connection(COLOR_INFO_TOPIC, "sensor_msgs/msg/CameraInfo",
                                                    typestore=typestore),
            DEPTH_INFO_TOPIC: writer.add_connection(DEPTH_INFO_TOPIC, "sensor_msgs/msg/CameraInfo",
                                                    typestore=typestore),
        }
        try:
            for frame in generate_sequence(seed, n_frames, fps, width, height, config, start_stamp_ns):
                header = msgs.header(frame.stamp_ns)
                info = msgs.camera_info(header, frame)
                out = [
                    (COLOR_INFO_TOPIC, info, "sensor_msgs/msg/CameraInfo"),
                    (COLOR_TOPIC, msgs.image(header, frame.rgb, "rgb8"), "sensor_msgs/msg/Image"),
                    (DEPTH_INFO_TOPIC, info, "sensor_msgs/msg/CameraInfo"),
                    (DEPTH_TOPIC, msgs.image(header, frame.depth.astype("<f4"), "32FC1"), "sensor_msgs/msg/Image"),
                ]
                for topic, msg, msgtype in out:
                    writer.write(conns[topic], frame.stamp_ns, typestore.serialize_cdr(msg, msgtype))
                image, anns = frame_to_coco(frame, frame.index + 1, len(annotations) + 1, f"frame_{frame.index:06d}",
                                            {"topic": COLOR_TOPIC, "depth_topic": DEPTH_TOPIC})
                images.append(image)
                annotations.extend(anns)
                bar.update(1)
        finally:
            bar.close()
    info = {"seed": int(seed), "width": int(width), "height": int(height), "num_images": int(n_frames),
            "fps": float(fps), "bag": bag_path.name, "storage": storage, "start_stamp_ns": int(start_stamp_ns),
            "topics": list(TOPICS), "sequence": True}
    gt.parent.mkdir(parents=True, exist_ok=True)
    dump_json(coco_document(images, annotations, info), gt)
    return gt
