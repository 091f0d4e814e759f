"""Our messages, built and read in one place, over a table of message classes.

``MessageBuilder`` makes the ``instances``/``keypoints``/``model_info`` messages the
node publishes (and the headers and images of a recording) from core types. It works
over a type table: rclpy's generated classes (``ros.conversions.BUILDER``, the node)
or a rosbags typestore (``MessageBuilder.from_typestore``: offline regression,
synthetic recordings), so an offline run writes what the node publishes, byte for
byte. The two differ only in how array fields are given: rclpy takes ``array.array``
(the mask counts go in without a per-element copy: the node's fast path), rosbags
takes NumPy arrays. Every field is given explicitly (rosbags classes have no defaults).

The readers (``mask_from_message``, ``detections_from_instance_array``) take either
kind of message: both expose the same field names. No rclpy import here.
"""

from __future__ import annotations

import array
from typing import Any, Mapping

import numpy as np

from seg_perception.core.depth3d import Instances3D
from seg_perception.core.grasp import KEYPOINT_SET as GRASP_KEYPOINT_SET
from seg_perception.core.masks import COCO_RLE, MONO8, decode_mask, encode_coco_rle, encode_mono8
from seg_perception.core.metadata import ModelMetadata
from seg_perception.core.stamps import sec_nanosec
from seg_perception.core.types import CroppedMask, Detections

INSTANCE_ARRAY = "seg_perception/msg/InstanceArray"
POSE_KEYPOINTS_ARRAY = "seg_perception/msg/PoseKeypointsArray"
MODEL_INFO = "seg_perception/msg/ModelInfo"
MODEL_KEYPOINT_SET = "model"

# Every class the builder uses, by ROS type name.
TYPE_NAMES = (
    "builtin_interfaces/msg/Time", "std_msgs/msg/Header", "geometry_msgs/msg/Point", "geometry_msgs/msg/Pose",
    "geometry_msgs/msg/Quaternion", "geometry_msgs/msg/Vector3", "sensor_msgs/msg/Image",
    "sensor_msgs/msg/CameraInfo", "sensor_msgs/msg/RegionOfInterest",
    "seg_perception/msg/BoundingBox2D", "seg_perception/msg/InstanceMask", "seg_perception/msg/Keypoint",
    "seg_perception/msg/Instance", INSTANCE_ARRAY, "seg_perception/msg/PoseKeypoints", POSE_KEYPOINTS_ARRAY,
    MODEL_INFO,
)


class MessageBuilder:
    """Builds our messages from ``types`` ({ROS type name: class}, ``TYPE_NAMES``).

    numpy_arrays: array fields as NumPy arrays (rosbags) rather than ``array.array``/bytes (rclpy).
    store:        the rosbags typestore, for ``serialize``.
    """

    def __init__(self, types: Mapping[str, Any], numpy_arrays: bool, store: Any = None) -> None:
        self.types = types
        self.numpy_arrays = numpy_arrays
        self.store = store
        t = types.get  # a store without our messages still builds headers, images, camera_info
        self._time, self._header = t("builtin_interfaces/msg/Time"), t("std_msgs/msg/Header")
        self._point, self._pose = t("geometry_msgs/msg/Point"), t("geometry_msgs/msg/Pose")
        self._quat, self._vec3 = t("geometry_msgs/msg/Quaternion"), t("geometry_msgs/msg/Vector3")
        self._image, self._camera_info = t("sensor_msgs/msg/Image"), t("sensor_msgs/msg/CameraInfo")
        self._roi = t("sensor_msgs/msg/RegionOfInterest")
        self._bbox, self._mask = t("seg_perception/msg/BoundingBox2D"), t("seg_perception/msg/InstanceMask")
        self._kp, self._inst = t("seg_perception/msg/Keypoint"), t("seg_perception/msg/Instance")
        self._inst_array, self._pose_kp = t(INSTANCE_ARRAY), t("seg_perception/msg/PoseKeypoints")
        self._pose_array, self._model_info = t(POSE_KEYPOINTS_ARRAY), t(MODEL_INFO)

    @classmethod
    def from_typestore(cls, store: Any) -> MessageBuilder:
        """Over a rosbags typestore (``seg_perception.bags.typestore()`` knows our messages)."""
        return cls({name: store.types[name] for name in TYPE_NAMES if name in store.types}, numpy_arrays=True,
                   store=store)

    def serialize(self, msg: Any) -> bytes:
        """CDR bytes of a rosbags message (as rclpy publishes it)."""
        return bytes(self.store.serialize_cdr(msg, msg.__msgtype__))

    # ------------------------------------------------------------------ fields
    def _u32(self, values: np.ndarray) -> Any:
        if self.numpy_arrays:
            return np.ascontiguousarray(values, np.uint32).reshape(-1)
        out = array.array("I")  # uint32[] fields take array('I') without a per-element copy
        out.frombytes(np.ascontiguousarray(values, np.uint32).tobytes())
        return out

    def _u8(self, data: bytes | np.ndarray) -> Any:
        if self.numpy_arrays:
            return np.frombuffer(data, np.uint8).copy() if isinstance(data, bytes) else \
                np.ascontiguousarray(data).view(np.uint8).reshape(-1)
        return data if isinstance(data, bytes) else np.ascontiguousarray(data).tobytes()

    def point(self, xyz: np.ndarray | None = None) -> Any:
        """A Point of finite coordinates; zeros otherwise (messages never carry NaN)."""
        if xyz is None or not np.all(np.isfinite(xyz)):
            return self._point(x=0.0, y=0.0, z=0.0)
        return self._point(x=float(xyz[0]), y=float(xyz[1]), z=float(xyz[2]))

    def header(self, stamp_ns: int, frame_id: str) -> Any:
        sec, nanosec = sec_nanosec(stamp_ns)
        return self._header(stamp=self._time(sec=sec, nanosec=nanosec), frame_id=frame_id)

    def image(self, header: Any, data: np.ndarray, encoding: str) -> Any:
        """An Image of an (H, W[, C]) array, little-endian, rows packed."""
        h, w = data.shape[:2]
        flat = np.ascontiguousarray(data)
        step = int(flat.nbytes // h) if h else 0
        return self._image(header=header, height=h, width=w, encoding=encoding, is_bigendian=0, step=step,
                           data=self._u8(flat))

    def camera_info(self, header: Any, width: int, height: int, k: np.ndarray) -> Any:
        """A rectified pinhole CameraInfo (plumb_bob, zero distortion) of the 3x3 ``k``."""
        k = np.asarray(k, np.float64).reshape(3, 3)
        p = np.zeros((3, 4))
        p[:, :3] = k
        return self._camera_info(header=header, height=int(height), width=int(width), distortion_model="plumb_bob",
                                 d=np.zeros(5), k=k.reshape(-1), r=np.eye(3).reshape(-1), p=p.reshape(-1),
                                 binning_x=0, binning_y=0,
                                 roi=self._roi(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))

    # ------------------------------------------------------------------ our messages
    def mask(self, mask: CroppedMask, encoding: str) -> Any:
        if encoding == COCO_RLE:
            data, counts = self._u8(b""), self._u32(encode_coco_rle(mask))
        elif encoding == MONO8:
            data, counts = self._u8(encode_mono8(mask)), self._u32(np.zeros(0, np.uint32))
        else:
            raise ValueError(f"unknown mask encoding '{encoding}'")
        return self._mask(x_offset=int(mask.x), y_offset=int(mask.y), width=int(mask.width),
                          height=int(mask.height), encoding=encoding, data=data, counts=counts)

    def keypoints(self, kpts: np.ndarray, positions: np.ndarray | None = None,
                  valid: np.ndarray | None = None) -> list[Any]:
        """Keypoint messages of (K, 3) x, y, score, with 3D positions where ``valid``."""
        out = []
        for j, (x, y, s) in enumerate(kpts):
            with_3d = positions is not None and valid is not None and j < len(valid) and bool(valid[j])
            out.append(self._kp(x=float(x), y=float(y), score=float(s),
                                position=self.point(positions[j] if with_3d else None),
                                position_valid=with_3d and bool(np.all(np.isfinite(positions[j])))))
        return out

    def _instance_3d(self, d3: Instances3D | None, i: int) -> dict[str, Any]:
        """The 3D fields of instance ``i``: zeros (and has_3d false) without valid 3D."""
        ok = d3 is not None and bool(d3.valid[i]) and all(
            np.all(np.isfinite(a[i])) for a in (d3.centroids, d3.box_centers, d3.box_quaternions, d3.box_sizes))
        if not ok:
            return {"has_3d": False, "centroid": self.point(), "num_points": int(d3.num_points[i]) if d3 else 0,
                    "box_center": self._pose(position=self.point(), orientation=self._quat(x=0.0, y=0.0, z=0.0, w=1.0)),
                    "box_size": self._vec3(x=0.0, y=0.0, z=0.0)}
        qx, qy, qz, qw = (float(v) for v in d3.box_quaternions[i])
        sx, sy, sz = (float(v) for v in d3.box_sizes[i])
        return {"has_3d": True, "centroid": self.point(d3.centroids[i]), "num_points": int(d3.num_points[i]),
                "box_center": self._pose(position=self.point(d3.box_centers[i]),
                                         orientation=self._quat(x=qx, y=qy, z=qz, w=qw)),
                "box_size": self._vec3(x=sx, y=sy, z=sz)}

    def detections(
        self,
        detections: Detections,
        header: Any,
        image_width: int,
        image_height: int,
        metadata: ModelMetadata,
        mask_encoding: str = COCO_RLE,
        instances_3d: Instances3D | None = None,
        grasp: np.ndarray | None = None,
        grasp_positions: np.ndarray | None = None,
        grasp_valid: np.ndarray | None = None,
    ) -> tuple[Any, Any]:
        """The ``instances`` and ``keypoints`` messages for one frame, stamped with its header
        (``instance_array`` then ``keypoints_array``, whose docstrings say what each holds)."""
        instances, model_poses = self.instance_array(detections, header, image_width, image_height, metadata,
                                                     mask_encoding, instances_3d)
        return instances, self.keypoints_array(instances, model_poses, grasp, grasp_positions, grasp_valid)

    def instance_array(
        self,
        detections: Detections,
        header: Any,
        image_width: int,
        image_height: int,
        metadata: ModelMetadata,
        mask_encoding: str = COCO_RLE,
        instances_3d: Instances3D | None = None,
    ) -> tuple[Any, list[Any]]:
        """The ``instances`` message of one frame, and the "model" poses of its instances
        (models with keypoints; they share the instances' keypoint messages) for
        ``keypoints_array``. Separate, so the node can publish ``instances`` before the
        grasp points, which go to ``keypoints`` only, are computed.

        instances_3d: 3D of the instances (None: no depth, ``has_3d`` false, zeros).
        """
        names = metadata.class_names
        has_kpts = detections.keypoints.shape[1] > 0 if detections.keypoints.ndim == 3 else False
        d3 = instances_3d
        instances, poses = [], []
        for i in range(len(detections)):
            x1, y1, x2, y2 = (float(v) for v in detections.boxes[i])
            class_id = int(detections.class_ids[i])
            kps = []
            if has_kpts:
                with_3d = d3 is not None and d3.keypoints.shape[1] == detections.keypoints.shape[1]
                kps = self.keypoints(detections.keypoints[i], d3.keypoints[i] if with_3d else None,
                                     d3.keypoints_valid[i] if with_3d else None)
            inst = self._inst(
                id=int(detections.track_ids[i]), class_id=class_id,
                class_name=names[class_id] if 0 <= class_id < len(names) else str(class_id),
                # float32 field: what a subscriber receives, also when read back in process.
                score=float(np.float32(detections.scores[i])),
                bbox=self._bbox(center_x=(x1 + x2) / 2.0, center_y=(y1 + y2) / 2.0, size_x=x2 - x1, size_y=y2 - y1),
                mask=self.mask(detections.masks[i], mask_encoding), keypoints=kps, **self._instance_3d(d3, i),
            )
            if has_kpts:
                poses.append(self._pose_kp(instance_id=inst.id, instance_index=i, class_id=class_id, score=inst.score,
                                           keypoint_set=MODEL_KEYPOINT_SET, keypoints=kps))
            instances.append(inst)
        return self._inst_array(header=header, instances=instances, image_width=int(image_width),
                                image_height=int(image_height)), poses

    def keypoints_array(
        self,
        instances: Any,
        model_poses: list[Any],
        grasp: np.ndarray | None = None,
        grasp_positions: np.ndarray | None = None,
        grasp_valid: np.ndarray | None = None,
    ) -> Any:
        """The ``keypoints`` message of the frame whose ``instances`` message (header, image
        size, instance ids and scores) and "model" poses ``instance_array`` built: those
        poses, then the "grasp" poses, each in instance order.

        grasp:           (N, 3, 3) grasp keypoints (``core.grasp``) to publish as keypoint set
                         "grasp"; None publishes none.
        grasp_positions, grasp_valid: their 3D positions (N, 3, 3) and validity (N, 3).
        """
        poses = list(model_poses)
        if grasp is not None:
            with_3d = (grasp_positions is not None and grasp_valid is not None
                       and grasp_positions.shape[:2] == grasp.shape[:2])
            for i, inst in enumerate(instances.instances):
                poses.append(self._pose_kp(
                    instance_id=inst.id, instance_index=i, class_id=inst.class_id, score=inst.score,
                    keypoint_set=GRASP_KEYPOINT_SET,
                    keypoints=self.keypoints(grasp[i], grasp_positions[i] if with_3d else None,
                                             grasp_valid[i] if with_3d else None)))
        return self._pose_array(header=instances.header, poses=poses, image_width=instances.image_width,
                                image_height=instances.image_height)

    def model_info(self, metadata: ModelMetadata, backend: str, device: str, precision: str, model_path: str,
                   header: Any) -> Any:
        """ModelInfo (the node stamps it with its clock; offline runs with the first frame)."""
        return self._model_info(
            header=header, model_name=metadata.name, architecture=metadata.architecture,
            class_names=list(metadata.class_names), keypoint_names=list(metadata.keypoint_names),
            skeleton=self._u32(np.array([int(v) for edge in metadata.skeleton for v in edge], np.uint32)),
            input_width=int(metadata.input_width), input_height=int(metadata.input_height),
            backend=backend, device=device, precision=precision, model_path=model_path,
        )


# ---------------------------------------------------------------------- readers
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
