"""Spec for core.drawing: the debug overlay."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from seg_perception.core.drawing import color_for, draw_overlay, instance_label
from seg_perception.core.types import CroppedMask, Detections


def _background(h=120, w=160) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(40, 200, (h, w, 3), dtype=np.uint8)


def _detections(track_ids=None, keypoints=None) -> Detections:
    m0 = np.zeros((30, 40), np.uint8)
    m0[5:25, 5:35] = 1
    m1 = np.zeros((20, 20), np.uint8)
    m1[2:18, 4:10] = 1
    return Detections(
        boxes=np.array([[10, 20, 50, 50], [90, 60, 110, 80]], np.float32),
        scores=np.array([0.87, 0.5], np.float32),
        class_ids=np.array([1, 0], np.int32),
        masks=[CroppedMask(10, 20, m0), CroppedMask(90, 60, m1)],
        keypoints=np.zeros((2, 0, 3), np.float32) if keypoints is None else keypoints,
        track_ids=track_ids,
    )


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a != b).any(axis=2)


def test_input_image_is_never_modified_and_read_only_input_works():
    img = _background()
    img.setflags(write=False)
    before = img.copy()
    out = draw_overlay(img, _detections(), ["cup", "bottle"])
    np.testing.assert_array_equal(img, before)
    assert out.shape == img.shape and out.dtype == np.uint8 and not np.shares_memory(out, img)


def test_no_detections_gives_an_identical_copy():
    img = _background()
    np.testing.assert_array_equal(draw_overlay(img, Detections.empty()), img)


def test_masks_and_boxes_change_pixels_only_on_masks_and_box_outlines():
    img = _background()
    det = _detections()
    out = draw_overlay(img, det, draw_labels=False, box_thickness=2)
    allowed = np.zeros(img.shape[:2], bool)
    for m in det.masks:
        allowed |= m.to_full(*img.shape[:2]).astype(bool)
    outline = np.zeros(img.shape[:2], np.uint8)
    for x0, y0, x1, y1 in det.boxes.astype(int):
        outline[y0:y1, x0:x1] = 1
        outline[y0 + 1:y1 - 1, x0 + 1:x1 - 1] = 0
    allowed |= cv2.dilate(outline, np.ones((3, 3), np.uint8)).astype(bool)  # 2 px line, centred
    changed = _changed(out, img)
    assert changed.any()
    assert not (changed & ~allowed).any()


def test_mask_pixels_are_blended_toward_the_instance_colour():
    img = _background()
    det = _detections()
    out = draw_overlay(img, det, draw_boxes=False, draw_labels=False, mask_alpha=0.5)
    inside = det.masks[0].to_full(*img.shape[:2]).astype(bool)
    expected = 0.5 * img[inside].astype(float) + 0.5 * np.array(color_for(1), float)
    assert np.abs(out[inside].astype(float) - expected).max() <= 1.0
    outside = ~(inside | det.masks[1].to_full(*img.shape[:2]).astype(bool))
    np.testing.assert_array_equal(out[outside], img[outside])


def test_colour_follows_class_unless_tracked_then_track_id():
    img = np.zeros((120, 160, 3), np.uint8)
    same_class = _detections()
    same_class.class_ids[:] = 4
    out = draw_overlay(img, same_class, draw_boxes=False, draw_labels=False, mask_alpha=1.0)
    assert tuple(out[30, 20]) == tuple(out[70, 95]) == color_for(4)
    tracked = _detections(track_ids=np.array([7, 8], np.uint32))
    tracked.class_ids[:] = 4
    out = draw_overlay(img, tracked, draw_boxes=False, draw_labels=False, mask_alpha=1.0)
    assert tuple(out[30, 20]) == color_for(7) and tuple(out[70, 95]) == color_for(8)
    assert color_for(7) != color_for(8)


def test_palette_is_stable_and_distinguishes_neighbouring_indices():
    assert color_for(3) == color_for(3)
    colours = [color_for(i) for i in range(20)]
    assert len(set(colours)) == 20


def test_labels_read_name_and_score_and_the_track_id_when_set():
    assert instance_label(1, 0.8712, ["cup", "bottle"]) == "bottle 0.87"
    assert instance_label(1, 0.8712, ["cup", "bottle"], track_id=12) == "#12 bottle 0.87"
    assert instance_label(5, 0.5, ["cup"]) == "class 5 0.50"
    assert instance_label(1, 0.8712, ["cup", "bottle"], track_id=3, range_m=0.984) == "#3 bottle 0.87 0.98 m"
    assert instance_label(1, 0.8712, ["cup", "bottle"], range_m=float("nan")) == "bottle 0.87"


def test_a_range_lengthens_only_the_label_of_the_instance_that_has_one():
    img = _background()
    det = _detections()
    plain = draw_overlay(img, det, ["cup", "bottle"])
    ranged = draw_overlay(img, det, ["cup", "bottle"], ranges=[1.25, float("nan")])
    changed = _changed(ranged, plain)
    assert changed.any()
    ys, xs = np.nonzero(changed)
    x0, y0 = det.boxes[0, :2].astype(int)
    assert (np.abs(ys - y0) < 25).all() and (xs > x0).all()  # beside the first box's label only


def test_labels_are_drawn_next_to_the_top_left_corner_of_their_box():
    img = _background()
    det = _detections()
    without = draw_overlay(img, det, ["cup", "bottle"], draw_labels=False)
    with_labels = draw_overlay(img, det, ["cup", "bottle"], draw_labels=True)
    extra = _changed(with_labels, without)
    assert extra.any()
    ys, xs = np.nonzero(extra)
    # Each changed pixel sits in a text band starting at one box's left edge,
    # just above (or, at the image top, just below) its top edge.
    near_a_box = np.zeros_like(extra)
    for x0, y0, _, _ in det.boxes.astype(int):
        near_a_box[max(y0 - 25, 0):y0 + 25, x0:] = True
    assert near_a_box[ys, xs].all()


def test_keypoints_above_threshold_get_dots_and_skeleton_lines():
    img = np.zeros((120, 160, 3), np.uint8)
    kps = np.zeros((2, 3, 3), np.float32)
    kps[0] = [[20, 100, 0.9], [80, 100, 0.9], [140, 30, 0.1]]  # third is not visible
    det = _detections(keypoints=kps)
    det.masks = []
    out = draw_overlay(img, det, skeleton=[(0, 1), (1, 2)], draw_boxes=False, draw_labels=False,
                       keypoint_threshold=0.3)
    changed = _changed(out, img)
    assert changed[100, 20] and changed[100, 80]  # dots
    assert changed[100, 50]  # the 0-1 bone
    assert not changed[25:36, 135:146].any()  # invisible keypoint: no dot
    assert not changed[65, 110]  # nor a 1-2 bone through its midpoint


@pytest.mark.parametrize("kp", [[1e12, -1e12, 0.9], [np.nan, 5, 0.9]])
def test_far_off_or_invalid_keypoints_do_not_crash(kp):
    kps = np.array([[kp, [10, 10, 0.9]]] * 2, np.float32)
    draw_overlay(_background(), _detections(keypoints=kps), skeleton=[(0, 1)])


def test_masks_hanging_over_the_image_edge_are_clipped():
    det = Detections(
        boxes=np.array([[150, 110, 170, 130]], np.float32),
        scores=np.array([0.9], np.float32),
        class_ids=np.array([0], np.int32),
        masks=[CroppedMask(150, 110, np.ones((20, 20), np.uint8))],
        keypoints=np.zeros((1, 0, 3), np.float32),
    )
    img = _background()
    out = draw_overlay(img, det, draw_boxes=False, draw_labels=False)
    changed = _changed(out, img)
    assert changed[110:, 150:].all() and not changed[:110].any() and not changed[:, :150].any()
