"""Track ids for one camera stream, with ByteTrack's publish rule (``TrackingStage``).

ByteTrack's publish rule: with tracking on, the network's candidates are kept down
to ``tracking_low_score`` (below ``score_threshold``) so that a weak detection can
extend a track through partial occlusion or motion blur; what is *published* is
every instance at or above ``score_threshold`` plus every instance that carries a
track id. An untracked weak detection is never published, and a track is only born
from a detection that reaches ``score_threshold`` too (the tracker's birth score is
``max(tracking_new_track_score, score_threshold)``), so raising ``score_threshold``
still removes the objects that never reach it.

``FrameProcessor`` is the only caller in the product: the node and the offline
regression run both go through it. No ROS here.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any, Mapping

import numpy as np

from seg_perception.core.tracking import Tracker, TrackerParams
from seg_perception.params import to_dataclass
from seg_perception.core.types import Detections

def tracker_params_from(values: Mapping[str, Any]) -> TrackerParams:
    """``TrackerParams`` from the ``tracking_*`` parameters; ValueError names a bad combination
    (e.g. ``low_score`` above ``high_score``), so the node can refuse it with the reason."""
    return to_dataclass(TrackerParams, values, prefix="tracking_")


def select(detections: Detections, keep: np.ndarray) -> Detections:
    """The instances where ``keep`` ((N,) bool) is true, in their order."""
    keep = np.asarray(keep, bool).reshape(-1)
    idx = np.flatnonzero(keep)
    return Detections(
        boxes=detections.boxes[idx],
        scores=detections.scores[idx],
        class_ids=detections.class_ids[idx],
        masks=[detections.masks[int(i)] for i in idx],
        keypoints=detections.keypoints[idx],
        track_ids=detections.track_ids[idx],
    )


class TrackingStage:
    """A ``Tracker`` plus the publish rule (module docstring), for one camera stream.

    ``update`` once per frame, in stamp order. The tracker starts over (ids keep
    counting up) when the image size changes: a new size means another stream or a
    reconfigured camera, whose boxes cannot be compared with the old ones.
    ``reconfigure`` (new parameters, from another thread) also starts over, keeping
    the id counter, so an id is never given to a second object.
    """

    def __init__(self, params: TrackerParams) -> None:
        self.params = params
        self.tracker = Tracker(params)
        self._image_size: tuple[int, int] | None = None
        self._lock = threading.Lock()

    def reconfigure(self, params: TrackerParams) -> None:
        with self._lock:
            self.params = params
            self.tracker.params = params
            self.tracker.reset()

    @staticmethod
    def detection_threshold(score_threshold: float, params: TrackerParams | None) -> float:
        """Score down to which post-processing keeps candidates: ``score_threshold``, or
        the tracker's low score when tracking is on and that is lower."""
        return float(score_threshold) if params is None else min(float(score_threshold), params.low_score)

    @property
    def num_tracks(self) -> int:
        return self.tracker.num_tracks

    def update(self, detections: Detections, stamp_ns: int, image_size: tuple[int, int],
               score_threshold: float) -> Detections:
        """Track ids for one frame's detections (post-processed at ``detection_threshold``);
        returns the published subset: score >= ``score_threshold`` or a nonzero track id.
        Tracks are born at ``max(params.new_track_score, score_threshold)``.

        image_size: (height, width) of the source image.
        """
        size = (int(image_size[0]), int(image_size[1]))
        birth = max(self.params.new_track_score, float(score_threshold))
        with self._lock:
            if self.tracker.params.new_track_score != birth:  # the tracker reads its params every frame
                self.tracker.params = replace(self.params, new_track_score=birth)
            if self._image_size is not None and size != self._image_size:
                self.tracker.reset()
            self._image_size = size
            tracked = self.tracker.update(detections, int(stamp_ns))
        keep = (np.asarray(tracked.scores) >= np.float32(score_threshold)) | (np.asarray(tracked.track_ids) != 0)
        return tracked if keep.all() else select(tracked, keep)
