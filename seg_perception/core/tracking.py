"""Stable instance ids across frames: a ByteTrack-style tracker on boxes and masks.

Each track carries a constant-velocity Kalman filter on its box (centre x, y, width,
height in source-image pixels, and their rates in pixels per second) and the last
mask it was matched to. Every frame:

1. All tracks are predicted to the frame's stamp (``dt`` from the stamps, so dropped
   frames and uneven rates are handled).
2. Similarity of a track and a detection = ``(1 - mask_weight) * box IoU(predicted box,
   detection box) + mask_weight * mask IoU(last mask moved by the predicted motion,
   detection mask)``; pairs of different classes are not allowed (``class_aware``).
3. Stage 1: detections with ``score >= high_score`` are matched to confirmed tracks
   (including tracks lost for up to ``max_age`` frames), similarity at least
   ``match_iou``.
4. Stage 2 (ByteTrack): detections with ``low_score <= score < high_score`` are matched
   to the confirmed tracks that were seen in the previous frame and are still
   unmatched, similarity at least ``low_match_iou``. A weak detection thereby extends
   a track through partial occlusion or motion blur but never starts one.
5. Stage 3: still unmatched high-score detections are matched to tentative tracks.
6. Unmatched detections with ``score >= new_track_score`` start tentative tracks.

Birth: a tentative track is confirmed after ``min_hits`` consecutive matched frames
(on the very first frame, with nothing to compare against, at once, as ByteTrack
does); a tentative track that misses a frame is deleted. Death: a confirmed track unmatched
for more than ``max_age`` frames is deleted. Ids start at 1 and are handed out on
confirmation (so they stay consecutive and no id is wasted on a one-frame false
positive); an id is never reused. Detections of tentative tracks and unmatched
detections get id 0 ("not tracked"), as in ``Instance.id``.

Matching is optimal (Hungarian, ``scipy.optimize.linear_sum_assignment``) when SciPy
is installed, greedy by similarity otherwise (``matcher`` parameter); on typical
scenes with few overlapping objects both give the same pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from seg_perception.core.masks import mask_iou
from seg_perception.core.postprocess import box_iou
from seg_perception.core.types import CroppedMask, Detections

try:  # optional: the core's dependencies are NumPy and OpenCV only
    from scipy.optimize import linear_sum_assignment as _linear_sum_assignment
except ImportError:  # pragma: no cover - depends on the install
    _linear_sum_assignment = None

MATCHERS = ("auto", "hungarian", "greedy")

# Kalman noise, relative to the box height (so a near, large object may move more
# pixels than a far one). Continuous-time white-noise densities, per second: at 30
# fps they reproduce DeepSORT/ByteTrack's per-frame values (1/20 and 1/160 of h).
_STD_MEAS = 0.05          # measurement: fraction of h
_STD_POS_RATE = 0.27      # process, position: fraction of h per sqrt(s)
_STD_VEL_RATE = 1.04      # process, velocity: fraction of h per s per sqrt(s)
_STD_VEL_INIT = 2.0       # initial velocity uncertainty: fraction of h per second
_MIN_SIZE = 1.0           # pixels; keeps a degenerate box from zeroing the noise


@dataclass(frozen=True)
class TrackerParams:
    """Tunables of ``Tracker`` (the node's ``tracking_*`` parameters).

    high_score:      detections at or above this score are matched first and may
                     start tracks (0..1).
    low_score:       detections between this and ``high_score`` only extend tracks
                     seen in the previous frame; below it they are ignored (0..1).
    new_track_score: an unmatched detection needs this score to start a track.
    match_iou:       minimum similarity (IoU, 0..1) of a stage-1/3 pair.
    low_match_iou:   minimum similarity of a stage-2 (low-score) pair; stricter,
                     because a weak detection is more likely a false positive.
    mask_weight:     weight of mask IoU against box IoU in the similarity (0..1).
                     Masks separate same-class objects whose boxes overlap, but a
                     thin object that rotates changes its mask faster than its box:
                     on the synthetic sequences 0.5 cost 2-4 more ID switches than
                     0 or 0.25, which measured the same.
    min_hits:        consecutive matched frames before a track gets an id (>= 1).
    max_age:         frames a confirmed track survives without a match (>= 0).
    class_aware:     only match a track to detections of its class.
    matcher:         "auto" (Hungarian if SciPy is installed, else greedy),
                     "hungarian" or "greedy".
    max_dt:          longest prediction step in seconds; a longer gap (a stall)
                     predicts no further, so a stale velocity cannot throw boxes away.
    default_dt:      step in seconds when no stamps are given.
    """

    high_score: float = 0.5
    low_score: float = 0.1
    new_track_score: float = 0.6
    match_iou: float = 0.2
    low_match_iou: float = 0.4
    mask_weight: float = 0.25
    min_hits: int = 2
    max_age: int = 30
    class_aware: bool = True
    matcher: str = "auto"
    max_dt: float = 1.0
    default_dt: float = 1.0 / 15.0

    def __post_init__(self) -> None:
        for name in ("high_score", "low_score", "new_track_score", "match_iou", "low_match_iou", "mask_weight"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        if self.low_score > self.high_score:
            raise ValueError(f"low_score ({self.low_score}) must not exceed high_score ({self.high_score})")
        if self.min_hits < 1:
            raise ValueError(f"min_hits must be >= 1, got {self.min_hits}")
        if self.max_age < 0:
            raise ValueError(f"max_age must be >= 0, got {self.max_age}")
        if self.matcher not in MATCHERS:
            raise ValueError(f"matcher must be one of {', '.join(MATCHERS)}, got {self.matcher!r}")
        if self.matcher == "hungarian" and _linear_sum_assignment is None:
            raise ValueError("matcher 'hungarian' needs SciPy, which is not installed; use 'greedy' or 'auto'")
        if not (self.max_dt > 0 and self.default_dt > 0):
            raise ValueError(f"max_dt and default_dt must be positive, got {self.max_dt}, {self.default_dt}")


# ----------------------------------------------------------------------------
# Box representation and Kalman filter


def xyxy_to_cxcywh(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) x1, y1, x2, y2 -> (N, 4) float64 centre x, centre y, width, height (pixels)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)


def cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) centre x, centre y, width, height -> (N, 4) float64 x1, y1, x2, y2 (pixels)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    half = b[:, 2:] / 2
    return np.concatenate([b[:, :2] - half, b[:, :2] + half], axis=1)


class BoxKalman:
    """Constant-velocity Kalman filter on (cx, cy, w, h) and their rates.

    State (8,): cx, cy, w, h in pixels, then d/dt of each in pixels per second.
    Measurement (4,): a detected box's cx, cy, w, h. Noise scales with the box height
    (see the module constants), so the gate is in relative, not absolute, pixels.
    """

    _H = np.hstack([np.eye(4), np.zeros((4, 4))])

    def __init__(self, box_cxcywh: np.ndarray):
        z = np.asarray(box_cxcywh, dtype=np.float64).reshape(4)
        self.x = np.concatenate([z, np.zeros(4)])
        s = max(z[3], _MIN_SIZE)
        std = np.array([2 * _STD_MEAS * s] * 4 + [_STD_VEL_INIT * s] * 4)
        self.P = np.diag(std ** 2)

    def predict(self, dt: float) -> None:
        if dt <= 0:
            return
        f = np.eye(8)
        f[:4, 4:] = dt * np.eye(4)
        s = max(self.x[3], _MIN_SIZE)
        q = np.diag([(_STD_POS_RATE * s) ** 2 * dt] * 4 + [(_STD_VEL_RATE * s) ** 2 * dt] * 4)
        self.x = f @ self.x
        self.x[2:4] = np.maximum(self.x[2:4], _MIN_SIZE)  # a shrinking box stays a box
        self.P = f @ self.P @ f.T + q

    def update(self, box_cxcywh: np.ndarray) -> None:
        z = np.asarray(box_cxcywh, dtype=np.float64).reshape(4)
        s = max(z[3], _MIN_SIZE)
        r = np.diag([(_STD_MEAS * s) ** 2] * 4)
        h = self._H
        innov = z - h @ self.x
        s_mat = h @ self.P @ h.T + r
        gain = np.linalg.solve(s_mat, h @ self.P).T
        self.x = self.x + gain @ innov
        self.P = (np.eye(8) - gain @ h) @ self.P

    @property
    def box_cxcywh(self) -> np.ndarray:
        return self.x[:4].copy()


# ----------------------------------------------------------------------------
# Tracks and matching

_TENTATIVE, _CONFIRMED = 0, 1


@dataclass
class _Track:
    kf: BoxKalman
    class_id: int
    mask: CroppedMask | None
    mask_box: np.ndarray  # (4,) filtered cxcywh of the frame the mask was taken in
    score: float
    track_id: int = 0  # 0 until confirmed
    state: int = _TENTATIVE
    hits: int = 1
    age: int = 1
    misses: int = 0  # consecutive frames without a match

    def predicted_mask(self) -> CroppedMask | None:
        """The last mask shifted by the predicted motion of the box centre (pixels)."""
        if self.mask is None:
            return None
        shift = np.rint(self.kf.x[:2] - self.mask_box[:2]).astype(np.int64)
        return CroppedMask(int(self.mask.x + shift[0]), int(self.mask.y + shift[1]), self.mask.data)


def match_pairs(similarity: np.ndarray, threshold: float, matcher: str = "auto") -> list[tuple[int, int]]:
    """Row/column pairs maximising total similarity, each pair at least ``threshold``.

    Pairs with similarity below ``threshold`` (or -inf, forbidden) are never returned.
    "hungarian" solves the assignment optimally; "greedy" takes the best remaining
    pair repeatedly; "auto" is Hungarian when SciPy is installed.
    """
    sim = np.asarray(similarity, dtype=np.float64)
    if sim.size == 0:
        return []
    allowed = np.isfinite(sim) & (sim >= threshold)
    if not allowed.any():
        return []
    use_hungarian = matcher == "hungarian" or (matcher == "auto" and _linear_sum_assignment is not None)
    if use_hungarian:
        if _linear_sum_assignment is None:
            raise RuntimeError("Hungarian matching needs SciPy")
        cost = np.where(allowed, -sim, 1e6)  # forbidden pairs cost more than any real assignment gains
        rows, cols = _linear_sum_assignment(cost)
        return [(int(r), int(c)) for r, c in zip(rows, cols) if allowed[r, c]]
    pairs = []
    r_idx, c_idx = np.nonzero(allowed)
    order = np.argsort(-sim[r_idx, c_idx], kind="stable")
    used_r, used_c = set(), set()
    for o in order:
        r, c = int(r_idx[o]), int(c_idx[o])
        if r in used_r or c in used_c:
            continue
        used_r.add(r)
        used_c.add(c)
        pairs.append((r, c))
    return pairs


class Tracker:
    """Assigns stable ids to the instances of successive frames of one camera.

    ``update(detections, stamp_ns)`` once per frame, in stamp order; it returns the
    same detections with ``track_ids`` set (0 = not tracked: a tentative track or a
    weak detection that extended nothing). ``reset()`` forgets every track (the node
    calls it on a time jump backwards or on reconfigure); ids keep counting up.
    """

    def __init__(self, params: TrackerParams | None = None):
        self.params = params or TrackerParams()
        self._tracks: list[_Track] = []
        self._next_id = 1
        self._last_stamp: int | None = None
        self.frame_count = 0

    @property
    def num_tracks(self) -> int:
        """Confirmed tracks alive (seen within ``max_age`` frames)."""
        return sum(t.state == _CONFIRMED for t in self._tracks)

    def reset(self) -> None:
        self._tracks = []
        self._last_stamp = None
        self.frame_count = 0

    def _dt(self, stamp_ns: int | None) -> float:
        p = self.params
        if stamp_ns is None:
            return p.default_dt
        stamp_ns = int(stamp_ns)
        if self._last_stamp is not None and stamp_ns < self._last_stamp:
            # Time went backwards (a bag looped, sim time restarted): the motion model
            # means nothing across the jump, so start over rather than mis-associate.
            self.reset()
        dt = 0.0 if self._last_stamp is None else (stamp_ns - self._last_stamp) * 1e-9
        self._last_stamp = stamp_ns
        return min(dt, p.max_dt)

    def _similarity(self, tracks: list[_Track], det_idx: np.ndarray, dets: Detections,
                    det_boxes: np.ndarray, det_areas: list[int]) -> np.ndarray:
        """(T, D) similarity; -inf where the classes differ (``class_aware``)."""
        p = self.params
        if not tracks or det_idx.size == 0:
            return np.zeros((len(tracks), det_idx.size))
        pred = cxcywh_to_xyxy(np.stack([t.kf.box_cxcywh for t in tracks]))
        biou = box_iou(pred, det_boxes[det_idx]).astype(np.float64)
        sim = biou.copy()
        if p.mask_weight > 0 and len(dets.masks) == len(dets):
            miou = np.zeros_like(biou)
            for ti, t in enumerate(tracks):
                pm = t.predicted_mask()
                if pm is None:
                    miou[ti] = biou[ti]
                    continue
                area_t = int(np.count_nonzero(pm.data))
                for dj, d in enumerate(det_idx):
                    if biou[ti, dj] > 0:
                        miou[ti, dj] = mask_iou(pm, dets.masks[d], area_t, det_areas[d])
            sim = (1 - p.mask_weight) * biou + p.mask_weight * miou
        if p.class_aware:
            same = np.array([t.class_id for t in tracks])[:, None] == dets.class_ids[det_idx][None, :]
            sim = np.where(same, sim, -np.inf)
        return sim

    def _associate(self, tracks: list[_Track], det_idx: np.ndarray, threshold: float, dets: Detections,
                   det_boxes: np.ndarray, det_areas: list[int]) -> list[tuple[_Track, int]]:
        sim = self._similarity(tracks, det_idx, dets, det_boxes, det_areas)
        return [(tracks[r], int(det_idx[c])) for r, c in match_pairs(sim, threshold, self.params.matcher)]

    def update(self, detections: Detections, stamp_ns: int | None = None) -> Detections:
        """Associate one frame's detections with the tracks; returns them with ``track_ids``.

        detections: boxes (x1, y1, x2, y2 source pixels), scores, class ids, masks.
        stamp_ns:   the image stamp in nanoseconds (None: ``default_dt`` per frame).
        The input is not modified; the result shares its arrays except ``track_ids``.
        """
        p = self.params
        dt = self._dt(stamp_ns)
        self.frame_count += 1
        n = len(detections)
        det_boxes = np.asarray(detections.boxes, dtype=np.float32).reshape(-1, 4)
        scores = np.asarray(detections.scores, dtype=np.float32).reshape(-1)
        has_masks = len(detections.masks) == n
        det_areas = [int(np.count_nonzero(m.data)) for m in detections.masks] if has_masks else [0] * n

        for t in self._tracks:
            t.kf.predict(dt)

        high = np.flatnonzero(scores >= p.high_score)
        low = np.flatnonzero((scores >= p.low_score) & (scores < p.high_score))
        confirmed = [t for t in self._tracks if t.state == _CONFIRMED]
        tentative = [t for t in self._tracks if t.state == _TENTATIVE]
        assigned: dict[int, _Track] = {}

        # Stage 1: strong detections to every confirmed track (recently lost included).
        for t, d in self._associate(confirmed, high, p.match_iou, detections, det_boxes, det_areas):
            assigned[d] = t
        # Stage 2: weak detections extend confirmed tracks seen last frame.
        taken = {id(t) for t in assigned.values()}
        recent = [t for t in confirmed if id(t) not in taken and t.misses == 0]
        for t, d in self._associate(recent, low, p.low_match_iou, detections, det_boxes, det_areas):
            assigned[d] = t
        # Stage 3: remaining strong detections to tentative tracks.
        rest = np.array([d for d in high if d not in assigned], dtype=np.int64)
        for t, d in self._associate(tentative, rest, p.match_iou, detections, det_boxes, det_areas):
            assigned[d] = t

        cxcywh = xyxy_to_cxcywh(det_boxes)
        matched = set()
        for d, t in assigned.items():
            matched.add(id(t))
            t.kf.update(cxcywh[d])
            # The mask stays where it was seen and is later moved by the predicted
            # motion: the offset of the predicted centre from the filtered centre of
            # this frame (not from the detected box, whose jitter would move it too).
            t.mask = detections.masks[d] if has_masks else None
            t.mask_box = t.kf.box_cxcywh
            t.class_id = int(detections.class_ids[d])
            t.score = float(scores[d])
            t.hits += 1
            t.age += 1
            t.misses = 0
            if t.state == _TENTATIVE and t.hits >= p.min_hits:
                self._confirm(t)

        survivors = []
        for t in self._tracks:
            if id(t) in matched:
                survivors.append(t)
                continue
            t.age += 1
            t.misses += 1
            if t.state == _CONFIRMED and t.misses <= p.max_age:
                survivors.append(t)
            # A tentative track that misses a frame was most likely a false positive.
        self._tracks = survivors

        # Births. On the first frame (after construction or ``reset``) there is no
        # history to confirm anything against, so, as ByteTrack does, new tracks are
        # confirmed at once instead of leaving the whole first frame untracked.
        first_frame = self.frame_count == 1
        for d in high:
            if d in assigned or scores[d] < p.new_track_score:
                continue
            box = cxcywh[d]
            t = _Track(BoxKalman(box), int(detections.class_ids[d]), detections.masks[d] if has_masks else None,
                       box.copy(), float(scores[d]))
            if p.min_hits <= 1 or first_frame:
                self._confirm(t)
            self._tracks.append(t)
            assigned[d] = t

        track_ids = np.zeros(n, np.uint32)
        for d, t in assigned.items():
            track_ids[d] = t.track_id if t.state == _CONFIRMED else 0
        return replace(detections, track_ids=track_ids)

    def _confirm(self, t: _Track) -> None:
        t.state = _CONFIRMED
        t.track_id = self._next_id
        self._next_id += 1
