"""Comparison of a run with a golden run (ROS-free): matching, drift, verdict, records."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from seg_perception.core.types import CroppedMask, Detections
from seg_perception.regression.compare import (
    ADDED, CHANGED, LOST, Tolerances, compare_frame, compare_runs, match_instances,
)
from seg_perception.regression.records import FrameResult, frame_from_json, frame_to_json
from seg_perception.regression.report import summary_lines

NAMES = ["person", "bottle", "cup"]


def box_mask(x1: int, y1: int, x2: int, y2: int) -> CroppedMask:
    return CroppedMask(x1, y1, np.ones((y2 - y1, x2 - x1), np.uint8))


def dets(*instances: tuple) -> Detections:
    """Instances as (class_id, score, (x1, y1, x2, y2)[, keypoints (K, 3)]); masks fill the boxes."""
    n = len(instances)
    k = max((len(i[3]) for i in instances if len(i) > 3), default=0)
    kpts = np.zeros((n, k, 3), np.float32)
    for j, inst in enumerate(instances):
        if len(inst) > 3:
            kpts[j] = inst[3]
    return Detections(
        boxes=np.array([i[2] for i in instances], np.float32).reshape(n, 4),
        scores=np.array([i[1] for i in instances], np.float32),
        class_ids=np.array([i[0] for i in instances], np.int32),
        masks=[box_mask(*map(int, i[2])) for i in instances],
        keypoints=kpts,
    )


def frame(d: Detections | None, index: int = 0, stamp: int = 1_000_000_007, bag: str = "rec") -> FrameResult:
    names = [] if d is None else [NAMES[int(c)] for c in d.class_ids]
    return FrameResult(bag, index, stamp, stamp + 5, "cam", 640, 480, d, names)


PERSON = (0, 0.8, (10, 10, 110, 210))
BOTTLE = (1, 0.9, (300, 100, 340, 200))


def test_identical_frames_match_with_zero_drift():
    result = compare_frame(frame(dets(PERSON, BOTTLE)), frame(dets(PERSON, BOTTLE)), Tolerances())
    assert result.diffs == [] and result.problem is None
    assert [(p.golden_index, p.run_index, p.iou, p.box_px, p.score) for p in result.pairs] == [
        (0, 0, 1.0, 0.0, 0.0), (1, 1, 1.0, 0.0, 0.0)]


def test_instances_pair_by_mask_iou_whatever_their_order():
    pairs = match_instances(dets(PERSON, BOTTLE), dets(BOTTLE, PERSON), 0.5)
    assert sorted((g, r) for g, r, _ in pairs) == [(0, 1), (1, 0)]


def test_greedy_matching_takes_the_best_overlap_first():
    golden = dets((0, 0.9, (0, 0, 100, 100)))
    run = dets((0, 0.9, (10, 0, 110, 100)), (0, 0.9, (0, 0, 100, 98)))
    (g, r, iou), = match_instances(golden, run, 0.5)
    assert (g, r) == (0, 1) and iou == pytest.approx(0.98)


def _emptied(d: Detections, index: int) -> Detections:
    """``d`` with instance ``index``'s mask cleared (a detection whose mask has no pixel)."""
    m = d.masks[index]
    d.masks[index] = CroppedMask(m.x, m.y, np.zeros_like(m.data))
    return d


def test_an_instance_with_an_empty_mask_matches_itself_by_its_box():
    """Seen in a real run: two byte-identical runs were reported as one instance lost and one
    added, because an empty mask has mask IoU 0 with everything, itself included."""
    result = compare_frame(frame(_emptied(dets(PERSON, BOTTLE), 1)), frame(_emptied(dets(PERSON, BOTTLE), 1)),
                           Tolerances())
    assert result.diffs == []
    assert [(p.golden_index, p.run_index, p.iou) for p in result.pairs] == [(0, 0, 1.0), (1, 1, 1.0)]
    # Elsewhere (box IoU below match_iou) it is another detection; against a real mask, no match.
    moved = (1, 0.9, (500, 300, 540, 400))
    result = compare_frame(frame(_emptied(dets(PERSON, BOTTLE), 1)), frame(_emptied(dets(PERSON, moved), 1)),
                           Tolerances())
    assert sorted(d.kind for d in result.diffs) == [ADDED, LOST]
    result = compare_frame(frame(_emptied(dets(PERSON, BOTTLE), 1)), frame(dets(PERSON, BOTTLE)), Tolerances())
    assert sorted(d.kind for d in result.diffs) == [ADDED, LOST]


def test_a_missing_instance_is_lost_and_an_extra_one_added_naming_frame_and_instance():
    result = compare_frame(frame(dets(PERSON, BOTTLE), index=3), frame(dets(BOTTLE, (2, 0.5, (500, 300, 600, 400))), index=3),
                           Tolerances())
    kinds = sorted((d.kind, d.class_name) for d in result.diffs)
    assert kinds == [(ADDED, "cup"), (LOST, "person")]
    lost = next(d for d in result.diffs if d.kind == LOST)
    assert lost.describe() == ("rec frame 3 (stamp 1.000000007): lost golden instance at position 0: person score 0.800 "
                               "box [10.0, 10.0, 110.0, 210.0]")


def test_a_class_change_is_a_change():
    result = compare_frame(frame(dets(PERSON)), frame(dets((2, 0.8, PERSON[2]))), Tolerances())
    (d,) = result.diffs
    assert d.kind == CHANGED and d.reasons == ["class person -> cup"]


@pytest.mark.parametrize("run_inst, changed, reason", [
    ((0, 0.81, (10, 10, 110, 210)), False, None),                 # score drift 0.01 <= 0.02
    ((0, 0.75, (10, 10, 110, 210)), True, "score 0.800 -> 0.750"),
    ((0, 0.8, (11, 10, 111, 210)), False, None),                  # box moved 1 px <= 2 px
    ((0, 0.8, (14, 10, 114, 210)), True, "box moved 4.00 px > 2.0"),
    ((0, 0.8, (10, 10, 110, 170)), True, "mask IoU 0.800 < 0.9"),
])
def test_drift_within_tolerance_passes_and_beyond_it_is_a_change(run_inst, changed, reason):
    result = compare_frame(frame(dets(PERSON)), frame(dets(run_inst)), Tolerances())
    assert bool(result.diffs) == changed
    if changed:
        assert reason in result.diffs[0].describe()


def test_keypoint_drift_counts_only_keypoints_visible_in_both():
    kp = np.array([[20, 20, 1.0], [100, 200, 1.0], [60, 60, 0.0]], np.float32)
    moved_hidden = kp.copy()
    moved_hidden[2, :2] += 50  # invisible in both: ignored
    ok = compare_frame(frame(dets((*PERSON, kp))), frame(dets((*PERSON, moved_hidden))), Tolerances())
    assert ok.diffs == [] and ok.pairs[0].keypoint_px == 0.0
    moved = kp.copy()
    moved[0, 0] += 5
    bad = compare_frame(frame(dets((*PERSON, kp))), frame(dets((*PERSON, moved))), Tolerances())
    assert "a keypoint moved 5.00 px > 3.0" in bad.diffs[0].describe()
    flipped = kp.copy()
    flipped[1, 2] = 0.1
    flip = compare_frame(frame(dets((*PERSON, kp))), frame(dets((*PERSON, flipped))), Tolerances())
    assert "1 keypoint(s) changed visibility" in flip.diffs[0].describe()


def test_frames_are_aligned_by_index_and_a_different_stamp_is_a_frame_problem():
    golden = {"rec": [frame(dets(PERSON), 0, 10), frame(dets(PERSON), 1, 20)]}
    run = {"rec": [frame(dets(PERSON), 0, 10), frame(dets(PERSON), 1, 21)]}
    result = compare_runs(golden, run)
    assert not result.passed
    assert "header stamp differs" in result.frame_problems()[0].problem


def test_missing_and_extra_frames_fail_and_dropped_frames_fail_unless_allowed():
    golden = {"rec": [frame(dets(PERSON), 0, 10), frame(dets(PERSON), 1, 20)]}
    assert "missing from this run" in compare_runs(golden, {"rec": golden["rec"][:1]}).frame_problems()[0].problem
    extra = {"rec": [*golden["rec"], frame(dets(PERSON), 2, 30)]}
    assert "not in the golden run" in compare_runs(golden, extra).frame_problems()[0].problem
    dropped = {"rec": [golden["rec"][0], frame(None, 1, 20)]}
    assert not compare_runs(golden, dropped).passed
    allowed = compare_runs(golden, dropped, Tolerances(allow_dropped=True))
    assert allowed.passed and allowed.totals()["frames_dropped"] == 1


def test_a_recording_missing_from_the_golden_run_fails():
    result = compare_runs({}, {"rec": [frame(dets(PERSON))]})
    assert not result.passed and "no recording 'rec'" in result.notes[0]


def test_report_is_json_with_totals_drift_and_readable_differences():
    golden = {"a": [frame(dets(PERSON, BOTTLE), 0, 10)], "b": [frame(dets(PERSON), 0, 10, bag="b")]}
    run = {"a": [frame(dets((0, 0.81, (10, 10, 110, 210)), BOTTLE), 0, 10)], "b": [frame(dets(), 0, 10, bag="b")]}
    result = compare_runs(golden, run)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["passed"] is False
    assert data["totals"]["lost"] == 1 and data["totals"]["matched"] == 2
    assert data["drift"]["score"]["max"] == pytest.approx(0.01, abs=1e-6)
    assert data["differences"][0]["text"].startswith("b frame 0 (stamp 0.000000010): lost golden instance at position 0: person")
    text = "\n".join(summary_lines(result))
    assert "REGRESSION: 0 added, 1 lost, 0 changed" in text and "total" in text


def test_tolerances_are_checked():
    with pytest.raises(ValueError, match="mask_iou"):
        Tolerances(mask_iou=1.5)
    with pytest.raises(ValueError, match="box_px"):
        Tolerances(box_px=-1)


def test_frame_records_read_back_bit_for_bit():
    kp = np.array([[20.25, 20.5, 1.0], [100.1, 200.3, 0.123456789]], np.float32)
    d = dets((*PERSON, kp), (1, 0.123456789, (300.3, 100.7, 340.1, 200.9), kp))
    d.masks[1] = CroppedMask(300, 100, (np.arange(40 * 101).reshape(101, 40) % 7 == 0).astype(np.uint8))
    original = frame(d)
    back = frame_from_json("rec", json.loads(json.dumps(frame_to_json(original))))
    for name in ("boxes", "scores", "class_ids", "keypoints", "track_ids"):
        np.testing.assert_array_equal(getattr(back.detections, name), getattr(d, name))
    for a, b in zip(back.detections.masks, d.masks):
        assert (a.x, a.y) == (b.x, b.y) and np.array_equal(a.data, b.data)
    assert back.class_names == ["person", "bottle"] and back.label() == original.label()
    assert frame_from_json("rec", frame_to_json(frame(None))).dropped


def test_pair_drift_is_nan_without_shared_visible_keypoints():
    result = compare_frame(frame(dets(PERSON)), frame(dets(PERSON)), Tolerances())
    assert math.isnan(result.pairs[0].keypoint_px)
