"""Spec for core.keypoints: scaling and per-class keypoint sets."""

from __future__ import annotations

import numpy as np
import pytest

from seg_perception.core.keypoints import (
    class_keypoint_table,
    keypoints_to_pixels,
    suppress_unused_keypoints,
    visible_keypoints,
)


def test_normalised_keypoints_scale_to_pixels_without_clipping_or_touching_input():
    kps = np.array([[[0.5, 0.5, 0.7], [1.2, -0.1, 0.2]]], np.float32)
    before = kps.copy()
    out = keypoints_to_pixels(kps, 640, 480)
    np.testing.assert_allclose(out, [[[320, 240, 0.7], [768, -48, 0.2]]], rtol=1e-6)
    np.testing.assert_array_equal(kps, before)


def test_classes_without_an_entry_use_every_keypoint():
    table = class_keypoint_table(["mug", "box", "can"], 4, {"box": [1, 3]})
    np.testing.assert_array_equal(table, [[1, 1, 1, 1], [0, 1, 0, 1], [1, 1, 1, 1]])


def test_class_keypoint_table_names_bad_entries():
    with pytest.raises(ValueError, match="class 'cup'"):
        class_keypoint_table(["mug"], 2, {"cup": [0]})
    with pytest.raises(ValueError, match=r"keypoints \[2\] outside 0..1"):
        class_keypoint_table(["mug"], 2, {"mug": [0, 2]})


def test_unused_keypoints_get_zero_score_and_keep_their_position():
    kps = np.full((2, 3, 3), 0.9, np.float32)
    table = np.array([[True, False, True], [True, True, True]])
    out = suppress_unused_keypoints(kps, np.array([0, 1]), table)
    np.testing.assert_allclose(out[..., 2], [[0.9, 0, 0.9], [0.9, 0.9, 0.9]])
    np.testing.assert_array_equal(out[..., :2], kps[..., :2])
    assert kps[0, 1, 2] == np.float32(0.9)  # input untouched


def test_visibility_needs_a_score_above_threshold_and_finite_position():
    kps = np.array([[[1, 1, 0.5], [1, 1, 0.51], [np.nan, 1, 0.9]]], np.float32)
    np.testing.assert_array_equal(visible_keypoints(kps, 0.5), [[False, True, False]])
