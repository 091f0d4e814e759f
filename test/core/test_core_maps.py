"""Instance and class maps: exact pixels on hand-made masks, the overlap rule, ids."""

from __future__ import annotations

import numpy as np
import pytest

from seg_perception.core.maps import class_map, instance_map, paint_order
from seg_perception.core.types import CroppedMask, Detections


def _dets(masks: list[CroppedMask], scores, class_ids=None, track_ids=None) -> Detections:
    n = len(masks)
    return Detections(
        boxes=np.asarray([[m.x, m.y, m.x + m.width, m.y + m.height] for m in masks], np.float32).reshape(n, 4),
        scores=np.asarray(scores, np.float32),
        class_ids=np.asarray(class_ids if class_ids is not None else [0] * n, np.int32),
        masks=masks,
        keypoints=np.zeros((n, 0, 3), np.float32),
        track_ids=None if track_ids is None else np.asarray(track_ids, np.uint32),
    )


# Two overlapping hand-made masks in a 5 x 6 image:
#   A at (1, 0), 3x3 with a hole in the middle; B at (2, 1), an L of 4 pixels.
A = CroppedMask(1, 0, np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]], np.uint8))
B = CroppedMask(2, 1, np.array([[1, 0, 0], [1, 0, 0], [1, 1, 255]], np.uint8))


def test_instance_map_is_exact_and_the_higher_score_wins_overlaps():
    m = instance_map(_dets([A, B], scores=[0.9, 0.5]), 5, 6)
    expected = np.array([
        [0, 1, 1, 1, 0, 0],
        [0, 1, 2, 1, 0, 0],   # B's (2, 1) shows through A's hole
        [0, 1, 1, 1, 0, 0],   # B's (2, 2) lies under A's pixel: A scores higher
        [0, 0, 2, 2, 2, 0],
        [0, 0, 0, 0, 0, 0],
    ], np.uint16)
    assert m.dtype == np.uint16
    np.testing.assert_array_equal(m, expected)
    m = instance_map(_dets([A, B], scores=[0.4, 0.5]), 5, 6)
    assert m[1, 2] == 2 and m[2, 2] == 2 and m[3, 2] == 2 and m[2, 1] == 1 and m[1, 3] == 1


def test_equal_scores_go_to_the_earlier_instance():
    m = instance_map(_dets([A, B], scores=[0.5, 0.5]), 5, 6)
    assert m[2, 2] == 1
    m = instance_map(_dets([B, A], scores=[0.5, 0.5]), 5, 6)
    assert m[2, 2] == 1  # now B is first, and B is 1
    assert paint_order(np.array([0.5, 0.9, 0.5])).tolist() == [2, 0, 1]


def test_instance_map_uses_track_ids_and_index_for_untracked():
    d = _dets([A, B], scores=[0.9, 0.5], track_ids=[17, 0])
    m = instance_map(d, 5, 6)
    assert m[0, 1] == 17 and m[3, 4] == 2
    m = instance_map(d, 5, 6, untracked="skip")
    assert m[0, 1] == 17 and m[3, 4] == 0 and m[2, 2] == 17
    with pytest.raises(ValueError):
        instance_map(d, 5, 6, untracked="drop")


def test_track_ids_beyond_uint16_wrap_instead_of_vanishing():
    m = instance_map(_dets([A], scores=[1.0], track_ids=[65536]), 5, 6)
    assert m[0, 1] == 1
    m = instance_map(_dets([A], scores=[1.0], track_ids=[65535]), 5, 6)
    assert m[0, 1] == 65535


def test_class_map_is_class_id_plus_one_with_the_same_overlap_rule():
    d = _dets([A, B], scores=[0.9, 0.5], class_ids=[0, 6])
    c = class_map(d, 5, 6)
    assert c.dtype == np.uint8
    inst = instance_map(d, 5, 6)
    np.testing.assert_array_equal(c, np.where(inst == 1, 1, np.where(inst == 2, 7, 0)))
    with pytest.raises(ValueError, match="0..254"):
        class_map(_dets([A], scores=[1.0], class_ids=[255]), 5, 6)


def test_masks_reaching_past_the_image_are_clipped():
    big = CroppedMask(4, 3, np.ones((4, 4), np.uint8))
    m = instance_map(_dets([big], scores=[1.0]), 5, 6)
    assert m.sum() == 2 * 2 and m[3:, 4:].tolist() == [[1, 1], [1, 1]]


def test_empty_detections_give_empty_maps():
    assert instance_map(Detections.empty(), 4, 3).shape == (4, 3)
    assert not class_map(Detections.empty(), 4, 3).any()


def test_maps_of_many_instances_match_a_per_pixel_reference():
    rng = np.random.default_rng(1)
    h, w, n = 60, 80, 25
    masks = []
    for _ in range(n):
        x, y = int(rng.integers(0, w - 10)), int(rng.integers(0, h - 10))
        mw, mh = int(rng.integers(1, min(30, w - x) + 1)), int(rng.integers(1, min(30, h - y) + 1))
        masks.append(CroppedMask(x, y, (rng.random((mh, mw)) < 0.6).astype(np.uint8)))
    scores = rng.integers(0, 5, n) / 4  # many ties
    d = _dets(masks, scores=scores, class_ids=rng.integers(0, 80, n), track_ids=rng.integers(0, 3, n) * 100)
    ref_i = np.zeros((h, w), np.uint16)
    ref_c = np.zeros((h, w), np.uint8)
    best = np.full((h, w), -1.0)
    for i in range(n):  # pixel by pixel: highest score, then lowest index
        full = masks[i].to_full(h, w).astype(bool)
        win = full & (scores[i] > best)
        best[win] = scores[i]
        ref_i[win] = d.track_ids[i] if d.track_ids[i] else i + 1
        ref_c[win] = d.class_ids[i] + 1
    np.testing.assert_array_equal(instance_map(d, h, w), ref_i)
    np.testing.assert_array_equal(class_map(d, h, w), ref_c)
