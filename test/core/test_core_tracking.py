"""Tracking ids: stable across a synthetic sequence, birth/death rules, ByteTrack's
two stages, motion prediction; and the CLEAR-MOT counts on hand-made sequences."""

from __future__ import annotations

import numpy as np
import pytest

from seg_perception.core import tracking
from seg_perception.core.tracking import BoxKalman, Tracker, TrackerParams, match_pairs, xyxy_to_cxcywh
from seg_perception.core.tracking_metrics import MotAccumulator
from seg_perception.core.types import CroppedMask, Detections

STEP_NS = 66_666_667  # 15 fps


def _dets(boxes, scores=None, class_ids=None) -> Detections:
    """Detections with rectangular masks filling their (integer) boxes."""
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    n = len(b)
    masks = [CroppedMask(int(x0), int(y0), np.ones((max(int(y1 - y0), 1), max(int(x1 - x0), 1)), np.uint8))
             for x0, y0, x1, y1 in b]
    return Detections(
        boxes=b,
        scores=np.asarray(scores if scores is not None else [0.9] * n, np.float32),
        class_ids=np.asarray(class_ids if class_ids is not None else [0] * n, np.int32),
        masks=masks,
        keypoints=np.zeros((n, 0, 3), np.float32),
    )


def _run(tracker: Tracker, frames) -> list[list[int]]:
    return [tracker.update(d, i * STEP_NS).track_ids.tolist() for i, d in enumerate(frames)]


# ---------------------------------------------------------------------------- rules


def test_ids_start_at_one_and_the_first_frame_is_confirmed_at_once():
    ids = _run(Tracker(), [_dets([[10, 10, 50, 50], [100, 10, 140, 50]])] * 3)
    assert ids == [[1, 2], [1, 2], [1, 2]]


def test_a_new_object_is_tentative_id_0_until_min_hits():
    t = Tracker(TrackerParams(min_hits=3))
    a, b = [10, 10, 50, 50], [100, 10, 140, 50]
    ids = _run(t, [_dets([a]), _dets([a, b]), _dets([a, b]), _dets([a, b]), _dets([a, b])])
    assert ids == [[1], [1, 0], [1, 0], [1, 2], [1, 2]]


def test_a_one_frame_false_positive_wastes_no_id():
    a, fp, b = [10, 10, 50, 50], [200, 100, 230, 130], [100, 10, 140, 50]
    ids = _run(Tracker(), [_dets([a]), _dets([a, fp]), _dets([a]), _dets([a, b]), _dets([a, b])])
    assert ids[-1] == [1, 2]


def test_a_track_survives_max_age_missed_frames_and_dies_after():
    a = [10, 10, 50, 50]
    for gap, same in ((5, True), (6, False)):
        t = Tracker(TrackerParams(max_age=5))
        frames = [_dets([a])] * 2 + [Detections.empty()] * gap + [_dets([a])] * 3
        ids = _run(t, frames)
        assert ids[1] == [1]
        assert (ids[-1] == [1]) is same, ids


def test_motion_prediction_keeps_an_accelerating_object_whose_boxes_barely_overlap():
    # A 30 px box speeding up by 3 px per frame: by the end consecutive boxes overlap
    # with IoU 0.1, below match_iou; the constant-velocity prediction keeps up.
    x, v, boxes = 0.0, 6.0, []
    for _ in range(12):
        boxes.append([100 + x, 100, 130 + x, 130])
        x, v = x + v, v + 3.0
    from seg_perception.core.postprocess import box_iou

    assert box_iou(np.array(boxes[-2:-1]), np.array(boxes[-1:]))[0, 0] < TrackerParams().match_iou
    ids = _run(Tracker(TrackerParams(mask_weight=0.0)), [_dets([b]) for b in boxes])
    assert all(i == [1] for i in ids), ids


def test_prediction_follows_the_stamps_not_the_frame_count():
    # 20 px box moving 7 px per frame, then three frames never arrive: the next box is
    # 28 px on, beyond a one-frame prediction (7 px) but where the stamps put it.
    t = Tracker(TrackerParams(mask_weight=0.0))
    for s in [0, 1, 2, 3, 4, 5, 9, 10]:
        x = 7 * s
        out = t.update(_dets([[100 + x, 50, 120 + x, 70]]), s * STEP_NS)
        assert out.track_ids.tolist() == [1], s


def test_low_score_detections_extend_tracks_but_never_start_them():
    a, b = [10, 10, 50, 50], [200, 10, 240, 50]
    t = Tracker(TrackerParams(high_score=0.5, low_score=0.1))
    ids = _run(t, [_dets([a]), _dets([a, b], scores=[0.3, 0.3]), _dets([a, b], scores=[0.3, 0.3])])
    assert ids[1] == [1, 0] and ids[2] == [1, 0]
    # Without the second stage the weak detection is dropped and the track misses.
    t = Tracker(TrackerParams(high_score=0.5, low_score=0.5))
    assert _run(t, [_dets([a]), _dets([a], scores=[0.3])])[1] == [0]


def test_classes_do_not_mix_unless_asked():
    a = [10, 10, 50, 50]
    frames = [_dets([a], class_ids=[1]), _dets([a], class_ids=[2]), _dets([a], class_ids=[2])]
    assert _run(Tracker(), frames)[2] == [2]
    assert _run(Tracker(TrackerParams(class_aware=False)), frames)[2] == [1]


def test_time_going_backwards_starts_over_with_fresh_ids():
    t = Tracker()
    a = [10, 10, 50, 50]
    t.update(_dets([a]), 10 * STEP_NS)
    assert t.update(_dets([a]), 11 * STEP_NS).track_ids.tolist() == [1]
    assert t.update(_dets([a]), 0).track_ids.tolist() == [2]  # a bag looped: new track, new id


def test_update_does_not_modify_its_input_and_ignores_very_weak_detections():
    d = _dets([[10, 10, 50, 50], [60, 60, 90, 90]], scores=[0.9, 0.05])
    out = Tracker().update(d, 0)
    assert d.track_ids.tolist() == [0, 0]
    assert out.track_ids.tolist() == [1, 0] and out.boxes is d.boxes


def test_box_only_detections_without_masks_are_tracked():
    d = _dets([[10, 10, 50, 50]])
    d.masks = []
    t = Tracker()
    assert [t.update(d, i * STEP_NS).track_ids.tolist() for i in range(3)] == [[1], [1], [1]]


def test_kalman_filter_learns_a_constant_velocity():
    kf = BoxKalman(np.array([100.0, 50.0, 20.0, 20.0]))
    for i in range(1, 20):
        kf.predict(0.1)
        kf.update(np.array([100.0 + 30.0 * i, 50.0, 20.0, 20.0]))  # 30 px per 0.1 s
    assert kf.x[4] == pytest.approx(300.0, rel=0.05)  # pixels per second
    np.testing.assert_allclose(xyxy_to_cxcywh([[0, 0, 10, 20]]), [[5, 10, 10, 20]])


@pytest.mark.parametrize("matcher", ["greedy", "hungarian"])
def test_matching_respects_the_threshold_and_forbidden_pairs(matcher):
    if matcher == "hungarian" and tracking._linear_sum_assignment is None:
        pytest.skip("SciPy not installed")
    sim = np.array([[0.9, 0.8], [0.85, 0.1], [-np.inf, 0.3]])
    pairs = sorted(match_pairs(sim, 0.2, matcher))
    if matcher == "hungarian":
        assert pairs == [(0, 1), (1, 0)]  # 0.8 + 0.85 beats 0.9 + 0.3
    else:
        assert pairs == [(0, 0), (2, 1)]  # best pair first
    assert match_pairs(sim, 0.95, matcher) == []


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="low_score"):
        TrackerParams(high_score=0.3, low_score=0.5)
    with pytest.raises(ValueError, match="min_hits"):
        TrackerParams(min_hits=0)


# ---------------------------------------------------------------------------- synthetic sequence


@pytest.fixture(scope="module")
def synth_sequence():
    scene = pytest.importorskip("seg_perception.synth.scene")
    from seg_perception.tools.synth_eval import detections_from_frame, gt_ids

    # Keep only what the tracker needs: a 60-frame sequence (4 s at 15 fps).
    return [(f.stamp_ns, detections_from_frame(f), gt_ids(f))
            for f in scene.generate_sequence(0, 60, width=320, height=240)]


def _evaluate(sequence, noise, params=None, seed=0):
    from seg_perception.tools.synth_eval import perturb_detections

    rng = np.random.default_rng([seed, 8])
    t, acc = Tracker(params), MotAccumulator(0.5)
    for stamp, perfect, ids in sequence:
        noisy, _ = perturb_detections(perfect, ids, 240, 320, noise, rng)
        out = t.update(noisy, stamp)
        acc.update_boxes(ids, perfect.boxes, out.track_ids.astype(np.int64), out.boxes)
    return acc.summary()


def test_ids_are_stable_on_clean_ground_truth_detections(synth_sequence):
    from seg_perception.tools.synth_eval import DetectionNoise

    s = _evaluate(synth_sequence, DetectionNoise.none())
    # Measured: 1 switch, an object that leaves the view for 31 frames (> max_age)
    # and comes back; no fragmentation.
    assert s.num_id_switches <= 1
    assert s.num_fragmentations <= 1
    assert s.num_false_positives == 0 and s.mota > 0.97


@pytest.mark.parametrize("noise_seed", [0, 1, 2])
def test_ids_are_stable_on_noisy_detections(synth_sequence, noise_seed):
    from seg_perception.tools.synth_eval import DetectionNoise

    s = _evaluate(synth_sequence, DetectionNoise(), seed=noise_seed)
    # Measured on this sequence over noise seeds 0-9: 1 switch (the re-entry above)
    # in 9 seeds, 2 in one; fragmentations 30-56 of 388 (8-14 %), which follow the
    # detector's 10 % dropouts: a frame without a detection interrupts the published
    # track, since the tracker reports only detected instances. IDF1 0.85-0.92.
    assert s.num_id_switches <= 2
    assert s.num_fragmentations <= 0.16 * s.num_gt
    assert s.idf1 > 0.8


# ---------------------------------------------------------------------------- CLEAR-MOT counts


def test_mot_counts_a_switch_when_the_hypothesis_changes():
    acc = MotAccumulator(0.5)
    box = [[0, 0, 10, 10]]
    for hyp in (7, 7, 9, 9):
        acc.update_boxes([1], box, [hyp], box)
    s = acc.summary()
    assert (s.num_id_switches, s.num_fragmentations, s.num_matches, s.mota) == (1, 0, 4, 0.75)


def test_mot_counts_a_fragmentation_per_interruption_but_not_absence():
    acc = MotAccumulator(0.5)
    box = [[0, 0, 10, 10]]
    acc.update_boxes([1], box, [7], box)      # tracked
    acc.update_boxes([1], box, [], [])        # missed
    acc.update_boxes([1], box, [], [])        # missed
    acc.update_boxes([1], box, [7], box)      # tracked again: 1 fragmentation
    acc.update_boxes([], [], [], [])          # out of view: not an interruption
    acc.update_boxes([1], box, [7], box)
    acc.update_boxes([1], box, [], [])        # trailing miss: not a fragmentation
    s = acc.summary()
    assert (s.num_fragmentations, s.num_id_switches, s.num_misses) == (1, 0, 3)


def test_mot_keeps_a_valid_correspondence_over_a_better_new_one():
    acc = MotAccumulator(0.5)
    gt = [[0, 0, 10, 10]]
    acc.update_boxes([1], gt, [7], gt)
    # Hypothesis 8 overlaps better now, but 7 is still valid: no switch, 8 is an FP.
    acc.update_boxes([1], gt, [7, 8], [[1, 0, 11, 10], [0, 0, 10, 10]])
    s = acc.summary()
    assert (s.num_id_switches, s.num_false_positives) == (0, 1)


def test_mot_counts_a_switch_after_a_gap_and_ignores_untracked_predictions():
    acc = MotAccumulator(0.5)
    box = [[0, 0, 10, 10]]
    acc.update_boxes([1], box, [7], box)
    acc.update_boxes([], [], [0], box)        # id 0: not tracked, not scored
    acc.update_boxes([1], box, [8], box)      # re-acquired under another id
    s = acc.summary()
    assert (s.num_id_switches, s.num_false_positives, s.num_predictions) == (1, 0, 2)
    assert s.idf1 == pytest.approx(0.5)


def test_mot_swapped_identities_are_two_switches():
    acc = MotAccumulator(0.5)
    a, b = [0, 0, 10, 10], [50, 0, 60, 10]
    acc.update_boxes([1, 2], [a, b], [7, 8], [a, b])
    acc.update_boxes([1, 2], [a, b], [8, 7], [a, b])
    assert acc.summary().num_id_switches == 2
