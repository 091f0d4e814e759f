"""The node's output messages as ``rosbags`` dataclasses, built without rclpy.

The offline regression run writes the same ``instances``/``keypoints``/``model_info``
messages the node publishes, so its output bag plays with ``ros2 bag play`` and
compares with a recording of the real node. Every function here mirrors its
counterpart in ``seg_perception.ros.conversions`` field for field (including the
defaults rclpy fills in, such as an identity quaternion); a test checks that both
serialise to the same CDR bytes.

``frame_from_instance_array`` reads either kind of message (rclpy or rosbags): both
expose the same field names.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from seg_perception.core.masks import COCO_RLE, MONO8, decode_mask, encode_coco_rle, encode_mono8
from seg_perception.core.metadata import ModelMetadata
from seg_perception.core.types import CroppedMask, Detections
from seg_perception.regression.records import FrameResult

INSTANCE_ARRAY = "seg_perception/msg/InstanceArray"
POSE_KEYPOINTS_ARRAY = "seg_perception/msg/PoseKeypointsArray"
MODEL_INFO = "seg_perception/msg/ModelInfo"
MODEL_KEYPOINT_SET = "model"  # as conversions.MODEL_KEYPOINT_SET
GRASP_KEYPOINT_SET = "grasp"  # as core.grasp.KEYPOINT_SET

# Where output bags put the node's topics (as `seg-perception demo` does).
OUTPUT_TOPICS = {
    INSTANCE_ARRAY: "/seg_perception/instances",
    POSE_KEYPOINTS_ARRAY: "/seg_perception/keypoints",
    MODEL_INFO: "/seg_perception/model_info",
}


class MessageFactory:
    """Builds our messages from one ``rosbags`` typestore (``seg_perception.bags.typestore()``)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        t = store.types
        self._time = t["builtin_interfaces/msg/Time"]
        self._header = t["std_msgs/msg/Header"]
        self._point = t["geometry_msgs/msg/Point"]
        self._pose = t["geometry_msgs/msg/Pose"]
        self._quat = t["geometry_msgs/msg/Quaternion"]
        self._vec3 = t["geometry_msgs/msg/Vector3"]
        self._bbox = t["seg_perception/msg/BoundingBox2D"]
        self._mask = t["seg_perception/msg/InstanceMask"]
        self._kp = t["seg_perception/msg/Keypoint"]
        self._inst = t["seg_perception/msg/Instance"]
        self._inst_array = t[INSTANCE_ARRAY]
        self._pose_kp = t["seg_perception/msg/PoseKeypoints"]
        self._pose_array = t[POSE_KEYPOINTS_ARRAY]
        self._model_info = t[MODEL_INFO]

    def serialize(self, msg: Any) -> bytes:
        return bytes(self.store.serialize_cdr(msg, msg.__msgtype__))

    def header(self, stamp_ns: int, frame_id: str) -> Any:
        return self._header(stamp=self._time(sec=int(stamp_ns // 1_000_000_000),
                                             nanosec=int(stamp_ns % 1_000_000_000)), frame_id=frame_id)

    def mask(self, mask: CroppedMask, encoding: str) -> Any:
        if encoding == COCO_RLE:
            data, counts = np.zeros(0, np.uint8), encode_coco_rle(mask).astype(np.uint32)
        elif encoding == MONO8:
            data, counts = np.frombuffer(encode_mono8(mask), np.uint8).copy(), np.zeros(0, np.uint32)
        else:
            raise ValueError(f"unknown mask encoding '{encoding}'")
        return self._mask(x_offset=int(mask.x), y_offset=int(mask.y), width=mask.width, height=mask.height,
                          encoding=encoding, data=data, counts=counts)

    def _keypoints(self, kpts: np.ndarray) -> list[Any]:
        return [self._kp(x=float(x), y=float(y), score=float(s), position=self._point(x=0.0, y=0.0, z=0.0),
                         position_valid=False) for x, y, s in kpts]

    def detections(self, detections: Detections, header: Any, image_width: int, image_height: int,
                   metadata: ModelMetadata, mask_encoding: str = COCO_RLE,
                   grasp: np.ndarray | None = None) -> tuple[Any, Any]:
        """``(InstanceArray, PoseKeypointsArray)`` as ``conversions.detections_to_msgs`` makes them
        without depth; ``grasp`` (N, 3, 3) adds the "grasp" poses after the model's."""
        names = metadata.class_names
        has_kpts = detections.keypoints.shape[1] > 0 if detections.keypoints.ndim == 3 else False
        instances, poses = [], []
        for i in range(len(detections)):
            x1, y1, x2, y2 = (float(v) for v in detections.boxes[i])
            class_id = int(detections.class_ids[i])
            kps = self._keypoints(detections.keypoints[i]) if has_kpts else []
            inst = self._inst(
                id=int(detections.track_ids[i]), class_id=class_id,
                class_name=names[class_id] if 0 <= class_id < len(names) else str(class_id),
                # float32 fields: rclpy stores the float as float32 on serialisation; so do we.
                score=float(np.float32(detections.scores[i])),
                bbox=self._bbox(center_x=(x1 + x2) / 2.0, center_y=(y1 + y2) / 2.0, size_x=x2 - x1, size_y=y2 - y1),
                mask=self.mask(detections.masks[i], mask_encoding),
                keypoints=kps,
                has_3d=False, centroid=self._point(x=0.0, y=0.0, z=0.0),
                box_center=self._pose(position=self._point(x=0.0, y=0.0, z=0.0),
                                      orientation=self._quat(x=0.0, y=0.0, z=0.0, w=1.0)),
                box_size=self._vec3(x=0.0, y=0.0, z=0.0), num_points=0,
            )
            if has_kpts:
                poses.append(self._pose_kp(instance_id=inst.id, instance_index=i, class_id=class_id, score=inst.score,
                                           keypoint_set=MODEL_KEYPOINT_SET, keypoints=kps))
            instances.append(inst)
        if grasp is not None:
            for i, inst in enumerate(instances):
                poses.append(self._pose_kp(instance_id=inst.id, instance_index=i, class_id=inst.class_id,
                                           score=inst.score, keypoint_set=GRASP_KEYPOINT_SET,
                                           keypoints=self._keypoints(grasp[i])))
        return (self._inst_array(header=header, image_width=int(image_width), image_height=int(image_height),
                                 instances=instances),
                self._pose_array(header=header, image_width=int(image_width), image_height=int(image_height),
                                 poses=poses))

    def model_info(self, metadata: ModelMetadata, backend: str, device: str, precision: str, model_path: str,
                   stamp_ns: int) -> Any:
        """As ``conversions.model_info_msg`` (the node stamps it with its clock; we with the first frame)."""
        return self._model_info(
            header=self.header(stamp_ns, ""), model_name=metadata.name, architecture=metadata.architecture,
            class_names=list(metadata.class_names), keypoint_names=list(metadata.keypoint_names),
            skeleton=np.array([int(v) for edge in metadata.skeleton for v in edge], np.uint32),
            input_width=int(metadata.input_width), input_height=int(metadata.input_height),
            backend=backend, device=device, precision=precision, model_path=model_path,
        )


def _buffer(values: Any, dtype: type) -> np.ndarray:
    """A NumPy view of a message array field: rclpy gives array.array or bytes, rosbags ndarray."""
    if isinstance(values, np.ndarray):
        return values.astype(dtype, copy=False).reshape(-1)
    if isinstance(values, list):
        return np.asarray(values, dtype=dtype)
    return np.frombuffer(values, dtype=dtype)


def mask_from_message(msg: Any) -> CroppedMask:
    """Decode an InstanceMask (rclpy or rosbags); MaskDecodeError when its fields disagree."""
    payload = _buffer(msg.counts, np.uint32) if msg.encoding == COCO_RLE else _buffer(msg.data, np.uint8)
    return CroppedMask(int(msg.x_offset), int(msg.y_offset),
                       decode_mask(msg.encoding, int(msg.width), int(msg.height), payload))


def detections_from_instance_array(msg: Any) -> Detections:
    """Core ``Detections`` of a received InstanceArray (rclpy or rosbags); masks are decoded."""
    n = len(msg.instances)
    k = max((len(i.keypoints) for i in msg.instances), default=0)
    boxes = np.zeros((n, 4), np.float32)
    kpts = np.zeros((n, k, 3), np.float32)
    for i, inst in enumerate(msg.instances):
        b = inst.bbox
        boxes[i] = (b.center_x - b.size_x / 2, b.center_y - b.size_y / 2,
                    b.center_x + b.size_x / 2, b.center_y + b.size_y / 2)
        for j, kp in enumerate(inst.keypoints):
            kpts[i, j] = (kp.x, kp.y, kp.score)
    return Detections(
        boxes=boxes,
        scores=np.array([i.score for i in msg.instances], np.float32),
        class_ids=np.array([i.class_id for i in msg.instances], np.int32),
        masks=[mask_from_message(i.mask) for i in msg.instances],
        keypoints=kpts,
        track_ids=np.array([i.id for i in msg.instances], np.uint32),
    )


def stamp_ns_of(msg: Any) -> int:
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def frame_from_instance_array(msg: Any, bag: str, index: int, bag_time_ns: int) -> FrameResult:
    """The regression record of one published InstanceArray."""
    return FrameResult(
        bag=bag, index=index, stamp_ns=stamp_ns_of(msg), bag_time_ns=int(bag_time_ns),
        frame_id=str(msg.header.frame_id), width=int(msg.image_width), height=int(msg.image_height),
        detections=detections_from_instance_array(msg), class_names=[str(i.class_name) for i in msg.instances],
    )
