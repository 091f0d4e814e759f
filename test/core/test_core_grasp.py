"""Grasp keypoints from masks: the analytic answer on rotated rectangles."""

from __future__ import annotations

import numpy as np
import pytest

from seg_perception.core.grasp import KEYPOINT_NAMES, KEYPOINT_SET, grasp_keypoints, principal_axis
from seg_perception.core.types import CroppedMask


def _rotated_rect(cx: float, cy: float, length: float, width: float, angle_deg: float,
                  h: int = 220, w: int = 260) -> CroppedMask:
    """A rectangle rasterised by pixel centres (a pixel is in when its centre is),
    long side ``length`` along ``angle_deg`` (image x towards y), cut to its box."""
    yy, xx = np.mgrid[:h, :w]
    t = np.radians(angle_deg)
    u = (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)
    v = -(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)
    # Half-open, so that an axis-aligned rectangle is exactly length x width pixels.
    full = ((-length / 2 <= u) & (u < length / 2) & (-width / 2 <= v) & (v < width / 2)).astype(np.uint8)
    ys, xs = np.nonzero(full)
    return CroppedMask(int(xs.min()), int(ys.min()), full[ys.min():ys.max() + 1, xs.min():xs.max() + 1])


def _analytic(cx, cy, width, angle_deg):
    t = np.radians(angle_deg)
    n = np.array([-np.sin(t), np.cos(t)])
    return np.array([cx, cy]) + width / 2 * n, np.array([cx, cy]) - width / 2 * n


@pytest.mark.parametrize("angle", [0.0, 12.5, 30.0, 45.0, 67.0, 90.0, -33.0, -80.0])
@pytest.mark.parametrize("centre", [(117.3, 96.8), (120.0, 100.0)])
def test_grasp_points_of_a_rotated_rectangle_match_the_analytic_answer(angle, centre):
    length, width = 90.0, 34.0
    g = grasp_keypoints([_rotated_rect(*centre, length, width, angle)])
    kp = g.keypoints[0]
    assert kp[:, 2].tolist() == [1.0, 1.0, 1.0]
    assert np.linalg.norm(kp[0, :2] - centre) < 1.0
    a, b = _analytic(*centre, width, angle)
    got = {tuple(kp[1, :2]), tuple(kp[2, :2])}
    # Unordered here (the order is tested below); each point within 1 px.
    for p in (a, b):
        assert min(np.linalg.norm(np.subtract(q, p)) for q in got) < 1.0
    assert g.widths[0] == pytest.approx(width, abs=1.0)
    expected_angle = (angle + 90) % 180 - 90  # the axis is a line: modulo 180 deg
    assert abs((np.degrees(g.angles[0]) - expected_angle + 90) % 180 - 90) < 1.0


def test_thin_rectangles_keep_their_width():
    for width in (3.0, 7.0, 12.0):
        g = grasp_keypoints([_rotated_rect(100.0, 100.0, 60.0, width, 25.0)])
        assert g.widths[0] == pytest.approx(width, abs=1.0)


def test_axis_aligned_rectangle_is_exact_to_the_pixel_edges():
    # Pixels 10..49 x 20..29: 40 wide, 10 high; edges at 19.5 and 29.5.
    m = CroppedMask(10, 20, np.ones((10, 40), np.uint8))
    g = grasp_keypoints([m])
    np.testing.assert_allclose(g.keypoints[0], [[29.5, 24.5, 1], [29.5, 19.5, 1], [29.5, 29.5, 1]], atol=1e-3)
    assert g.widths[0] == pytest.approx(10.0, abs=1e-3)
    assert g.angles[0] == pytest.approx(0.0)


def test_grasp_a_is_the_upper_point_and_on_a_horizontal_line_the_left_one():
    tall = CroppedMask(0, 0, np.ones((40, 10), np.uint8))  # axis vertical: line horizontal
    kp = grasp_keypoints([tall]).keypoints[0]
    assert kp[1, 0] < kp[2, 0] and kp[1, 1] == pytest.approx(kp[2, 1])
    kp = grasp_keypoints([_rotated_rect(100, 100, 60, 20, 30.0)]).keypoints[0]
    assert kp[1, 1] < kp[2, 1]
    assert KEYPOINT_SET == "grasp" and KEYPOINT_NAMES == ("centroid", "grasp_a", "grasp_b")


def test_empty_mask_and_ring_give_score_zero():
    yy, xx = np.mgrid[:61, :61]
    r = np.hypot(xx - 30, yy - 30)
    ring = CroppedMask(5, 5, ((r >= 20) & (r <= 30)).astype(np.uint8))
    empty = CroppedMask(0, 0, np.zeros((5, 5), np.uint8))
    g = grasp_keypoints([empty, ring])
    assert g.keypoints[0, :, 2].tolist() == [0, 0, 0] and g.widths[0] == 0
    assert g.keypoints[1, :, 2].tolist() == [1, 0, 0]  # centroid found, in the hole
    np.testing.assert_allclose(g.keypoints[1, 0, :2], [35, 35], atol=1e-6)
    assert grasp_keypoints([]).keypoints.shape == (0, 3, 3)


def test_principal_axis_of_a_diagonal_bar():
    m = np.eye(30, dtype=np.uint8)
    cx, cy, angle = principal_axis(m)
    assert (cx, cy) == pytest.approx((14.5, 14.5)) and np.degrees(angle) == pytest.approx(45.0)
    assert principal_axis(np.zeros((3, 3), np.uint8)) is None


def test_a_frames_masks_marched_together_give_each_masks_own_answer():
    """The rays of all instances are marched in one packed array: every instance must
    read its own crop (sizes, offsets and exits differ), including a ring (no grasp
    points), an empty mask and one-pixel masks between them."""
    ring = np.zeros((41, 41), np.uint8)
    yy, xx = np.mgrid[:41, :41]
    ring[(np.hypot(yy - 20, xx - 20) < 20) & (np.hypot(yy - 20, xx - 20) > 12)] = 1
    masks = [_rotated_rect(117.3, 96.8, 90.0, 34.0, 30.0), CroppedMask(5, 7, ring),
             CroppedMask(0, 0, np.zeros((3, 4), np.uint8)), CroppedMask(300, 200, np.ones((1, 1), np.uint8)),
             _rotated_rect(60.0, 140.0, 200.0, 12.0, -70.0, h=300, w=300), CroppedMask(9, 9, np.ones((2, 7), np.uint8)),
             _rotated_rect(130.0, 110.0, 40.0, 25.0, 5.0)]
    together = grasp_keypoints(masks)
    for i, mask in enumerate(masks):
        alone = grasp_keypoints([mask])
        assert np.array_equal(together.keypoints[i], alone.keypoints[0]), i
        assert together.widths[i] == alone.widths[0] and together.angles[i] == alone.angles[0], i
    assert together.keypoints[1, 1:, 2].tolist() == [0.0, 0.0] and together.keypoints[2, :, 2].tolist() == [0, 0, 0]
    assert together.widths[4] == pytest.approx(12.0, abs=0.5)
