"""3D of a frame from registered depth: pairing colour with depth by stamp
(``DepthPairing``), the instances' and grasp points' 3D (``frame_3d``), the point
cloud (``cloud_points``) and the intrinsics of a depth stream at another resolution
(``scaled_intrinsics``). Called through ``FrameProcessor``; no ROS here: parameters
come in as the plain ``{name: value}`` dict of ``seg_perception.params``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Any, Callable, Generic, Mapping, NamedTuple, Sequence, TypeVar

import numpy as np

from seg_perception.core.depth3d import (
    CameraIntrinsics, Depth3DParams, Instances3D, instance_points, instances_3d, keypoints_3d, match_depth_to_image,
)
from seg_perception.core.types import Detections
from seg_perception.params import to_dataclass
from seg_perception.pipeline.tracking import select

def depth3d_params_from(values: Mapping[str, Any]) -> Depth3DParams:
    """``Depth3DParams`` from the ``depth_*`` parameters; ValueError names a bad combination
    (e.g. ``depth_min`` not below ``depth_max``, an even ``depth_keypoint_window``)."""
    return to_dataclass(Depth3DParams, values, prefix="depth_",
                        renames={"min_depth": "depth_min", "max_depth": "depth_max"})


T = TypeVar("T")


class Pairing(NamedTuple):
    """Result of ``DepthPairing.pair``.

    depth:     the paired depth (any payload), or None.
    live:      a depth stream is live (its newest image stamped within ``live_s`` of the
               colour frame); no pair despite
               that is worth reporting (clocks differ, slop too small).
    newest_ns: stamp of the newest depth image, for the report (None if none yet).
    """

    depth: Any
    live: bool
    newest_ns: int | None


class DepthPairing(Generic[T]):
    """Pairs a colour frame with the depth image of the nearest stamp, waiting briefly
    for depth that arrives after the colour frame. One lock (a condition) guards the
    buffer and the wait.

    Depth images are only buffered on arrival (``add``, the subscription thread; any
    payload: an array, a message); the inference thread calls ``early`` when a colour
    frame arrives (so a slow model does not find its depth evicted from the bounded
    buffer) and ``pair`` after inference. ``pair`` takes the nearer of the two; with
    none, and while a depth stream is live (its newest image stamped within ``live_s``
    seconds of the colour frame: judged in stamp time, so a slow lockstep replay counts
    as live and a stopped camera does not; 0.5 s covers any depth camera at 2 Hz or
    faster), it waits until ``deadline`` (monotonic seconds) for one: drivers often
    deliver registered depth a few milliseconds after colour, since registration needs
    both. It never waits without a depth stream, nor once a depth image newer than the
    colour stamp plus the slop has arrived (stamps increase, so no later one can pair).

    A match is the buffered depth nearest in stamp within ``slop_ns`` (ties go to the
    newer one), never depth from another moment: a moving robot would put the object in
    the wrong place. Stamps are integer nanoseconds. Only the newest ``buffer_size``
    depth images are kept, which at camera rates covers the inference latency; a depth
    stamp older than the newest by more than ``reset_after_ns`` (a bag looping, sim
    time restarting) clears the buffer.
    """

    def __init__(self, slop_ns: int, live_s: float = 0.5, buffer_size: int = 10,
                 clock: Callable[[], float] = time.monotonic, reset_after_ns: int = 1_000_000_000) -> None:
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be >= 1, got {buffer_size}")
        self.slop_ns = slop_ns
        self.reset_after_ns = int(reset_after_ns)
        self.live_s = float(live_s)
        self._clock = clock
        self._buf: deque[tuple[int, T]] = deque(maxlen=int(buffer_size))
        self._cond = threading.Condition()
        self._newest_ns: int | None = None
        self._closed = False
        self.received = 0

    @property
    def slop_ns(self) -> int:
        return self._slop_ns

    @slop_ns.setter
    def slop_ns(self, value: int) -> None:
        if value < 0:
            raise ValueError(f"slop_ns must be >= 0, got {value}")
        self._slop_ns = int(value)

    def __len__(self) -> int:
        with self._cond:
            return len(self._buf)

    def add(self, stamp_ns: int, depth: T) -> None:
        stamp_ns = int(stamp_ns)
        with self._cond:
            if self._buf and stamp_ns < max(s for s, _ in self._buf) - self.reset_after_ns:
                self._buf.clear()
            self._buf.append((stamp_ns, depth))
            self._newest_ns = stamp_ns
            self.received += 1
            self._cond.notify_all()

    def match_stamped(self, stamp_ns: int) -> tuple[int, T] | None:
        """(depth stamp, depth) nearest to ``stamp_ns`` within the slop, or None; now, without waiting."""
        with self._cond:
            return self._nearest(int(stamp_ns))

    def match(self, stamp_ns: int) -> T | None:
        """The depth nearest to ``stamp_ns`` within the slop, or None."""
        hit = self.match_stamped(stamp_ns)
        return None if hit is None else hit[1]

    # The colour frame's early match, taken on arrival.
    early = match_stamped

    def _nearest(self, stamp_ns: int) -> tuple[int, T] | None:
        best: tuple[int, T] | None = None
        best_dt = None
        for s, d in self._buf:
            dt = abs(s - stamp_ns)
            if dt <= self._slop_ns and (best_dt is None or dt < best_dt or (dt == best_dt and s > best[0])):
                best, best_dt = (s, d), dt
        return best

    def pair(self, stamp_ns: int, deadline: float, early: tuple[int, T] | None = None) -> Pairing:
        """The depth paired with the colour frame of ``stamp_ns`` (see the class)."""
        def best() -> tuple[int, T] | None:
            cands = [c for c in (early, self._nearest(stamp_ns)) if c is not None]
            return min(cands, key=lambda c: abs(c[0] - stamp_ns)) if cands else None

        stamp_ns = int(stamp_ns)
        with self._cond:
            hit = best()
            newest = self._newest_ns
            live = newest is not None and abs(stamp_ns - newest) <= self.live_s * 1e9
            # Depth stamps increase: once one lies beyond the slop, a later one cannot pair.
            while hit is None and live and not self._closed and not self._passed(stamp_ns):
                remaining = deadline - self._clock()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
                hit = best()
            return Pairing(None if hit is None else hit[1], live, self._newest_ns)

    def _passed(self, stamp_ns: int) -> bool:
        return self._newest_ns is not None and self._newest_ns > stamp_ns + self._slop_ns

    def reset(self) -> None:
        """Forget every depth image (the stream restarts); ``pair`` may wait again."""
        with self._cond:
            self._buf.clear()
            self._newest_ns = None
            self._closed = False

    def close(self) -> None:
        """Wake a waiting ``pair`` and stop waiting (node shutting down)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def scaled_intrinsics(k: Sequence[float], from_size: tuple[int, int], to_size: tuple[int, int]) -> CameraIntrinsics:
    """Intrinsics of a camera_info made for ``from_size`` (width, height) applied to an
    image of ``to_size``: a registered depth stream at another resolution sees the same
    view, so its K scales with the pixel size (pixel centres at integers, hence the
    half-pixel terms). ValueError for a zero size, a different aspect ratio (not the
    same view) or a K without positive, finite focal lengths.
    """
    (fw, fh), (tw, th) = from_size, to_size
    if fw <= 0 or fh <= 0 or tw <= 0 or th <= 0:
        raise ValueError(f"camera_info size {fw}x{fh} cannot describe a {tw}x{th} image")
    sx, sy = tw / fw, th / fh
    if abs(sx / sy - 1.0) > 0.02:
        raise ValueError(f"camera_info is for {fw}x{fh}, a different aspect ratio than the {tw}x{th} image")
    base = CameraIntrinsics.from_k(k)
    return CameraIntrinsics(base.fx * sx, base.fy * sy, (base.cx + 0.5) * sx - 0.5, (base.cy + 0.5) * sy - 0.5)


@dataclass
class Frame3D:
    """3D of one frame's published instances (camera optical frame, metres).

    instances:      ``Instances3D`` (centroid, oriented box, point count, model keypoints).
    grasp:          (N, 3, 3) float32 positions of the grasp keypoints (NaN where invalid).
    grasp_valid:    (N, 3) bool.
    depth:          the (H, W) float32 depth matched to the colour image (for point clouds).
    params:         the depth parameters it was computed with (the point cloud uses them too).
    """

    instances: Instances3D
    grasp: np.ndarray
    grasp_valid: np.ndarray
    depth: np.ndarray
    params: Depth3DParams


def frame_3d(detections: Detections, depth: np.ndarray, intrinsics: CameraIntrinsics,
             image_size: tuple[int, int], params: Depth3DParams,
             grasp_keypoints: np.ndarray | None = None) -> Frame3D:
    """3D of every instance and of its grasp keypoints (when given) from registered depth (metres).

    image_size: (height, width) of the colour image. Raises ``DepthSizeError`` when the
    depth cannot be registered to it (a different aspect ratio). The depth is matched
    once and shared by the instances, the grasp points and the point cloud.
    """
    matched = match_depth_to_image(depth, int(image_size[0]), int(image_size[1]))
    inst = instances_3d(detections, matched, intrinsics, image_size=image_size, params=params)
    n = len(detections)
    no_grasp = Frame3D(inst, np.full((n, 0, 3), np.nan, np.float32), np.zeros((n, 0), bool), matched, params)
    return with_grasp_3d(no_grasp, detections, grasp_keypoints, intrinsics)


def with_grasp_3d(frame3d: Frame3D, detections: Detections, grasp_keypoints: np.ndarray | None,
                  intrinsics: CameraIntrinsics) -> Frame3D:
    """``frame3d`` with the 3D of the instances' grasp keypoints (``frame_3d``'s depth);
    unchanged for None. Grasp points off their object's depth are not trusted (``at_object_depth``)."""
    if grasp_keypoints is None or len(detections) == 0:
        return frame3d
    g, gv = keypoints_3d(grasp_keypoints, frame3d.depth, intrinsics, detections.masks, frame3d.params)
    gv &= at_object_depth(g, frame3d.instances)
    g[~gv] = np.nan
    return replace(frame3d, grasp=g, grasp_valid=gv)


def at_object_depth(points: np.ndarray, inst: Instances3D, margin: float = 0.02) -> np.ndarray:
    """(N, K) bool: which of (N, K, 3) points lie at their instance's depth, i.e. within
    half its 3D box diagonal plus ``margin`` metres of its centroid's depth.

    Grasp points lie on the silhouette, where stereo sensors lose depth; a keypoint
    window without a reading on the mask takes the background's, which would put a
    contact point a metre behind the object. Such points (and every point of an
    instance without 3D) are not trusted.
    """
    pts = np.asarray(points, np.float64)
    if pts.ndim != 3 or pts.shape[1] == 0:
        return np.zeros(pts.shape[:2], bool)
    half = np.linalg.norm(np.asarray(inst.box_sizes, np.float64), axis=1) / 2 + margin
    with np.errstate(invalid="ignore"):
        near = np.abs(pts[..., 2] - np.asarray(inst.centroids, np.float64)[:, 2:3]) <= half[:, None]
    return near & np.asarray(inst.valid, bool)[:, None]


def cloud_points(detections: Detections, depth: np.ndarray, intrinsics: CameraIntrinsics,
                 params: Depth3DParams, stride: int, tracking: bool) -> np.ndarray:
    """``(M, 5)`` float32 x, y, z, instance id, class id of the masked depth points.

    The instance id is what ``instance_map`` holds: with tracking on, the track id, and
    0 for an instance without one (its points still mark an obstacle; index + 1 would
    collide with a real track id); with tracking off, index + 1 into the InstanceArray.
    ``depth`` must already match the colour image (``Frame3D.depth``).
    """
    size = depth.shape[:2]
    if not tracking:
        return instance_points(detections, depth, intrinsics, image_size=size, params=params, stride=stride)
    tracked = np.asarray(detections.track_ids) != 0
    parts = [instance_points(select(detections, tracked), depth, intrinsics, image_size=size, params=params,
                             stride=stride)]
    if not tracked.all():
        rest = instance_points(select(detections, ~tracked), depth, intrinsics, image_size=size, params=params,
                               stride=stride)
        rest[:, 3] = 0.0
        parts.append(rest)
    return np.concatenate(parts)

