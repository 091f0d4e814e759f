"""rclpy messages <-> core types: decoding camera images, and the node's messages
(``BUILDER``, our one ``messages.MessageBuilder`` over rclpy's classes)."""

from __future__ import annotations

import numpy as np
from sensor_msgs.msg import CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import Header

from seg_perception.core.image import decode_compressed, decode_depth, decode_image
from seg_perception.messages import TYPE_NAMES, MessageBuilder
# The readers under the names earlier releases documented for downstream code.
from seg_perception.messages import detections_from_instance_array as detections_from_msg  # noqa: F401
from seg_perception.messages import mask_from_message as mask_from_msg  # noqa: F401


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


def _rclpy_types() -> dict[str, type]:
    """``messages.TYPE_NAMES`` -> rclpy's generated classes."""
    import builtin_interfaces.msg
    import geometry_msgs.msg
    import sensor_msgs.msg
    import std_msgs.msg

    import seg_perception.msg

    modules = {"builtin_interfaces": builtin_interfaces.msg, "geometry_msgs": geometry_msgs.msg,
               "sensor_msgs": sensor_msgs.msg, "std_msgs": std_msgs.msg, "seg_perception": seg_perception.msg}
    return {name: getattr(modules[name.split("/")[0]], name.rsplit("/", 1)[1]) for name in TYPE_NAMES}


# The node's messages: ``messages.MessageBuilder`` over rclpy's classes.
BUILDER = MessageBuilder(_rclpy_types(), numpy_arrays=False)


def map_image_msg(image: np.ndarray, header: Header) -> Image:
    """A mono16 (uint16) or mono8 (uint8) Image of an (H, W) map, little-endian, for
    instance_map / class_map; same header and size as the source image."""
    if image.dtype == np.uint16:
        return BUILDER.image(header, np.ascontiguousarray(image, dtype="<u2"), "mono16")
    if image.dtype == np.uint8:
        return BUILDER.image(header, image, "mono8")
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
