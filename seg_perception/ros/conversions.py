"""Messages <-> core types. The only place that knows both."""

from __future__ import annotations

import array

import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from seg_perception.core.image import decode_compressed, decode_image
from seg_perception.core.masks import COCO_RLE, MONO8, decode_mask, encode_coco_rle, encode_mono8
from seg_perception.core.metadata import ModelMetadata
from seg_perception.core.types import CroppedMask, Detections
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


def mask_from_msg(msg: InstanceMask) -> CroppedMask:
    """Decode an InstanceMask; MaskDecodeError when its fields disagree."""
    payload = np.frombuffer(msg.counts, dtype=np.uint32) if msg.encoding == COCO_RLE else msg.data
    return CroppedMask(int(msg.x_offset), int(msg.y_offset), decode_mask(msg.encoding, msg.width, msg.height, payload))


def _keypoints_to_msgs(kpts: np.ndarray) -> list[Keypoint]:
    return [Keypoint(x=float(x), y=float(y), score=float(s)) for x, y, s in kpts]


def detections_to_msgs(
    detections: Detections,
    header: Header,
    image_width: int,
    image_height: int,
    metadata: ModelMetadata,
    mask_encoding: str = COCO_RLE,
) -> tuple[InstanceArray, PoseKeypointsArray]:
    """The ``instances`` and ``keypoints`` messages for one frame, stamped with its header."""
    instances = InstanceArray(header=header, image_width=image_width, image_height=image_height)
    poses = PoseKeypointsArray(header=header, image_width=image_width, image_height=image_height)
    names = metadata.class_names
    has_kpts = detections.keypoints.shape[1] > 0 if detections.keypoints.ndim == 3 else False
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
        if has_kpts:
            inst.keypoints = _keypoints_to_msgs(detections.keypoints[i])
            poses.poses.append(PoseKeypoints(
                instance_id=inst.id, instance_index=i, class_id=class_id, score=inst.score,
                keypoint_set=MODEL_KEYPOINT_SET, keypoints=inst.keypoints,
            ))
        instances.instances.append(inst)
    return instances, poses


def detections_from_msg(msg: InstanceArray) -> Detections:
    """Back to core types (for regression tools and tests); masks are decoded."""
    n = len(msg.instances)
    k = max((len(i.keypoints) for i in msg.instances), default=0)
    boxes = np.zeros((n, 4), np.float32)
    kpts = np.zeros((n, k, 3), np.float32)
    for i, inst in enumerate(msg.instances):
        b = inst.bbox
        boxes[i] = (b.center_x - b.size_x / 2, b.center_y - b.size_y / 2, b.center_x + b.size_x / 2, b.center_y + b.size_y / 2)
        for j, kp in enumerate(inst.keypoints):
            kpts[i, j] = (kp.x, kp.y, kp.score)
    return Detections(
        boxes=boxes,
        scores=np.array([i.score for i in msg.instances], np.float32),
        class_ids=np.array([i.class_id for i in msg.instances], np.int32),
        masks=[mask_from_msg(i.mask) for i in msg.instances],
        keypoints=kpts,
        track_ids=np.array([i.id for i in msg.instances], np.uint32),
    )


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
