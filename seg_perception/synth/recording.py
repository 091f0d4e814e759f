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

from seg_perception.messages import MessageBuilder
from seg_perception.synth.coco import FRAME_ID, progress_bar, coco_document, dump_json, frame_to_coco
from seg_perception.synth.scene import DEFAULT_START_STAMP_NS, SequenceConfig, generate_sequence

COLOR_TOPIC = "/camera/color/image_raw"
DEPTH_TOPIC = "/camera/depth/image_raw"
COLOR_INFO_TOPIC = "/camera/color/camera_info"
DEPTH_INFO_TOPIC = "/camera/depth/camera_info"
TOPICS = (COLOR_TOPIC, DEPTH_TOPIC, COLOR_INFO_TOPIC, DEPTH_INFO_TOPIC)
GT_FILE_NAME = "ground_truth.json"


def write_recording(bag_path: str | Path, seed: int, n_frames: int, fps: float = 15.0, width: int = 640,
                    height: int = 480, storage: str = "mcap", gt_path: str | Path | None = None,
                    config: SequenceConfig | None = None, start_stamp_ns: int = DEFAULT_START_STAMP_NS,
                    progress: bool = False, depth: bool = True) -> Path:
    """Render a ``generate_sequence`` recording into a new rosbag2 bag at ``bag_path``.

    ``storage`` is "mcap" or "sqlite3". The bag directory must not exist (rosbag2
    never overwrites). ``depth=False`` leaves out the two depth topics (a colour
    camera; less than half the size, as committed test recordings want).
    Returns the path of the ground-truth JSON.
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
    msgs = MessageBuilder.from_typestore(typestore)
    images, annotations = [], []
    bar = progress_bar(n_frames, "frames", progress)
    # Version 8 metadata is the oldest rosbags writes; Humble's rosbag2 reads it.
    with Writer(bag_path, version=8, storage_plugin=plugins[storage]) as writer:
        topics = TOPICS if depth else (COLOR_TOPIC, COLOR_INFO_TOPIC)
        msgtypes = {COLOR_TOPIC: "sensor_msgs/msg/Image", DEPTH_TOPIC: "sensor_msgs/msg/Image",
                    COLOR_INFO_TOPIC: "sensor_msgs/msg/CameraInfo", DEPTH_INFO_TOPIC: "sensor_msgs/msg/CameraInfo"}
        conns = {topic: writer.add_connection(topic, msgtypes[topic], typestore=typestore) for topic in topics}
        try:
            for frame in generate_sequence(seed, n_frames, fps, width, height, config, start_stamp_ns):
                header = msgs.header(frame.stamp_ns, FRAME_ID)
                info = msgs.camera_info(header, frame.camera.width, frame.camera.height, frame.camera.K)
                out = [(COLOR_INFO_TOPIC, info), (COLOR_TOPIC, msgs.image(header, frame.rgb, "rgb8"))]
                if depth:
                    out += [(DEPTH_INFO_TOPIC, info),
                            (DEPTH_TOPIC, msgs.image(header, frame.depth.astype("<f4"), "32FC1"))]
                for topic, msg in out:
                    writer.write(conns[topic], frame.stamp_ns, typestore.serialize_cdr(msg, msgtypes[topic]))
                image, anns = frame_to_coco(frame, frame.index + 1, len(annotations) + 1, f"frame_{frame.index:06d}",
                                            {"topic": COLOR_TOPIC, **({"depth_topic": DEPTH_TOPIC} if depth else {})})
                images.append(image)
                annotations.extend(anns)
                bar.update(1)
        finally:
            bar.close()
    info = {"seed": int(seed), "width": int(width), "height": int(height), "num_images": int(n_frames),
            "fps": float(fps), "bag": bag_path.name, "storage": storage, "start_stamp_ns": int(start_stamp_ns),
            "topics": list(topics), "sequence": True}
    gt.parent.mkdir(parents=True, exist_ok=True)
    dump_json(coco_document(images, annotations, info), gt)
    return gt
