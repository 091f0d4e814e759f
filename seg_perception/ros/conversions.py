"""Messages <-> core types. The only place that knows both."""

from __future__ import annotations

import array

import numpy as np
from geometry_msgs.msg import Point
from sensor_msgs.msg import CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import Header

from seg_perception.core.depth3d import Instances3D
from seg_perception.core.grasp import KEYPOINT_SET as GRASP_KEYPOINT_SET
from seg_perception.core.image import decode_compressed, decode_depth, decode_image
from seg_perception.core.masks import COCO_RLE, MONO8, encode_coco_rle, encode_mono8
from seg_perception.core.metadata import ModelMetadata
from seg_perception.core.types import CroppedMask, Detections
# Readers of received messages work on rclpy and rosbags messages alike; one copy lives
# with the regression tool, which needs them without rclpy.
from seg_perception.regression.messages import detections_from_instance_array as detections_from_msg  # noqa: F401
from seg_perception.regression.messages import mask_from_message as mask_from_msg  # noqa: F401
from seg_perception.msg import (
    Instance, InstanceArray, InstanceMask, Keypoint, ModelInfo, PoseKeypoints, PoseKeypointsArray,
)

MODEL_KEYPOINT_SET = "model"


def image_to_rgb(msg: Image | CompressedImage, max_pixels: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a raw or compressed image; ImageDecodeError says what is wrong."""
    if isinstance(msg, CompressedImage):
        return decode_compressed(msg.format, msg.data, max_pixels=max_pixels)
    return decode_image(msg.encoding, msg.width, msg.height, msg.step, msg.data,
                        is_bigendian=bool(msg.is_bigendian), max_pixels=max_pixels)


def depth_to_metres(msg: Image, max_pixels: int) -> np.ndarray:
    """(H, W) float32 metres of a 16UC1 (mm) or 32FC1 (m) depth image, NaN where there is
    no reading; ImageDecodeError says what is wrong (e.g. an unsupported encoding)."""
    return decode_depth(msg.encoding, msg.width, msg.height, msg.step, msg.data,
                        is_bigendian=bool(msg.is_bigendian), max_pixels=max_pixels)


def mask_to_msg(mask: CroppedMask, encoding: str) -> InstanceMask:
    out = InstanceMask(x_offset=mask.x, y_offset=mask.y, width=mask.width, height=mask.height, encoding=encoding)
    if encoding == COCO_RLE:
        counts = array.array("I")  # uint32[] fields take array('I') without a per-element copy
        counts.frombytes(encode_coco_rle(mask).astype(np.uint32).tobytes())
        out.counts = counts
    elif encoding == MONO8:
        out.data = encode_mono8(mask)
    else:
        raise ValueError(f"unknown mask encoding '{encoding}'")
    return out


def _point(xyz: np.ndarray) -> Point:
    """A Point of finite coordinates; zeros otherwise (messages never carry NaN)."""
    if not np.all(np.isfinite(xyz)):
        return Point()
    return Point(x=float(xyz[0]), y=float(xyz[1]), z=float(xyz[2]))


def _keypoints_to_msgs(kpts: np.ndarray, positions: np.ndarray | None = None,
                       valid: np.ndarray | None = None) -> list[Keypoint]:
    """Keypoint messages of (K, 3) x, y, score, with 3D positions where ``valid``."""
    out = []
    for j, (x, y, s) in enumerate(kpts):
        kp = Keypoint(x=float(x), y=float(y), score=float(s))
        if positions is not None and valid is not None and j < len(valid) and valid[j]:
            kp.position = _point(positions[j])
            kp.position_valid = bool(np.all(np.isfinite(positions[j])))
        out.append(kp)
    return out


def _fill_3d(inst: Instance, d3: Instances3D, i: int) -> None:
    """Copy instance ``i`` of ``d3`` into the message; zeros (and has_3d false) when invalid."""
    inst.num_points = int(d3.num_points[i])
    ok = bool(d3.valid[i]) and all(np.all(np.isfinite(a[i])) for a in
                                   (d3.centroids, d3.box_centers, d3.box_quaternions, d3.box_sizes))
    inst.has_3d = ok
    if not ok:
        return
    inst.centroid = _point(d3.centroids[i])
    inst.box_center.position = _point(d3.box_centers[i])
    qx, qy, qz, qw = (float(v) for v in d3.box_quaternions[i])
    inst.box_center.orientation.x, inst.box_center.orientation.y = qx, qy
    inst.box_center.orientation.z, inst.box_center.orientation.w = qz, qw
    inst.box_size.x, inst.box_size.y, inst.box_size.z = (float(v) for v in d3.box_sizes[i])


def detections_to_msgs(
    detections: Detections,
    header: Header,
    image_width: int,
    image_height: int,
    metadata: ModelMetadata,
    mask_encoding: str = COCO_RLE,
    instances_3d: Instances3D | None = None,
    grasp: np.ndarray | None = None,
    grasp_positions: np.ndarray | None = None,
    grasp_valid: np.ndarray | None = None,
) -> tuple[InstanceArray, PoseKeypointsArray]:
    """The ``instances`` and ``keypoints`` messages for one frame, stamped with its header.

    instances_3d:    3D of the instances (None: no depth, ``has_3d`` false, zeros).
    grasp:           (N, 3, 3) grasp keypoints (``core.grasp``) to publish as keypoint set
                     "grasp" after the model's set; None publishes none.
    grasp_positions, grasp_valid: their 3D positions (N, 3, 3) and validity (N, 3).
    ``keypoints`` holds the "model" poses of all instances (models with keypoints),
    then the "grasp" poses, each in instance order.
    """
    instances = InstanceArray(header=header, image_width=image_width, image_height=image_height)
    poses = PoseKeypointsArray(header=header, image_width=image_width, image_height=image_height)
    names = metadata.class_names
    has_kpts = detections.keypoints.shape[1] > 0 if detections.keypoints.ndim == 3 else False
    d3 = instances_3d
    for i in range(len(detections)):
        x1, y1, x2, y2 = (float(v) for v in detections.boxes[i])
        class_id = int(detections.class_ids[i])
        inst = Instance(
            id=int(detections.track_ids[i]), class_id=class_id,
            class_name=names[class_id] if 0 <= class_id < len(names) else str(class_id),
            score=float(detections.scores[i]),
            mask=mask_to_msg(detections.masks[i], mask_encoding),
        )
        inst.bbox.center_x, inst.bbox.center_y = (x1 + x2) / 2.0, (y1 + y2) / 2.0
        inst.bbox.size_x, inst.bbox.size_y = x2 - x1, y2 - y1
        if d3 is not None:
            _fill_3d(inst, d3, i)
        if has_kpts:
            with_3d = d3 is not None and d3.keypoints.shape[1] == detections.keypoints.shape[1]
            inst.keypoints = _keypoints_to_msgs(detections.keypoints[i], d3.keypoints[i] if with_3d else None,
                                                d3.keypoints_valid[i] if with_3d else None)
            poses.poses.append(PoseKeypoints(
                instance_id=inst.id, instance_index=i, class_id=class_id, score=inst.score,
                keypoint_set=MODEL_KEYPOINT_SET, keypoints=inst.keypoints,
            ))
        instances.instances.append(inst)
    if grasp is not None:
        with_3d = (grasp_positions is not None and grasp_valid is not None
                   and grasp_positions.shape[:2] == grasp.shape[:2])
        for i, inst in enumerate(instances.instances):
            poses.poses.append(PoseKeypoints(
                instance_id=inst.id, instance_index=i, class_id=inst.class_id, score=inst.score,
                keypoint_set=GRASP_KEYPOINT_SET,
                keypoints=_keypoints_to_msgs(grasp[i], grasp_positions[i] if with_3d else None,
                                             grasp_valid[i] if with_3d else None),
            ))
    return instances, poses


def model_info_msg(metadata: ModelMetadata, backend: str, device: str, precision: str, model_path: str) -> ModelInfo:
    return ModelInfo(
        model_name=metadata.name, architecture=metadata.architecture,
        class_names=list(metadata.class_names), keypoint_names=list(metadata.keypoint_names),
        skeleton=[int(v) for edge in metadata.skeleton for v in edge],
        input_width=metadata.input_width, input_height=metadata.input_height,
        backend=backend, device=device, precision=precision, model_path=model_path,
    )


def rgb_to_image_msg(rgb: np.ndarray, header: Header) -> Image:
    """An rgb8 Image of an (H, W, 3) uint8 array (for debug/image)."""
    h, w = rgb.shape[:2]
    return Image(header=header, height=h, width=w, encoding="rgb8", is_bigendian=0, step=w * 3,
                 data=np.ascontiguousarray(rgb).tobytes())


def map_image_msg(image: np.ndarray, header: Header) -> Image:
    """A mono16 (uint16) or mono8 (uint8) Image of an (H, W) map, little-endian, for
    instance_map / class_map; same header and size as the source image."""
    h, w = image.shape[:2]
    if image.dtype == np.uint16:
        return Image(header=header, height=h, width=w, encoding="mono16", is_bigendian=0, step=w * 2,
                     data=np.ascontiguousarray(image, dtype="<u2").tobytes())
    if image.dtype == np.uint8:
        return Image(header=header, height=h, width=w, encoding="mono8", is_bigendian=0, step=w,
                     data=np.ascontiguousarray(image).tobytes())
    raise ValueError(f"map images are uint16 or uint8, got {image.dtype}")


# instances/points: x, y, z (metres, optical frame), instance id, class id, all FLOAT32
# (one type keeps the cloud readable by every PCL/Nav2 consumer; ids up to 2**24 are exact).
CLOUD_FIELDS = ("x", "y", "z", "instance_id", "class_id")
CLOUD_DTYPE = np.dtype({"names": list(CLOUD_FIELDS), "formats": ["<f4"] * 5, "offsets": [0, 4, 8, 12, 16],
                        "itemsize": 20})


def cloud_array(points: np.ndarray) -> np.ndarray:
    """(M,) structured array (``CLOUD_DTYPE``) of (M, 5) float32 points, no copy when possible."""
    pts = np.ascontiguousarray(points, dtype="<f4").reshape(-1, 5)
    return pts.view(CLOUD_DTYPE).reshape(-1)


def points_to_cloud_msg(points: np.ndarray, header: Header) -> PointCloud2:
    """An unorganised PointCloud2 (height 1) of (M, 5) x, y, z, instance id, class id.

    Fields are FLOAT32 at offsets 0/4/8/12/16, point_step 20, little-endian, dense (the
    core drops invalid depth before a point is made).
    """
    arr = cloud_array(points)
    fields = [PointField(name=name, offset=int(CLOUD_DTYPE.fields[name][1]), datatype=PointField.FLOAT32, count=1)
              for name in CLOUD_FIELDS]
    return PointCloud2(header=header, height=1, width=int(arr.size), fields=fields, is_bigendian=False,
                       point_step=CLOUD_DTYPE.itemsize, row_step=CLOUD_DTYPE.itemsize * int(arr.size),
                       data=arr.tobytes(), is_dense=True)
