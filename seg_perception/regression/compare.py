"""Compare a run with a golden run: per frame, instances matched by mask IoU.

Matching is greedy by mask IoU (the highest-IoU pair first, then the next among
the instances left, pairs below ``Tolerances.match_iou`` never match). Greedy
rather than Hungarian because in a regression the pairs are nearly identical, where
both give the same answer, and greedy gives it without scipy and identically on
every machine. A matched pair is *changed* when its class differs, its mask IoU is
below ``mask_iou``, or its box, score or keypoints drift beyond the tolerances; an
unmatched golden instance is *lost*, an unmatched run instance *added*.

Frames are aligned by their index in the recording; a differing header stamp at the
same index means the recordings differ, and is reported as a frame problem.
No ROS, no torch: NumPy and ``core.masks`` only.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from seg_perception.core.masks import mask_iou
from seg_perception.core.postprocess import box_iou
from seg_perception.core.types import Detections
from seg_perception.regression.records import FrameResult, format_stamp

ADDED, LOST, CHANGED = "added", "lost", "changed"


@dataclass(frozen=True)
class Tolerances:
    """What still counts as "the same output".

    match_iou:   minimum mask IoU for a golden and a run instance to be paired.
    mask_iou:    a paired instance whose mask IoU is below this has changed.
    box_px:      largest allowed move of any box edge, source pixels.
    score:       largest allowed absolute score change.
    keypoint_px: largest allowed move of a keypoint visible in both, source pixels.
    keypoint_visible: a keypoint score at or above this counts as visible.
    allow_dropped: frames the node published nothing for (a timed replay that
                 outran the model) are reported but are not a regression.
    """

    match_iou: float = 0.5
    mask_iou: float = 0.9
    box_px: float = 2.0
    score: float = 0.02
    keypoint_px: float = 3.0
    keypoint_visible: float = 0.3
    allow_dropped: bool = False

    def __post_init__(self) -> None:
        for name in ("match_iou", "mask_iou", "keypoint_visible"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"tolerance {name}={value} must lie in [0, 1]")
        for name in ("box_px", "score", "keypoint_px"):
            if getattr(self, name) < 0:
                raise ValueError(f"tolerance {name}={getattr(self, name)} must not be negative")


@dataclass
class PairDrift:
    """How far one matched instance moved between the golden run and this run."""

    golden_index: int
    run_index: int
    iou: float
    box_px: float
    score: float
    keypoint_px: float  # NaN when no keypoint is visible in both
    class_changed: bool


@dataclass
class InstanceDiff:
    """One added, lost or changed instance, with why (for changed) in words."""

    kind: str
    bag: str
    frame: int
    stamp_ns: int
    golden_index: int | None
    run_index: int | None
    class_name: str
    score: float
    box: list[float]
    iou: float | None = None
    reasons: list[str] = field(default_factory=list)
    note: str = ""  # why the instance is there, when that is not obvious (see ``explain_low_scores``)

    def describe(self) -> str:
        """One line. An instance is named by its position in the frame's message (0-based), which is not
        its track id (a regression does not compare track ids)."""
        where = f"{self.bag} frame {self.frame} (stamp {format_stamp(self.stamp_ns)})"
        box = "[" + ", ".join(f"{v:.1f}" for v in self.box) + "]"
        note = f" ({self.note})" if self.note else ""
        if self.kind == LOST:
            return (f"{where}: lost golden instance at position {self.golden_index}: {self.class_name} "
                    f"score {self.score:.3f} box {box}{note}")
        if self.kind == ADDED:
            return (f"{where}: added instance at position {self.run_index}: {self.class_name} "
                    f"score {self.score:.3f} box {box}{note}")
        return (f"{where}: changed instance at position {self.golden_index} (golden) -> {self.run_index} (run): "
                f"{self.class_name}: {'; '.join(self.reasons)}{note}")


@dataclass
class FrameComparison:
    bag: str
    index: int
    stamp_ns: int
    golden_count: int
    run_count: int
    pairs: list[PairDrift] = field(default_factory=list)
    diffs: list[InstanceDiff] = field(default_factory=list)
    problem: str | None = None  # frame-level: missing, extra, dropped, stamp or size mismatch
    dropped: bool = False


def match_instances(golden: Detections, run: Detections, min_iou: float) -> list[tuple[int, int, float]]:
    """Greedy one-to-one pairs ``(golden_index, run_index, mask_iou)``, best overlap first.

    The overlap is the masks' IoU; for two instances whose masks are both empty (a
    detection whose mask has no pixel) it is their boxes' IoU, and their mask IoU counts
    as 1: the masks are equal, and the box says whether it is the same detection (with
    mask IoU alone such an instance never matched itself, and an unchanged run was
    reported as one instance lost and one added).
    Ties go to the pair of the same class, then to the lower indices, so the result
    does not depend on anything but the two inputs.
    """
    empty_g = [not np.any(m.data) for m in golden.masks]
    empty_r = [not np.any(m.data) for m in run.masks]
    boxes = (box_iou(golden.boxes, run.boxes) if any(empty_g) and any(empty_r)
             else np.zeros((len(golden), len(run))))
    candidates = []
    for g in range(len(golden)):
        for r in range(len(run)):
            both_empty = empty_g[g] and empty_r[r]
            overlap = float(boxes[g, r]) if both_empty else mask_iou(golden.masks[g], run.masks[r])
            if overlap >= min_iou and overlap > 0.0:
                same = int(golden.class_ids[g]) == int(run.class_ids[r])
                candidates.append((-overlap, not same, g, r, 1.0 if both_empty else overlap))
    candidates.sort()
    used_g: set[int] = set()
    used_r: set[int] = set()
    pairs = []
    for _, _, g, r, iou in candidates:
        if g in used_g or r in used_r:
            continue
        used_g.add(g)
        used_r.add(r)
        pairs.append((g, r, iou))
    return pairs


def _keypoint_drift(golden: Detections, g: int, run: Detections, r: int, visible: float) -> float:
    kg, kr = golden.keypoints, run.keypoints
    if kg.ndim != 3 or kr.ndim != 3 or kg.shape[1] == 0 or kg.shape[1] != kr.shape[1]:
        return math.nan
    a, b = kg[g], kr[r]
    both = (a[:, 2] >= visible) & (b[:, 2] >= visible)
    if not both.any():
        return math.nan
    return float(np.max(np.hypot(a[both, 0] - b[both, 0], a[both, 1] - b[both, 1])))


def _visibility_flips(golden: Detections, g: int, run: Detections, r: int, visible: float) -> int:
    kg, kr = golden.keypoints, run.keypoints
    if kg.ndim != 3 or kr.ndim != 3 or kg.shape[1] != kr.shape[1] or kg.shape[1] == 0:
        return abs(kg.shape[1] - kr.shape[1]) if kg.ndim == 3 and kr.ndim == 3 else 0
    return int(np.count_nonzero((kg[g][:, 2] >= visible) != (kr[r][:, 2] >= visible)))


def _name(names: Sequence[str], index: int, class_id: int) -> str:
    return names[index] if index < len(names) else str(class_id)


def compare_frame(golden: FrameResult, run: FrameResult, tol: Tolerances) -> FrameComparison:
    """Match the instances of one frame and list what was added, lost or changed."""
    out = FrameComparison(golden.bag, golden.index, golden.stamp_ns,
                          0 if golden.detections is None else len(golden.detections),
                          0 if run.detections is None else len(run.detections))
    if golden.stamp_ns != run.stamp_ns:
        out.problem = (f"header stamp differs (golden {format_stamp(golden.stamp_ns)}, "
                       f"run {format_stamp(run.stamp_ns)}): not the recording of the golden run")
        return out
    if run.detections is None:  # before the size check: a dropped compressed frame has no known size
        out.dropped = True
        out.problem = "no output: the node dropped this frame"
        return out
    if (golden.width, golden.height) != (run.width, run.height):
        out.problem = f"image size differs (golden {golden.width}x{golden.height}, run {run.width}x{run.height})"
        return out
    if golden.detections is None:
        out.problem = "the golden run has no output for this frame (dropped when it was recorded); not compared"
        out.dropped = True
        return out
    gd, rd = golden.detections, run.detections
    pairs = match_instances(gd, rd, tol.match_iou)
    matched_g = {g for g, _, _ in pairs}
    matched_r = {r for _, r, _ in pairs}
    for g, r, iou in pairs:
        gc, rc = int(gd.class_ids[g]), int(rd.class_ids[r])
        gname, rname = _name(golden.class_names, g, gc), _name(run.class_names, r, rc)
        drift = PairDrift(
            golden_index=g, run_index=r, iou=iou,
            box_px=float(np.max(np.abs(gd.boxes[g].astype(np.float64) - rd.boxes[r].astype(np.float64)))),
            score=float(abs(float(gd.scores[g]) - float(rd.scores[r]))),
            keypoint_px=_keypoint_drift(gd, g, rd, r, tol.keypoint_visible),
            class_changed=gc != rc or gname != rname,  # the class is its name: a renamed class is a change
        )
        out.pairs.append(drift)
        reasons = []
        if drift.class_changed:
            reasons.append(f"class {gname} -> {rname}" if gname != rname else f"class {gname}: id {gc} -> {rc}")
        if iou < tol.mask_iou:
            reasons.append(f"mask IoU {iou:.3f} < {tol.mask_iou}")
        if drift.box_px > tol.box_px:
            reasons.append(f"box moved {drift.box_px:.2f} px > {tol.box_px} "
                           f"({_box_text(gd.boxes[g])} -> {_box_text(rd.boxes[r])})")
        if drift.score > tol.score:
            reasons.append(f"score {float(gd.scores[g]):.3f} -> {float(rd.scores[r]):.3f} "
                           f"(drift {drift.score:.3f} > {tol.score})")
        if not math.isnan(drift.keypoint_px) and drift.keypoint_px > tol.keypoint_px:
            reasons.append(f"a keypoint moved {drift.keypoint_px:.2f} px > {tol.keypoint_px}")
        flips = _visibility_flips(gd, g, rd, r, tol.keypoint_visible)
        if flips:
            reasons.append(f"{flips} keypoint(s) changed visibility (threshold {tol.keypoint_visible})")
        if reasons:
            out.diffs.append(InstanceDiff(CHANGED, golden.bag, golden.index, golden.stamp_ns, g, r, gname,
                                          float(rd.scores[r]), [float(v) for v in rd.boxes[r]], iou, reasons))
    for g in range(len(gd)):
        if g not in matched_g:
            out.diffs.append(InstanceDiff(LOST, golden.bag, golden.index, golden.stamp_ns, g, None,
                                          _name(golden.class_names, g, int(gd.class_ids[g])), float(gd.scores[g]),
                                          [float(v) for v in gd.boxes[g]]))
    for r in range(len(rd)):
        if r not in matched_r:
            out.diffs.append(InstanceDiff(ADDED, golden.bag, golden.index, golden.stamp_ns, None, r,
                                          _name(run.class_names, r, int(rd.class_ids[r])), float(rd.scores[r]),
                                          [float(v) for v in rd.boxes[r]]))
    return out


def _box_text(box: np.ndarray) -> str:
    return "[" + ", ".join(f"{float(v):.1f}" for v in box) + "]"


def _stats(values: Iterable[float]) -> dict[str, float] | None:
    arr = np.array([v for v in values if not math.isnan(v)], np.float64)
    if arr.size == 0:
        return None
    return {"mean": float(arr.mean()), "p95": float(np.percentile(arr, 95)), "max": float(arr.max()),
            "count": int(arr.size)}


@dataclass
class BagComparison:
    """All frames of one recording, and its counts."""

    bag: str
    golden_frames: int
    run_frames: int
    frames: list[FrameComparison] = field(default_factory=list)

    def count(self, kind: str) -> int:
        return sum(1 for f in self.frames for d in f.diffs if d.kind == kind)

    def frame_problems(self, tol: Tolerances) -> list[FrameComparison]:
        return [f for f in self.frames if f.problem and not (f.dropped and tol.allow_dropped)]


@dataclass
class Comparison:
    """A run against a golden run: per-bag results, drift statistics and the verdict."""

    tolerances: Tolerances
    bags: list[BagComparison] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # run-level regressions, e.g. a changed class list

    def frames(self) -> list[FrameComparison]:
        return [f for b in self.bags for f in b.frames]

    def diffs(self) -> list[InstanceDiff]:
        return [d for f in self.frames() for d in f.diffs]

    def frame_problems(self) -> list[FrameComparison]:
        return [f for b in self.bags for f in b.frame_problems(self.tolerances)]

    @property
    def passed(self) -> bool:
        return not self.diffs() and not self.frame_problems() and not self.problems

    def drift(self) -> dict[str, dict[str, float] | None]:
        pairs = [p for f in self.frames() for p in f.pairs]
        return {
            "box_px": _stats(p.box_px for p in pairs),
            "score": _stats(p.score for p in pairs),
            "keypoint_px": _stats(p.keypoint_px for p in pairs),
            "mask_iou": None if not pairs else {
                "mean": float(np.mean([p.iou for p in pairs])), "min": float(min(p.iou for p in pairs)),
                "count": len(pairs)},
        }

    def totals(self) -> dict[str, int]:
        frames = self.frames()
        return {
            "frames_golden": sum(b.golden_frames for b in self.bags),
            "frames_run": sum(b.run_frames for b in self.bags),
            "frames_compared": sum(1 for f in frames if not f.problem),
            "frames_with_differences": sum(1 for f in frames if f.diffs),
            "frames_dropped": sum(1 for f in frames if f.dropped),
            "frame_problems": len(self.frame_problems()),
            "instances_golden": sum(f.golden_count for f in frames),
            "instances_run": sum(f.run_count for f in frames),
            "matched": sum(len(f.pairs) for f in frames),
            ADDED: sum(b.count(ADDED) for b in self.bags),
            LOST: sum(b.count(LOST) for b in self.bags),
            CHANGED: sum(b.count(CHANGED) for b in self.bags),
        }

    def to_dict(self) -> dict[str, Any]:
        """The JSON report's comparison part."""
        bags = []
        for b in self.bags:
            pairs = [p for f in b.frames for p in f.pairs]
            bags.append({
                "bag": b.bag, "frames_golden": b.golden_frames, "frames_run": b.run_frames,
                "instances_golden": sum(f.golden_count for f in b.frames),
                "instances_run": sum(f.run_count for f in b.frames),
                "matched": len(pairs), ADDED: b.count(ADDED), LOST: b.count(LOST), CHANGED: b.count(CHANGED),
                "frame_problems": [{"frame": f.index, "stamp_ns": f.stamp_ns, "problem": f.problem}
                                   for f in b.frames if f.problem],
                "max_box_px": max((p.box_px for p in pairs), default=None),
                "max_score": max((p.score for p in pairs), default=None),
                "max_keypoint_px": max((p.keypoint_px for p in pairs if not math.isnan(p.keypoint_px)), default=None),
                "min_mask_iou": min((p.iou for p in pairs), default=None),
            })
        return {
            "passed": self.passed,
            "tolerances": asdict(self.tolerances),
            "totals": self.totals(),
            "drift": self.drift(),
            "bags": bags,
            "differences": [{**asdict(d), "text": d.describe()} for d in self.diffs()],
            "notes": list(self.notes),
            "problems": list(self.problems),
        }


def compare_bag(bag: str, golden: Sequence[FrameResult], run: Sequence[FrameResult], tol: Tolerances) -> BagComparison:
    """Compare the frames of one recording, aligned by index."""
    out = BagComparison(bag, len(golden), len(run))
    for i in range(max(len(golden), len(run))):
        if i >= len(run):
            g = golden[i]
            out.frames.append(FrameComparison(bag, g.index, g.stamp_ns, 0 if g.dropped else len(g.detections), 0,
                                              problem="missing from this run (the recording has fewer frames)"))
        elif i >= len(golden):
            r = run[i]
            out.frames.append(FrameComparison(bag, r.index, r.stamp_ns, 0, 0 if r.dropped else len(r.detections),
                                              problem="not in the golden run (the recording has more frames)"))
        else:
            out.frames.append(compare_frame(golden[i], run[i], tol))
    return out


def compare_runs(golden: Mapping[str, Sequence[FrameResult]], run: Mapping[str, Sequence[FrameResult]],
                 tol: Tolerances | None = None) -> Comparison:
    """Compare every recording of ``run`` with the same recording (by key) in ``golden``.

    A recording the golden run lacks is a frame problem (every frame is "not in the
    golden run"); golden recordings this run did not replay are only noted.
    """
    tol = tol or Tolerances()
    result = Comparison(tol)
    for bag, frames in run.items():
        result.bags.append(compare_bag(bag, golden.get(bag, []), frames, tol))
        if bag not in golden:
            result.notes.append(f"the golden run has no recording '{bag}' (it has: {', '.join(golden) or 'none'})")
    for bag in golden:
        if bag not in run:
            result.notes.append(f"golden recording '{bag}' was not replayed in this run")
    return result


def class_list_change(golden_classes: Sequence[str] | None, run_classes: Sequence[str] | None) -> str | None:
    """A sentence naming how the model's class list changed, or None when it did not (or one is unknown).

    The class is its name: downstream nodes select instances by name, and a model whose
    class list was renamed or reordered publishes other names for the same ids, even
    when every mask is unchanged (a regression that instance matching alone cannot see).
    """
    if not golden_classes or not run_classes or list(golden_classes) == list(run_classes):
        return None
    golden_classes, run_classes = list(golden_classes), list(run_classes)
    changed = [f"id {i}: {g} -> {r}" for i, (g, r) in enumerate(zip(golden_classes, run_classes)) if g != r]
    parts = changed[:5] + (["..."] if len(changed) > 5 else [])
    if len(golden_classes) != len(run_classes):
        parts.append(f"{len(golden_classes)} classes -> {len(run_classes)}")
    return f"the model's class list changed ({'; '.join(parts)}): golden {golden_classes}, this run {run_classes}"


def explain_low_scores(comparison: Comparison, score_threshold: float, tracking_low_score: float) -> None:
    """Note on each difference whose score is below ``score_threshold`` why it was published at all.

    With tracking on, a detection that continues a track is published down to
    ``tracking_low_score``; a reader who set ``score_threshold`` would otherwise take
    such an instance for a bug.
    """
    for diff in comparison.diffs():  # a lost instance's score is the golden run's: nothing to explain
        if diff.kind != LOST and tracking_low_score <= diff.score < score_threshold:
            diff.note = (f"score below score_threshold {score_threshold:g}: published because it continues a "
                         f"track (tracking on, kept down to tracking_low_score {tracking_low_score:g})")
