"""Model-free grasp keypoints from instance masks (keypoint set ``"grasp"``).

For any segmentation model, a parallel-jaw gripper gets a first grasp from the mask
alone: close across the object's principal (long) axis, through its centroid. Per
instance:

- the centroid and principal axis of the mask, from its image moments (the axis
  along which the mask's pixels spread most);
- the line through the centroid perpendicular to that axis, and the two points where
  it leaves the mask (the antipodal contact points ``grasp_a`` and ``grasp_b``);
- the width between them, in pixels (the gripper opening, once scaled by depth:
  give these keypoints to ``depth3d.instances_3d(..., extra_keypoints=...)`` and take
  the distance of the two 3D points for metres).

Keypoint set ``"grasp"`` (``PoseKeypoints.keypoint_set``), in this order:

====  ==========  ===============================================================
0     centroid    mask centroid (mean pixel position)
1     grasp_a     contact point where the line leaves the mask on the side of
                  smaller image y (higher in the image); on a horizontal line,
                  the side of smaller x (left)
2     grasp_b     the opposite contact point
====  ==========  ===============================================================

Each keypoint is (x, y, score) in source-image pixels (pixel centres at integers, as
everywhere in the package). Score is 1 when found and 0 otherwise (x, y are then 0):
the centroid is found for any non-empty mask; the grasp points only when the
centroid lies on the mask (not for a ring or a C-shape, whose centroid is in the
hole and whose perpendicular line gives no meaningful antipodal pair).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import cv2
import numpy as np

from seg_perception.core.types import CroppedMask

KEYPOINT_SET = "grasp"
KEYPOINT_NAMES = ("centroid", "grasp_a", "grasp_b")

_STEP = 0.25        # ray-march step, pixels: no mask gap of a pixel or more is skipped
_REFINE = (32, 32)  # two finer marches: the exit to 0.25 / 1024 px, far below a pixel, in two numpy calls


class GraspKeypoints(NamedTuple):
    """keypoints: (N, 3, 3) float32 [centroid, grasp_a, grasp_b] x (x, y, score), pixels.
    widths:    (N,) float32 distance grasp_a-grasp_b in pixels (0 when not found).
    angles:    (N,) float32 direction of the principal axis in radians, in (-pi/2, pi/2],
               measured from the image x axis towards y (clockwise on screen); the
               gripper closes along angle + pi/2.
    """

    keypoints: np.ndarray
    widths: np.ndarray
    angles: np.ndarray


def principal_axis(mask: np.ndarray) -> tuple[float, float, float] | None:
    """(cx, cy, angle) of a (h, w) mask's centroid (crop pixels) and long axis (radians).

    From the second central moments: angle = 0.5 atan2(2 mu11, mu20 - mu02), the
    direction of largest spread. None for an empty mask. For a mask with no preferred
    direction (a disc) the angle is whatever rounding gives, typically 0.
    """
    m = cv2.moments(np.ascontiguousarray(mask, dtype=np.uint8), binaryImage=True)
    if m["m00"] <= 0:
        return None
    cx, cy = m["m10"] / m["m00"], m["m01"] / m["m00"]
    return cx, cy, 0.5 * float(np.arctan2(2.0 * m["mu11"], m["mu20"] - m["mu02"]))


def _inside(fg: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Whether sub-pixel points (crop pixels) lie inside the mask's outline.

    The outline is the 0.5 level set of the bilinear interpolation of the 0/1 pixels
    (pixels are samples at their centres, outside the crop is 0). A staircase
    (nearest-pixel) outline would put a slanted edge up to 0.7 px off along the ray,
    and the width, measured across two edges, up to 1.4 px off; this one stays within
    a few tenths of a pixel of the true edge of the rasterised shape.
    """
    h, w = fg.shape
    x0 = np.floor(x).astype(np.int64)
    y0 = np.floor(y).astype(np.int64)
    fx, fy = x - x0, y - y0

    def at(yi: np.ndarray, xi: np.ndarray) -> np.ndarray:
        ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        out = np.zeros(xi.shape, np.float64)
        out[ok] = fg[yi[ok], xi[ok]]
        return out

    v = (at(y0, x0) * (1 - fx) * (1 - fy) + at(y0, x0 + 1) * fx * (1 - fy)
         + at(y0 + 1, x0) * (1 - fx) * fy + at(y0 + 1, x0 + 1) * fx * fy)
    return v >= 0.5


def _exit_distances(fg: np.ndarray, cx: float, cy: float, dirs: np.ndarray) -> np.ndarray:
    """Distance (pixels) from (cx, cy) along each unit direction (D, 2) to where the
    ray first leaves the mask's outline (see ``_inside``)."""
    h, w = fg.shape
    t = np.arange(0.0, np.hypot(h, w) + 2.0, _STEP)
    xs = cx + dirs[:, :1] * t[None, :]
    ys = cy + dirs[:, 1:] * t[None, :]
    inside = _inside(fg, xs, ys)
    k = np.argmax(~inside, axis=1)  # first outside sample (the march always ends outside)
    lo, hi = t[k - 1], t[k]
    rows = np.arange(len(dirs))
    for n in _REFINE:  # march again, finer, between the last inside and the first outside sample
        ts = lo[:, None] + (hi - lo)[:, None] * (np.arange(1, n + 1) / n)[None, :]  # the last one is hi
        j = np.argmax(~_inside(fg, cx + dirs[:, :1] * ts, cy + dirs[:, 1:] * ts), axis=1)
        lo, hi = np.where(j > 0, ts[rows, j - 1], lo), ts[rows, j]
    return (lo + hi) / 2


def grasp_keypoints(masks: Sequence[CroppedMask]) -> GraspKeypoints:
    """Centroid and antipodal grasp points of each mask (keypoint set ``"grasp"``).

    masks: N cropped masks (source-image pixels). Returns ``GraspKeypoints`` with
    (N, 3, 3) keypoints [centroid, grasp_a, grasp_b], widths and axis angles; see the
    module docstring for the order and scores.
    """
    n = len(masks)
    kps = np.zeros((n, 3, 3), np.float32)
    widths = np.zeros(n, np.float32)
    angles = np.zeros(n, np.float32)
    for i, m in enumerate(masks):
        fg = np.asarray(m.data) != 0
        axis = principal_axis(fg.view(np.uint8))
        if axis is None:
            continue
        cx, cy, theta = axis
        angles[i] = theta
        kps[i, 0] = (cx + m.x, cy + m.y, 1.0)
        if not _inside(fg, np.array([cx]), np.array([cy]))[0]:
            continue
        normal = np.array([-np.sin(theta), np.cos(theta)])
        d = _exit_distances(fg, cx, cy, np.stack([normal, -normal]))
        pa = np.array([cx, cy]) + d[0] * normal
        pb = np.array([cx, cy]) - d[1] * normal
        # grasp_a: smaller y; on a horizontal line (equal y up to rounding) smaller x.
        dy = pb[1] - pa[1]
        if dy < -1e-6 or (abs(dy) <= 1e-6 and pb[0] < pa[0]):
            pa, pb = pb, pa
        kps[i, 1] = (pa[0] + m.x, pa[1] + m.y, 1.0)
        kps[i, 2] = (pb[0] + m.x, pb[1] + m.y, 1.0)
        widths[i] = float(d.sum())
    return GraspKeypoints(kps, widths, angles)
