"""debug/markers: boxes, labels and skeletons as RViz markers.

Without depth, 2D results are drawn on a plane ``marker_depth`` metres in front of
the camera (back-projected through camera_info, or a guessed pinhole when none has
arrived), in the image's optical frame, so they line up with the camera view.
With depth, an instance that has 3D is drawn where it is: its oriented box (a
translucent CUBE, namespace ``boxes_3d``), its centroid (a SPHERE, ``centroids``),
and its 2D outline, skeleton and label on the plane through its centroid.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from geometry_msgs.msg import Point
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from seg_perception.core.depth3d import Instances3D
from seg_perception.core.drawing import color_for, instance_label
from seg_perception.core.types import Detections

CENTROID_DIAMETER = 0.03  # metres: visible at a few metres, small against a graspable object
MIN_BOX_THICKNESS = 0.005  # metres: a flat (single-surface) box must still render


def intrinsics_or_guess(k: Sequence[float] | None, width: int, height: int) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) from a CameraInfo K, or a 60-degree-ish pinhole guess."""
    if k is not None and len(k) == 9 and k[0] > 0 and k[4] > 0:
        return float(k[0]), float(k[4]), float(k[2]), float(k[5])
    f = float(max(width, height))
    return f, f, width / 2.0, height / 2.0


def _point(u: float, v: float, depth: float, fx: float, fy: float, cx: float, cy: float) -> Point:
    return Point(x=(u - cx) / fx * depth, y=(v - cy) / fy * depth, z=depth)


def _valid_3d(d3: Instances3D | None, i: int) -> bool:
    return d3 is not None and bool(d3.valid[i]) and bool(np.all(np.isfinite(d3.centroids[i]))) \
        and bool(np.all(np.isfinite(d3.box_quaternions[i]))) and bool(np.all(np.isfinite(d3.box_sizes[i])))


def _solid_markers(header: Header, i: int, d3: Instances3D, color: ColorRGBA) -> list[Marker]:
    """The oriented box (CUBE) and centroid (SPHERE) of instance ``i``."""
    cube = Marker(header=header, ns="boxes_3d", id=i, type=Marker.CUBE, action=Marker.ADD,
                  color=ColorRGBA(r=color.r, g=color.g, b=color.b, a=0.35))
    cx, cy, cz = (float(v) for v in d3.box_centers[i])
    cube.pose.position = Point(x=cx, y=cy, z=cz)
    q = d3.box_quaternions[i]
    cube.pose.orientation.x, cube.pose.orientation.y = float(q[0]), float(q[1])
    cube.pose.orientation.z, cube.pose.orientation.w = float(q[2]), float(q[3])
    cube.scale.x, cube.scale.y, cube.scale.z = (max(float(v), MIN_BOX_THICKNESS) for v in d3.box_sizes[i])
    sphere = Marker(header=header, ns="centroids", id=i, type=Marker.SPHERE, action=Marker.ADD, color=color)
    px, py, pz = (float(v) for v in d3.centroids[i])
    sphere.pose.position = Point(x=px, y=py, z=pz)
    sphere.pose.orientation.w = 1.0
    sphere.scale.x = sphere.scale.y = sphere.scale.z = CENTROID_DIAMETER
    return [cube, sphere]


def detections_to_markers(
    detections: Detections,
    header: Header,
    class_names: Sequence[str],
    skeleton: Sequence[tuple[int, int]],
    intrinsics: tuple[float, float, float, float],
    depth: float = 1.0,
    keypoint_threshold: float = 0.3,
    instances_3d: Instances3D | None = None,
) -> MarkerArray:
    """Markers of one frame; the first one deletes the previous frame's (DELETEALL).

    ``depth``: distance (m) of the plane for instances without 3D. ``instances_3d``:
    when given, instances with valid 3D also get their oriented box and centroid, and
    their 2D drawing moves to the plane through the centroid. Labels carry the track
    id (``#12 bottle 0.91``) when tracking is on.
    """
    fx, fy, cx, cy = intrinsics
    markers = [Marker(header=header, ns="seg_perception", id=0, action=Marker.DELETEALL)]
    for i in range(len(detections)):
        key = int(detections.track_ids[i]) or int(detections.class_ids[i])
        r, g, b = color_for(key)
        color = ColorRGBA(r=r / 255.0, g=g / 255.0, b=b / 255.0, a=1.0)
        plane = depth
        if _valid_3d(instances_3d, i):
            markers += _solid_markers(header, i, instances_3d, color)
            plane = max(float(instances_3d.centroids[i][2]), 1e-3)
        scale = plane / fx  # metres per pixel on this instance's plane
        x1, y1, x2, y2 = (float(v) for v in detections.boxes[i])
        corners = [(x1, y1), (x2, y1), (x2, y2), (x1, y2), (x1, y1)]
        box = Marker(header=header, ns="boxes", id=i, type=Marker.LINE_STRIP, action=Marker.ADD, color=color)
        box.scale.x = 2.0 * scale
        box.pose.orientation.w = 1.0
        box.points = [_point(u, v, plane, fx, fy, cx, cy) for u, v in corners]
        text = Marker(header=header, ns="labels", id=i, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD, color=color)
        text.text = instance_label(int(detections.class_ids[i]), float(detections.scores[i]), class_names,
                                   int(detections.track_ids[i]))
        text.scale.z = 14.0 * scale
        text.pose.position = _point(x1, y1 - 10.0, plane, fx, fy, cx, cy)
        text.pose.orientation.w = 1.0
        markers += [box, text]
        kpts = detections.keypoints[i] if detections.keypoints.ndim == 3 else np.zeros((0, 3))
        if len(kpts) and len(skeleton):
            bones = Marker(header=header, ns="skeletons", id=i, type=Marker.LINE_LIST, action=Marker.ADD, color=color)
            bones.scale.x = 2.0 * scale
            bones.pose.orientation.w = 1.0
            for a, b_ in skeleton:
                if kpts[a, 2] >= keypoint_threshold and kpts[b_, 2] >= keypoint_threshold:
                    bones.points += [_point(kpts[a, 0], kpts[a, 1], plane, fx, fy, cx, cy),
                                     _point(kpts[b_, 0], kpts[b_, 1], plane, fx, fy, cx, cy)]
            if bones.points:
                markers.append(bones)
    return MarkerArray(markers=markers)
