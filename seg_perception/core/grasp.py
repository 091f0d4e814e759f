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


class _PackedMasks:
    """Several crops' foregrounds in one flat array, so that the rays of every instance of
    a frame are marched by one set of numpy calls: a frame's cost is then a few calls,
    not a few per instance (numpy's per-call overhead, not the march, is what a frame of
    4-5 masks spends its time on)."""

    def __init__(self, fgs: Sequence[np.ndarray]) -> None:
        self.h = np.array([f.shape[0] for f in fgs], np.int64)
        self.w = np.array([f.shape[1] for f in fgs], np.int64)
        self.off = np.concatenate([[0], np.cumsum(self.h * self.w)[:-1]]).astype(np.int64)
        self.flat = np.concatenate([f.reshape(-1) for f in fgs]) if fgs else np.zeros(0, bool)
        self.diagonal = float(np.hypot(self.h, self.w).max()) if fgs else 0.0

    def inside(self, x: np.ndarray, y: np.ndarray, crops: np.ndarray) -> np.ndarray:
        """Whether sub-pixel points (R, S) (crop pixels; row r in crop ``crops[r]``) lie
        inside that mask's outline.

        The outline is the 0.5 level set of the bilinear interpolation of the 0/1 pixels
        (pixels are samples at their centres, outside the crop is 0). A staircase
        (nearest-pixel) outline would put a slanted edge up to 0.7 px off along the ray,
        and the width, measured across two edges, up to 1.4 px off; this one stays within
        a few tenths of a pixel of the true edge of the rasterised shape.
        """
        x0 = np.floor(x).astype(np.int64)
        y0 = np.floor(y).astype(np.int64)
        fx, fy = x - x0, y - y0
        h, w, off = (a[crops][:, None] for a in (self.h, self.w, self.off))
        flat = self.flat

        def at(yi: np.ndarray, xi: np.ndarray) -> np.ndarray:
            ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            out = np.zeros(xi.shape, np.float64)
            out[ok] = flat[(off + yi * w + xi)[ok]]
            return out

        v = (at(y0, x0) * (1 - fx) * (1 - fy) + at(y0, x0 + 1) * fx * (1 - fy)
             + at(y0 + 1, x0) * (1 - fx) * fy + at(y0 + 1, x0 + 1) * fx * fy)
        return v >= 0.5

    def exit_distances(self, cx: np.ndarray, cy: np.ndarray, dirs: np.ndarray, crops: np.ndarray) -> np.ndarray:
        """Distance (pixels) from (cx, cy) (R,) along each unit direction (R, 2) to where
        the ray first leaves the outline of its mask, ``crops`` (R,) (see ``inside``)."""
        cx, cy = cx[:, None], cy[:, None]
        t = np.arange(0.0, self.diagonal + 2.0, _STEP)  # leaves the largest crop: every ray ends outside
        # March in growing chunks, each only for the rays still inside: most rays leave
        # their mask long before the largest crop's diagonal. Same samples, same result.
        k = np.zeros(len(dirs), np.int64)  # index of each ray's first outside sample (0: not found yet)
        todo, start, size = np.arange(len(dirs)), 0, 64
        while len(todo) and start < len(t):
            ts = t[start:start + size]
            outside = ~self.inside(cx[todo] + dirs[todo, :1] * ts[None, :], cy[todo] + dirs[todo, 1:] * ts[None, :],
                                   crops[todo])
            hit = outside.any(axis=1)
            k[todo[hit]] = start + np.argmax(outside[hit], axis=1)
            todo, start, size = todo[~hit], start + size, size * 2
        lo, hi = t[k - 1], t[k]
        rows = np.arange(len(dirs))
        for n in _REFINE:  # march again, finer, between the last inside and the first outside sample
            ts = lo[:, None] + (hi - lo)[:, None] * (np.arange(1, n + 1) / n)[None, :]  # the last one is hi
            j = np.argmax(~self.inside(cx + dirs[:, :1] * ts, cy + dirs[:, 1:] * ts, crops), axis=1)
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
    fgs, axes, found = [], [], []
    for i, m in enumerate(masks):
        fg = np.asarray(m.data) != 0
        axis = principal_axis(fg.view(np.uint8))
        if axis is None:
            continue
        cx, cy, angles[i] = axis
        kps[i, 0] = (cx + m.x, cy + m.y, 1.0)
        fgs.append(fg)
        axes.append(axis)
        found.append(i)
    if not found:
        return GraspKeypoints(kps, widths, angles)
    cx, cy, theta = (np.array(v, np.float64) for v in zip(*axes))
    packed = _PackedMasks(fgs)
    own = np.arange(len(found))
    on_mask = packed.inside(cx[:, None], cy[:, None], own)[:, 0]
    if on_mask.any():  # grasp points only where the centroid lies on the mask (not a ring's hole)
        own = own[on_mask]
        normal = np.stack([-np.sin(theta[own]), np.cos(theta[own])], axis=1)
        rays = np.repeat(own, 2)  # two rays per instance: along +normal and -normal
        dirs = np.empty((len(rays), 2))
        dirs[0::2], dirs[1::2] = normal, -normal
        d = packed.exit_distances(cx[rays], cy[rays], dirs, rays).reshape(-1, 2)
        for (da, db), nrm, j in zip(d, normal, own):
            i, m, c = found[j], masks[found[j]], np.array([cx[j], cy[j]])
            pa, pb = c + da * nrm, c - db * nrm
            # grasp_a: smaller y; on a horizontal line (equal y up to rounding) smaller x.
            dy = pb[1] - pa[1]
            if dy < -1e-6 or (abs(dy) <= 1e-6 and pb[0] < pa[0]):
                pa, pb = pb, pa
            kps[i, 1] = (pa[0] + m.x, pa[1] + m.y, 1.0)
            kps[i, 2] = (pb[0] + m.x, pb[1] + m.y, 1.0)
            widths[i] = float(da + db)
    return GraspKeypoints(kps, widths, angles)
