"""One camera's frame path: image (+ depth, intrinsics) in, the frame's result out.

``FrameProcessor`` is what the node runs for every frame and what offline regression
runs for every recorded image, so the two cannot drift apart: the tracking-threshold
rule (post-processing keeps candidates down to the tracker's low score), ByteTrack's
publish rule (``pipeline.tracking``), the grasp keypoints and the 3D from registered
depth (``pipeline.depth``) live here and nowhere else.

One processor per camera stream: it owns that stream's tracker, depth pairing and
frame-time parameters. It borrows the model (``SegmentationPipeline``, the backend
with its pre- and post-processing), which several cameras may share, and never closes
it. The network (``forward``) is separate from the per-frame work after it
(``detect``, ``add_3d``, ``add_grasp``), so a caller may run one frame's network while
another frame is finished, or batch the networks of several cameras; and the grasp
points, which only the keypoints output carries, come last, so the node publishes
``instances`` before computing them.
No ROS here: parameters come in as the ``{name: value}`` dict of ``seg_perception.params``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from seg_perception.core.depth3d import CameraIntrinsics, DepthSizeError, valid_depth
from seg_perception.core.grasp import grasp_keypoints
from seg_perception.core.postprocess import PostprocessParams
from seg_perception.core.tracking import TrackerParams
from seg_perception.core.types import Detections
from seg_perception.pipeline.depth import DepthPairing, Frame3D, depth3d_params_from, frame_3d, with_grasp_3d
from seg_perception.pipeline.segmentation import SegmentationPipeline, postprocess_params_from
from seg_perception.pipeline.tracking import TrackingStage, tracker_params_from

# (problem kind, message): a frame-level problem worth a throttled warning (the node's
# ``ProblemBook``); the frame is still published, without what failed.
Warn = Callable[[str, str], None]


def _ignore(kind: str, message: str) -> None:
    pass


def slop_ns(seconds: float) -> int:
    """``depth_sync_slop`` (seconds) in the pairing's nanoseconds."""
    return int(round(float(seconds) * 1e9))


@dataclass
class Inferred:
    """A frame whose network has run: what ``detect`` needs (the model that ran it, as a
    reconfigure may swap the processor's model between ``forward`` and ``detect``)."""

    model: SegmentationPipeline
    raw: dict[str, np.ndarray]
    image_size: tuple[int, int]  # (height, width) of the source image


@dataclass
class ProcessedFrame:
    """What one frame publishes (``image_size``: (height, width) of its source image).

    detections: the published instances (with track ids when tracking is on), pixels
                of the source image.
    grasp:      (N, 3, 3) grasp keypoints (x, y, score) when published, else None.
    frame3d:    3D of the instances and grasp points, or None (no depth paired, no
                intrinsics, no valid readings).
    intrinsics: the intrinsics 3D used (None without depth or camera_info).
    tracking:   tracking was on for this frame (ids are track ids, 0 = untracked).
    """

    detections: Detections
    grasp: np.ndarray | None
    image_size: tuple[int, int]  # (height, width) of the source image
    frame3d: Frame3D | None = None
    intrinsics: CameraIntrinsics | None = None
    tracking: bool = False


class FrameProcessor:
    """The frame path after decoding, for one camera stream (module docstring).

    ``apply`` takes new parameter values (checked together: a ValueError names a bad
    combination and changes nothing); ``attach`` / ``detach`` lend it a model (the node's
    configure / cleanup). The tracker lives as long as the processor and is reset with
    new parameters rather than replaced, so ids keep counting up across parameter
    changes, tracking off/on and reconfiguration: an id is never given to a second object.

    depth_label: how warnings name the depth source (the node's resolved depth topic).
    """

    def __init__(self, values: Mapping[str, Any], warn: Warn = _ignore, depth_label: str = "depth") -> None:
        self.warn = warn
        self.depth_label = depth_label
        self.model: SegmentationPipeline | None = None
        self.depth = DepthPairing(slop_ns(values["depth_sync_slop"]))
        self._tracker: TrackingStage | None = None
        self.tracking: TrackingStage | None = None  # the tracker in use; None: tracking off
        self.frames_with_3d = 0
        self.values: dict[str, Any] = dict(values)
        self.depth_params = depth3d_params_from(values)
        self.postprocess = self._postprocess_params(values)

    # ------------------------------------------------------------------ parameters
    @staticmethod
    def check(values: Mapping[str, Any]) -> None:
        """ValueError naming the first parameter combination that no single range
        expresses (depth_min < depth_max, tracking_low_score <= tracking_high_score, an
        odd window)."""
        depth3d_params_from(values)
        tracker_params_from(values)

    @staticmethod
    def _postprocess_params(values: Mapping[str, Any]) -> PostprocessParams:
        """Post-processing keeps candidates down to the tracker's low score when tracking is on."""
        tracker = tracker_params_from(values) if values["tracking_enabled"] else None
        threshold = TrackingStage.detection_threshold(values["score_threshold"], tracker)
        return postprocess_params_from({**values, "score_threshold": threshold})

    def apply(self, values: Mapping[str, Any], changed: set[str] | None = None) -> None:
        """Take ``values`` (every parameter; ``changed``: the names that changed, None:
        all, as on configure). Raises ValueError (nothing changed) for a bad combination."""
        depth_params = depth3d_params_from(values)
        tracker_params = tracker_params_from(values)
        postprocess = self._postprocess_params(values)
        self.values = dict(values)
        self.depth_params = depth_params
        self.postprocess = postprocess
        if changed is None or "depth_sync_slop" in changed:
            self.depth.slop_ns = slop_ns(values["depth_sync_slop"])
        if self.model is not None and (changed is None or any(n.startswith("tracking_") for n in changed)):
            self.tracking = self._tracking_stage(values, tracker_params)

    def _tracking_stage(self, values: Mapping[str, Any], params: TrackerParams) -> TrackingStage | None:
        if self._tracker is None:
            self._tracker = TrackingStage(params)
        else:
            self._tracker.reconfigure(params)
        return self._tracker if values["tracking_enabled"] else None

    def attach(self, model: SegmentationPipeline) -> None:
        """Use ``model`` from now on (the processor does not own it: whoever loaded it closes it)."""
        self.model = model
        self.tracking = self._tracking_stage(self.values, tracker_params_from(self.values))

    def detach(self) -> None:
        self.model = None
        self.tracking = None

    # ------------------------------------------------------------------ frames
    def forward(self, rgb: np.ndarray) -> Inferred | None:
        """The network on ``rgb`` ((H, W, 3) uint8); None without a model."""
        model = self.model
        if model is None:
            return None
        return Inferred(model, model.forward(rgb), (int(rgb.shape[0]), int(rgb.shape[1])))

    @staticmethod
    def forward_together(processors: Sequence["FrameProcessor"], images: Sequence[np.ndarray],
                         times: dict[str, float] | None = None) -> list[Inferred | None]:
        """The network on one image per processor (several cameras), as few batches as
        there are distinct models among them (one when they share the node's model);
        None for a processor without a model. ``times``: see ``forward_batch``."""
        results: list[Inferred | None] = [None] * len(processors)
        groups: dict[int, list[int]] = {}
        for i, proc in enumerate(processors):
            if proc.model is not None:
                groups.setdefault(id(proc.model), []).append(i)
        for members in groups.values():
            model = processors[members[0]].model
            assert model is not None
            raws = model.forward_batch([images[i] for i in members], times)
            for i, raw in zip(members, raws):
                results[i] = Inferred(model, raw, (int(images[i].shape[0]), int(images[i].shape[1])))
        return results

    def detect(self, inferred: Inferred, stamp_ns: int) -> ProcessedFrame:
        """Post-processing and tracking (publish rule) of one frame, in stamp order; no
        grasp points yet (``add_grasp``)."""
        detections = inferred.model.decode(inferred.raw, inferred.image_size, self.postprocess)
        tracking = self.tracking
        if tracking is not None:
            detections = tracking.update(detections, stamp_ns, inferred.image_size, self.values["score_threshold"])
        return ProcessedFrame(detections, None, inferred.image_size, tracking=tracking is not None)

    def add_grasp(self, result: ProcessedFrame) -> ProcessedFrame:
        """``result`` with its grasp keypoints when they are published (``publish_grasp_keypoints``),
        and their 3D when it has 3D (after ``add_3d``)."""
        if result.grasp is not None or not self.values["publish_grasp_keypoints"]:
            return result
        result.grasp = grasp_keypoints(result.detections.masks).keypoints
        if result.frame3d is not None and result.intrinsics is not None:
            result.frame3d = with_grasp_3d(result.frame3d, result.detections, result.grasp, result.intrinsics)
        return result

    def pair_depth(self, stamp_ns: int, received: float, early: tuple[int, Any] | None = None) -> Any:
        """The depth (any payload ``self.depth`` buffers) paired with the frame of
        ``stamp_ns``, waiting until ``depth_wait`` after its arrival (``received``,
        monotonic seconds), or None; no pair despite a live depth stream is reported:
        usually depth and colour are stamped by different clocks."""
        pairing = self.depth.pair(stamp_ns, received + float(self.values["depth_wait"]), early)
        if pairing.depth is None and pairing.live:
            newest = pairing.newest_ns
            offset = "" if newest is None else f"; the newest depth image is {(newest - stamp_ns) / 1e9:+.3f} s from it"
            self.warn("depth_sync",
                      f"no depth image on {self.depth_label} within depth_sync_slop="
                      f"{self.values['depth_sync_slop']} s of the colour image{offset}; publishing without 3D "
                      "(do depth and colour share a clock? else raise depth_sync_slop or depth_wait)")
        return pairing.depth

    def add_3d(self, result: ProcessedFrame, depth: Any, intrinsics: CameraIntrinsics | None,
               to_metres: Callable[[Any], np.ndarray | None] | None = None) -> ProcessedFrame:
        """``result`` with the 3D of its instances and grasp points from ``depth``
        (registered to the colour image; metres, or a payload ``to_metres`` decodes,
        returning None when it cannot); unchanged (and reported) when there is none."""
        result.intrinsics = intrinsics
        if depth is None:
            return result
        height, width = result.image_size
        if intrinsics is None:
            self.warn("depth", f"depth arrives on {self.depth_label} but no usable camera_info (colour or depth) "
                      f"describes the {width}x{height} image; publishing without 3D")
            return result
        if to_metres is not None:
            depth = to_metres(depth)
            if depth is None:
                return result
        params = self.depth_params
        if not valid_depth(depth, params.min_depth, params.max_depth).any():
            self.warn("depth", f"depth image on {self.depth_label} has no valid readings (all NaN, inf, 0 or "
                      f"outside depth_min..depth_max = {params.min_depth}..{params.max_depth} m); "
                      "publishing without 3D")
            return result
        try:
            result.frame3d = frame_3d(result.detections, depth, intrinsics, (height, width), params, result.grasp)
        except DepthSizeError as exc:
            self.warn("depth", f"depth image on {self.depth_label} does not fit the colour image: {exc}; "
                      "publishing without 3D")
            return result
        self.frames_with_3d += 1
        return result

    def process(self, rgb: np.ndarray, stamp_ns: int, depth: np.ndarray | None = None,
                intrinsics: CameraIntrinsics | None = None) -> ProcessedFrame:
        """The whole path for one frame: ``forward``, ``detect``, ``add_3d`` (depth in metres,
        registered to ``rgb``), ``add_grasp``. Frames go in stamp order (tracking)."""
        inferred = self.forward(rgb)
        if inferred is None:
            raise RuntimeError("FrameProcessor.process needs a model: attach one first")
        return self.add_grasp(self.add_3d(self.detect(inferred, stamp_ns), depth, intrinsics))

    def diagnostics(self) -> dict[str, str]:
        """This stream's entries of the node's /diagnostics status."""
        tracking = self.tracking
        return {
            "depth_received": str(self.depth.received),
            "frames_with_3d": str(self.frames_with_3d),
            "tracking": "on" if tracking is not None else "off",
            "tracks_active": str(tracking.num_tracks if tracking is not None else 0),
        }
