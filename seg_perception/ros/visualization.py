"""debug/markers: boxes, labels and skeletons as RViz markers.

Without depth, 2D results are drawn on a plane ``marker_depth`` metres in front of
the camera (back-projected through camera_info, or a guessed pinhole when none has
arrived), in the image's optical frame, so they line up with the camera view.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from geometry_msgs.msg import Point
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from seg_perception.core.drawing import color_for, instance_label
from seg_perception.core.types import Detections


def intrinsics_or_guess(k: Sequence[float] | None, width: int, height: int) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) from a CameraInfo K, or a 60-degree-ish pinhole guess."""
    if k is not None and len(k) == 9 and k[0] > 0 and k[4] > 0:
        return float(k[0]), float(k[4]), float(k[2]), float(k[5])
    f = float(max(width, height))
    return f, f, width / 2.0, height / 2.0


def _point(u: float, v: float, depth: float, fx: float, fy: float, cx: float, cy: float) -> Point:
    return Point(x=(u - cx) / fx * depth, y=(v - cy) / fy * depth, z=depth)


def detections_to_markers(
    detections: Detections,
    header: Header,
    class_names: Sequence[str],
    skeleton: Sequence[tuple[int, int]],
    intrinsics: tuple[float, float, float, float],
    depth: float = 1.0,
    keypoint_threshold: float = 0.3,
) -> MarkerArray:
    fx, fy, cx, cy = intrinsics
    markers = [Marker(header=header, ns="seg_perception", id=0, action=Marker.DELETEALL)]
    scale = depth / fx  # metres per pixel on the marker plane
    for i in range(len(detections)):
        key = int(detections.track_ids[i]) or int(detections.class_ids[i])
        r, g, b = color_for(key)
        color = ColorRGBA(r=r / 255.0, g=g / 255.0, b=b / 255.0, a=1.0)
        x1, y1, x2, y2 = (float(v) for v in detections.boxes[i])
        corners = [(x1, y1), (x2, y1), (x2, y2), (x1, y2), (x1, y1)]
        box = Marker(header=header, ns="boxes", id=i, type=Marker.LINE_STRIP, action=Marker.ADD, color=color)
        box.scale.x = 2.0 * scale
        box.pose.orientation.w = 1.0
        box.points = [_point(u, v, depth, fx, fy, cx, cy) for u, v in corners]
        text = Marker(header=header, ns="labels", id=i, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD, color=color)
        text.text = instance_label(int(detections.class_ids[i]), float(detections.scores[i]), class_names,
                                   int(detections.track_ids[i]))
        text.scale.z = 14.0 * scale
        text.pose.position = _point(x1, y1 - 10.0, depth, fx, fy, cx, cy)
        text.pose.orientation.w = 1.0
        markers += [box, text]
        kpts = detections.keypoints[i] if detections.keypoints.ndim == 3 else np.zeros((0, 3))
        if len(kpts) and len(skeleton):
            bones = Marker(header=header, ns="skeletons", id=i, type=Marker.LINE_LIST, action=Marker.ADD, color=color)
            bones.scale.x = 2.0 * scale
            bones.pose.orientation.w = 1.0
            for a, b_ in skeleton:
                if kpts[a, 2] >= keypoint_threshold and kpts[b_, 2] >= keypoint_threshold:
                    bones.points += [_point(kpts[a, 0], kpts[a, 1], depth, fx, fy, cx, cy),
                                     _point(kpts[b_, 0], kpts[b_, 1], depth, fx, fy, cx, cy)]
            if bones.points:
                markers.append(bones)
    return MarkerArray(markers=markers)
