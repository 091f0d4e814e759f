"""Spec for core.postprocess: thresholds, Fast NMS, mask assembly, scaling to pixels."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from seg_perception.core.keypoints import class_keypoint_table
from seg_perception.core.masks import mask_iou
from seg_perception.core.postprocess import (
    PostprocessParams,
    assemble_box_region_masks,
    assemble_masks,
    box_iou,
    fast_nms,
    mask_regions,
    naive_reference_masks,
    postprocess_yolact,
    postprocess_yolact_batch,
    proto_crop_windows,
)
from seg_perception.core.types import CroppedMask, Detections

# --- helpers: independent reference implementations ---------------------------


def _iou_scalar(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _fast_nms_loop(boxes, scores, groups, thr, top_k) -> set[int]:
    """Fast NMS as the YOLACT paper states it, one pair at a time: a candidate
    survives unless some higher-scoring candidate of its class (among the class's
    top_k) overlaps it by more than thr, whether or not that one survived."""
    kept = set()
    for g in np.unique(groups):
        idx = [int(i) for i in np.flatnonzero(groups == g)]
        idx.sort(key=lambda i: -scores[i])
        idx = idx[:top_k]
        for j_pos, j in enumerate(idx):
            if all(_iou_scalar(boxes[i], boxes[j]) <= thr for i in idx[:j_pos]):
                kept.add(j)
    return kept


def _random_boxes(rng, n, size=100.0):
    xy = rng.uniform(0, size * 0.8, (n, 2))
    wh = rng.uniform(size * 0.05, size * 0.4, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


def _smooth_protos(rng, hp, wp, p):
    """Prototype-like maps: smooth, non-negative (ReLU), a few blobs per channel."""
    low = rng.normal(size=(max(hp // 8, 2), max(wp // 8, 2), p)).astype(np.float32)
    up = cv2.resize(low, (wp, hp), interpolation=cv2.INTER_CUBIC)
    return np.maximum(up * 2.0, 0.0).astype(np.float32)


def _raw_outputs(boxes_norm, class_scores, num_protos=4, hp=20, wp=20, seed=0):
    rng = np.random.default_rng(seed)
    n = len(boxes_norm)
    return dict(
        boxes=np.asarray(boxes_norm, np.float32),
        scores=np.asarray(class_scores, np.float32),
        mask_coeffs=np.tanh(rng.normal(size=(n, num_protos))).astype(np.float32),
        protos=_smooth_protos(rng, hp, wp, num_protos),
    )


# --- box IoU ------------------------------------------------------------------


def test_box_iou_matches_a_scalar_reference_including_zero_area_boxes():
    rng = np.random.default_rng(0)
    a = _random_boxes(rng, 12)
    b = _random_boxes(rng, 9)
    b[0, 2:] = b[0, :2]  # zero area
    got = box_iou(a, b)
    want = np.array([[_iou_scalar(x, y) for y in b] for x in a])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert not np.isnan(box_iou(b[:1], b[:1])).any()


# --- Fast NMS -----------------------------------------------------------------


def test_fast_nms_removes_the_lower_of_two_overlapping_same_class_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11]], np.float32)  # IoU 0.68
    keep = fast_nms(boxes, np.array([0.6, 0.9]), np.array([3, 3]), 0.5, 200)
    assert keep.tolist() == [1]


def test_fast_nms_keeps_overlapping_boxes_of_different_classes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11]], np.float32)
    keep = fast_nms(boxes, np.array([0.6, 0.9]), np.array([0, 1]), 0.5, 200)
    assert keep.tolist() == [1, 0]  # highest score first


def test_fast_nms_keeps_boxes_whose_overlap_is_at_most_the_threshold():
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10]], np.float32)  # IoU exactly 1/3
    assert len(fast_nms(boxes, np.array([0.9, 0.8]), np.zeros(2, int), 1 / 3 + 1e-6, 10)) == 2
    assert len(fast_nms(boxes, np.array([0.9, 0.8]), np.zeros(2, int), 0.3, 10)) == 1


def test_fast_nms_lets_a_suppressed_box_suppress_others_as_published():
    # A overlaps B, B overlaps C, A and C are disjoint. Greedy NMS would keep A and
    # C; Fast NMS drops C too because B (though suppressed) outranks it.
    boxes = np.array([[0, 0, 10, 10], [6, 0, 16, 10], [12, 0, 22, 10]], np.float32)
    keep = fast_nms(boxes, np.array([0.9, 0.8, 0.7]), np.zeros(3, int), 0.2, 10)
    assert keep.tolist() == [0]


def test_fast_nms_only_considers_the_top_k_of_each_class():
    boxes = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [0, 20, 10, 30]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.1])
    groups = np.array([0, 0, 0, 1])
    keep = fast_nms(boxes, scores, groups, 0.5, top_k=2)
    assert sorted(keep.tolist()) == [0, 1, 3]


@pytest.mark.parametrize("seed", range(6))
def test_fast_nms_matches_the_pairwise_loop_reference_on_random_inputs(seed):
    rng = np.random.default_rng(seed)
    m = int(rng.integers(1, 120))
    boxes = _random_boxes(rng, m)
    scores = rng.random(m).astype(np.float32)
    groups = rng.integers(0, 5, m)
    thr = float(rng.uniform(0.2, 0.7))
    top_k = int(rng.integers(1, 40))
    keep = fast_nms(boxes, scores, groups, thr, top_k)
    assert set(keep.tolist()) == _fast_nms_loop(boxes, scores, groups, thr, top_k)
    assert np.all(np.diff(scores[keep]) <= 0)


@pytest.mark.parametrize("block", [1, 7, 64])
def test_fast_nms_in_memory_bounded_chunks_gives_the_same_answer(monkeypatch, block):
    # Large top_k makes one class's IoU matrix huge; it is then built a band of
    # columns at a time. Force that path with a tiny block size.
    import seg_perception.core.postprocess as pp

    rng = np.random.default_rng(11)
    m = 90
    boxes = _random_boxes(rng, m)
    scores = rng.random(m).astype(np.float32)
    groups = rng.integers(0, 2, m)
    monkeypatch.setattr(pp, "_NMS_BLOCK_ELEMENTS", block)
    keep = fast_nms(boxes, scores, groups, 0.4, 60)
    assert set(keep.tolist()) == _fast_nms_loop(boxes, scores, groups, 0.4, 60)


def test_fast_nms_handles_no_candidates():
    assert fast_nms(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int), 0.5, 10).shape == (0,)


# --- thresholds, ordering, limits ---------------------------------------------


def test_only_class_scores_above_the_threshold_become_detections():
    boxes = [[0.1, 0.1, 0.3, 0.3], [0.5, 0.5, 0.9, 0.9], [0.0, 0.6, 0.2, 0.9]]
    scores = [[0.29, 0.1], [0.1, 0.31], [0.3, 0.0]]  # 0.3 itself is not "above"
    d = postprocess_yolact(**_raw_outputs(boxes, scores), image_width=100, image_height=100,
                           params=PostprocessParams(score_threshold=0.3))
    assert len(d) == 1 and d.class_ids.tolist() == [1] and d.scores[0] == pytest.approx(0.31)


def test_one_prior_may_report_several_classes_unless_class_agnostic():
    boxes = [[0.1, 0.1, 0.5, 0.5]]
    scores = [[0.8, 0.6, 0.05]]
    per_class = postprocess_yolact(**_raw_outputs(boxes, scores), image_width=50, image_height=50)
    assert sorted(per_class.class_ids.tolist()) == [0, 1]
    agnostic = postprocess_yolact(**_raw_outputs(boxes, scores), image_width=50, image_height=50,
                                  params=PostprocessParams(class_agnostic=True))
    assert agnostic.class_ids.tolist() == [0] and agnostic.scores.tolist() == pytest.approx([0.8])


def test_class_agnostic_nms_suppresses_across_classes():
    boxes = [[0.0, 0.0, 0.5, 0.5], [0.02, 0.02, 0.52, 0.52]]
    scores = [[0.9, 0.0], [0.0, 0.7]]
    per_class = postprocess_yolact(**_raw_outputs(boxes, scores), image_width=100, image_height=100)
    agnostic = postprocess_yolact(**_raw_outputs(boxes, scores), image_width=100, image_height=100,
                                  params=PostprocessParams(class_agnostic=True))
    assert len(per_class) == 2
    assert len(agnostic) == 1 and agnostic.class_ids.tolist() == [0]


def test_results_are_sorted_by_score_and_capped_at_max_detections():
    rng = np.random.default_rng(1)
    n = 40
    # Disjoint boxes on a grid, so NMS removes nothing.
    gx, gy = np.meshgrid(np.arange(8), np.arange(5))
    x0, y0 = gx.ravel()[:n] / 8, gy.ravel()[:n] / 5
    boxes = np.stack([x0, y0, x0 + 0.1, y0 + 0.15], axis=1)
    scores = rng.uniform(0.4, 1.0, (n, 1))
    d = postprocess_yolact(**_raw_outputs(boxes, scores), image_width=160, image_height=100,
                           params=PostprocessParams(max_detections=7))
    assert len(d) == 7
    np.testing.assert_allclose(d.scores, np.sort(scores[:, 0])[::-1][:7], rtol=1e-6)


def test_nothing_above_threshold_gives_empty_detections_of_the_right_shapes():
    out = _raw_outputs([[0.1, 0.1, 0.2, 0.2]], [[0.01, 0.02]])
    kps = np.zeros((1, 5, 3), np.float32)
    d = postprocess_yolact(**out, image_width=64, image_height=48, keypoints=kps)
    assert len(d) == 0 and d.boxes.shape == (0, 4) and d.keypoints.shape == (0, 5, 3) and d.masks == []


def test_non_finite_boxes_are_dropped():
    boxes = [[np.nan, 0.1, 0.2, 0.2], [0.3, 0.3, 0.6, 0.6]]
    d = postprocess_yolact(**_raw_outputs(boxes, [[0.9], [0.8]]), image_width=64, image_height=64)
    assert d.scores.tolist() == pytest.approx([0.8])


# --- geometry in source pixels ------------------------------------------------


def test_boxes_are_scaled_to_source_pixels_and_clipped_to_the_image():
    boxes = [[0.25, 0.5, 0.75, 1.0], [-0.2, -0.1, 0.1, 0.2], [0.9, 0.1, 1.3, 0.3], [0.6, 0.7, 0.4, 0.5]]
    scores = [[0.9], [0.8], [0.7], [0.6]]
    d = postprocess_yolact(**_raw_outputs(boxes, scores), image_width=640, image_height=480)
    np.testing.assert_allclose(
        d.boxes,
        [[160, 240, 480, 480], [0, 0, 64, 96], [576, 48, 640, 144], [256, 240, 384, 336]],  # last: corners swapped
        atol=1e-3,
    )
    assert d.boxes.dtype == np.float32 and d.class_ids.dtype == np.int32 and d.scores.dtype == np.float32


def test_keypoints_are_scaled_to_source_pixels_with_scores_unchanged():
    boxes = [[0.1, 0.1, 0.5, 0.5]]
    kps = np.array([[[0.5, 0.25, 0.9], [1.0, 0.0, 0.1], [1.1, -0.05, 0.5]]], np.float32)
    d = postprocess_yolact(**_raw_outputs(boxes, [[0.9]]), image_width=200, image_height=100, keypoints=kps)
    np.testing.assert_allclose(d.keypoints[0], [[100, 25, 0.9], [200, 0, 0.1], [220, -5, 0.5]], rtol=1e-6)


def test_keypoints_a_class_does_not_use_get_zero_score():
    boxes = [[0.1, 0.1, 0.3, 0.3], [0.6, 0.6, 0.9, 0.9]]
    kps = np.full((2, 3, 3), 0.8, np.float32)
    table = class_keypoint_table(["mug", "box"], 3, {"mug": [0, 2]})
    d = postprocess_yolact(**_raw_outputs(boxes, [[0.9, 0.0], [0.0, 0.8]]), image_width=10, image_height=10,
                           keypoints=kps, keypoint_table=table)
    mug, box = (d.class_ids == 0).argmax(), (d.class_ids == 1).argmax()
    np.testing.assert_allclose(d.keypoints[mug, :, 2], [0.8, 0.0, 0.8])
    np.testing.assert_allclose(d.keypoints[box, :, 2], [0.8, 0.8, 0.8])


def test_mask_regions_cover_the_box_stay_in_the_image_and_are_at_least_one_pixel():
    boxes = np.array([[10.2, 5.7, 20.1, 9.0], [0, 0, 0, 0], [63.5, 47.9, 64, 48], [30, 30, 30, 30]], np.float32)
    regions = mask_regions(boxes, 64, 48)
    assert regions.tolist() == [[10, 5, 21, 9], [0, 0, 1, 1], [63, 47, 64, 48], [30, 30, 31, 31]]


# --- masks --------------------------------------------------------------------


def test_masks_lie_inside_the_image_and_reach_at_most_their_padded_box():
    rng = np.random.default_rng(2)
    n = 60
    boxes = rng.uniform(-0.2, 1.2, (n, 4))
    scores = rng.uniform(0.0, 1.0, (n, 3))
    out = _raw_outputs(boxes, scores, num_protos=8, hp=35, wp=35, seed=2)
    d = postprocess_yolact(**out, image_width=97, image_height=61, params=PostprocessParams(nms_iou_threshold=1.0))
    assert len(d) > 10
    # One prototype pixel of padding is 97/35 (61/35) source pixels; bilinear upsampling
    # reaches about one more.
    pad_x, pad_y = 2 * 97 / 35 + 1, 2 * 61 / 35 + 1
    for box, m in zip(d.boxes, d.masks):
        assert m.data.dtype == np.uint8 and set(np.unique(m.data)) <= {0, 1}
        assert 0 <= m.x and m.x + m.width <= 97 and 0 <= m.y and m.y + m.height <= 61
        assert m.width >= 1 and m.height >= 1
        ys, xs = np.nonzero(m.data)
        if xs.size:
            assert m.x + xs.min() >= box[0] - pad_x and m.x + xs.max() + 1 <= box[2] + pad_x
            assert m.y + ys.min() >= box[1] - pad_y and m.y + ys.max() + 1 <= box[3] + pad_y


def test_box_region_masks_lie_inside_their_box_region():
    rng = np.random.default_rng(2)
    n = 60
    boxes = rng.uniform(-0.2, 1.2, (n, 4))
    scores = rng.uniform(0.0, 1.0, (n, 3))
    out = _raw_outputs(boxes, scores, num_protos=8, hp=35, wp=35, seed=2)
    params = PostprocessParams(nms_iou_threshold=1.0, box_region_masks=True)
    d = postprocess_yolact(**out, image_width=97, image_height=61, params=params)
    assert len(d) > 10
    for box, m in zip(d.boxes, d.masks):
        assert 0 <= m.x and m.x + m.width <= 97 and 0 <= m.y and m.y + m.height <= 61
        assert m.width >= 1 and m.height >= 1
        # The region covers the box and has no pixel entirely outside it.
        assert m.x <= box[0] and box[2] <= m.x + m.width
        assert m.y <= box[1] and box[3] <= m.y + m.height
        assert m.x + 1 > box[0] - 1e-3 and m.x + m.width - 1 < box[2] + 1e-3
        assert m.y + 1 > box[1] - 1e-3 and m.y + m.height - 1 < box[3] + 1e-3


def test_mask_reproduces_a_planted_prototype_stripe_at_source_scale():
    # Channel 0 is 1 on proto columns 2..5 (all rows), channel 1 a constant:
    # logits are +10 on the stripe and -10 elsewhere. With 10x bilinear upsampling
    # the 0.5 crossing falls halfway between proto pixels (proto x 1.5 and 5.5,
    # i.e. source x 19.5 and 59.5), so the mask is source columns 20..59.
    protos = np.zeros((10, 10, 2), np.float32)
    protos[:, 2:6, 0] = 1.0
    protos[..., 1] = 1.0
    coeffs = np.array([[20.0, -10.0]], np.float32)
    whole = np.array([[0, 0, 1, 1]], np.float32)
    expected = np.zeros((100, 100), np.uint8)
    expected[:, 20:60] = 1
    for fn in (assemble_masks, naive_reference_masks):
        (m,) = fn(coeffs, protos, whole, 100, 100)
        np.testing.assert_array_equal(m.to_full(100, 100), expected)
    (m,) = assemble_box_region_masks(coeffs, protos, whole * 100, 100, 100)
    np.testing.assert_array_equal(m.to_full(100, 100), expected)
    # Transposed prototypes give the transposed mask (rows 20..59).
    (m,) = assemble_masks(coeffs, np.ascontiguousarray(protos.transpose(1, 0, 2)), whole, 100, 100)
    np.testing.assert_array_equal(m.to_full(100, 100), expected.T)
    # A box that cuts the stripe (source x 40..100, y 10..50): the official crop keeps
    # proto columns >= 0.4 * 10 - 1 = 3 and rows < 0.5 * 10 + 1 = 6, zero elsewhere, before
    # upsampling, so the mask starts between proto columns 2 and 3 (source x 29.5) and
    # ends between rows 5 and 6 (source y 59.5): beyond the box on both sides.
    cut = np.array([[0.4, 0.1, 1.0, 0.5]], np.float32)
    # (The corner near source (59.5, 29.5) is rounded: there both ramps are below 1.)
    (fast,), (naive,) = (fn(coeffs, protos, cut, 100, 100) for fn in (assemble_masks, naive_reference_masks))
    np.testing.assert_array_equal(fast.to_full(100, 100), naive.data)
    ys, xs = np.nonzero(naive.data)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (0, 59, 30, 59)
    assert naive.data[0:55, 35:60].all()
    # The box_region_masks deviation keeps only the part inside the box's pixels.
    (m,) = assemble_box_region_masks(coeffs, protos, cut * 100, 100, 100)
    clipped = np.zeros_like(expected)
    clipped[10:50, 40:60] = 1
    np.testing.assert_array_equal(m.to_full(100, 100), clipped)


def test_proto_crop_windows_follow_the_official_float_comparison():
    # Kept columns c satisfy x1 * W - 1 <= c < x2 * W + 1 (clamped): for W = 10,
    # x1 = 0.25 -> 1.5 -> first kept 2; x2 = 0.5 -> 6 -> last kept 5 (exclusive 6);
    # a box beyond the map keeps nothing; corners in either order.
    boxes = np.array([[0.25, 0.3, 0.5, 0.7], [0.5, 0.7, 0.25, 0.3], [1.2, 1.2, 1.5, 1.5], [-0.5, 0, 0.05, 1]],
                     np.float32)
    c0, c1, r0, r1 = proto_crop_windows(boxes, 10, 10)
    assert c0.tolist() == [2, 2, 10, 0] and c1.tolist() == [6, 6, 10, 2]
    assert r0.tolist() == [2, 2, 10, 0] and r1.tolist() == [8, 8, 10, 10]
    # Outside the map: an empty 1x1 mask inside the image.
    (m,) = assemble_masks(np.ones((1, 2), np.float32), np.ones((10, 10, 2), np.float32), boxes[2:3], 50, 40)
    assert m.data.sum() == 0 and 0 <= m.x < 50 and 0 <= m.y < 40


@pytest.mark.parametrize(
    "image_size,proto_size",
    [((640, 480), (138, 138)), ((1280, 720), (69, 69)), ((100, 80), (138, 138)), ((333, 517), (40, 56))],
)
def test_fast_mask_assembly_agrees_with_the_naive_full_resolution_reference(image_size, proto_size):
    rng = np.random.default_rng(sum(image_size))
    w, h = image_size
    protos = _smooth_protos(rng, proto_size[1], proto_size[0], 32)
    n = 25
    coeffs = np.tanh(rng.normal(size=(n, 32))).astype(np.float32)
    boxes = _random_boxes(rng, n, 1.0).astype(np.float64)
    # whole image, corner, tiny, beyond the border
    boxes[:4] = [[0, 0, 1, 1], [0.7, 0.6, 1, 1], [0.0005, 0.001, 0.008, 0.0085], [-0.2, 0.5, 0.3, 1.3]]
    boxes = boxes.astype(np.float32)
    fast = assemble_masks(coeffs, protos, boxes, w, h)
    ref = naive_reference_masks(coeffs, protos, boxes, w, h)
    for f, r in zip(fast, ref):
        full = f.to_full(h, w)
        # Nothing outside the computed region can be set.
        assert full.sum() == f.data.sum()
        if r.data.sum() >= 50:  # IoU of a handful of pixels says little
            assert mask_iou(CroppedMask(0, 0, full), r) >= 0.98
        # Same sample positions and weights, so only float rounding at exact
        # ties may differ: at most 0.1% of the region.
        assert np.sum(full != r.data) <= 0.001 * max(f.data.size, 1) + 1


def test_a_higher_mask_threshold_never_adds_pixels():
    rng = np.random.default_rng(7)
    protos = _smooth_protos(rng, 30, 30, 8)
    coeffs = np.tanh(rng.normal(size=(5, 8))).astype(np.float32)
    boxes = _random_boxes(rng, 5, 120)
    low = assemble_masks(coeffs, protos, boxes, 120, 120, mask_threshold=0.3)
    high = assemble_masks(coeffs, protos, boxes, 120, 120, mask_threshold=0.7)
    for a, b in zip(low, high):
        assert np.all(b.data <= a.data)


# --- batch and contract checks ------------------------------------------------


def test_batch_postprocessing_equals_per_image_postprocessing():
    rng = np.random.default_rng(3)
    b, n, c, p, k = 2, 30, 3, 4, 2
    outputs = dict(
        boxes=np.sort(rng.uniform(0, 1, (b, n, 4)), axis=2)[..., [0, 1, 2, 3]].astype(np.float32),
        scores=rng.uniform(0, 1, (b, n, c)).astype(np.float32),
        mask_coeffs=rng.normal(size=(b, n, p)).astype(np.float32),
        protos=np.abs(rng.normal(size=(b, 16, 16, p))).astype(np.float32),
        keypoints=rng.uniform(0, 1, (b, n, k, 3)).astype(np.float32),
    )
    sizes = [(64, 48), (32, 40)]
    batch = postprocess_yolact_batch(outputs, sizes)
    for i, (w, h) in enumerate(sizes):
        single = postprocess_yolact(outputs["boxes"][i], outputs["scores"][i], outputs["mask_coeffs"][i],
                                    outputs["protos"][i], w, h, keypoints=outputs["keypoints"][i])
        assert isinstance(batch[i], Detections)
        np.testing.assert_array_equal(batch[i].boxes, single.boxes)
        np.testing.assert_array_equal(batch[i].keypoints, single.keypoints)
        assert all(np.array_equal(x.data, y.data) for x, y in zip(batch[i].masks, single.masks))


def test_batch_postprocessing_reports_missing_outputs_and_size_mismatch():
    with pytest.raises(ValueError, match="lack \\['protos'\\]"):
        postprocess_yolact_batch({"boxes": np.zeros((1, 0, 4)), "scores": 0, "mask_coeffs": 0}, [(1, 1)])
    out = {k: v[None] for k, v in _raw_outputs([[0, 0, 1, 1]], [[0.9]]).items()}
    with pytest.raises(ValueError, match="2 image sizes given for a batch of 1"):
        postprocess_yolact_batch(out, [(1, 1), (2, 2)])


def test_raw_outputs_breaking_the_contract_are_named():
    good = _raw_outputs([[0, 0, 1, 1]], [[0.9]])
    with pytest.raises(ValueError, match="mask_coeffs must be"):
        postprocess_yolact(**{**good, "mask_coeffs": np.zeros((1, 3), np.float32)}, image_width=8, image_height=8)
    with pytest.raises(ValueError, match="scores must be"):
        postprocess_yolact(**{**good, "scores": np.zeros((2, 1), np.float32)}, image_width=8, image_height=8)
    with pytest.raises(ValueError, match="keypoints must be"):
        postprocess_yolact(**good, image_width=8, image_height=8, keypoints=np.zeros((1, 2, 2)))
    with pytest.raises(ValueError, match="bad source image size"):
        postprocess_yolact(**good, image_width=0, image_height=8)


@pytest.mark.parametrize(
    "field,value",
    [("score_threshold", 1.5), ("nms_iou_threshold", -0.1), ("mask_threshold", 1.0), ("top_k", 0),
     ("max_detections", 0), ("candidate_threshold", -0.01), ("candidate_threshold", 1.5)],
)
def test_out_of_range_parameters_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        PostprocessParams(**{field: value})


def test_a_prior_above_the_candidate_threshold_brings_all_its_classes_at_score_threshold_zero():
    # Official Fast NMS (second_threshold=False): prior 0's best class passes 0.05, so its
    # 0.01 class is a detection too at threshold 0; prior 1 (best 0.04) brings nothing.
    boxes = np.array([[0.1, 0.1, 0.4, 0.4], [0.5, 0.5, 0.9, 0.9]], np.float32)
    scores = np.array([[0.6, 0.01], [0.04, 0.03]], np.float32)
    raw = _raw_outputs(boxes, scores)
    d = postprocess_yolact(**raw, image_width=10, image_height=10, params=PostprocessParams(score_threshold=0.0))
    assert d.class_ids.tolist() == [0, 1] and np.allclose(d.scores, [0.6, 0.01])
    second = PostprocessParams(score_threshold=0.0, second_threshold=True)
    assert postprocess_yolact(**raw, image_width=10, image_height=10, params=second).class_ids.tolist() == [0]
    lower = PostprocessParams(score_threshold=0.0, candidate_threshold=0.035)
    assert len(postprocess_yolact(**raw, image_width=10, image_height=10, params=lower)) == 4


def test_nms_sees_unclipped_boxes_unless_clip_before_nms():
    # Two same-class boxes that overlap little as predicted (IoU 1/3) but fully once clipped
    # to the image: the official NMS keeps both, clipping first suppresses one.
    boxes = np.array([[0.5, 0.0, 1.0, 1.0], [0.5, 0.0, 2.0, 1.0]], np.float32)
    raw = _raw_outputs(boxes, [[0.9], [0.8]])
    assert len(postprocess_yolact(**raw, image_width=10, image_height=10)) == 2
    clipped = PostprocessParams(clip_before_nms=True)
    assert len(postprocess_yolact(**raw, image_width=10, image_height=10, params=clipped)) == 1


def test_huge_boxes_give_empty_or_whole_windows_not_garbage():
    boxes = np.array([[3e38, 3e38, 3.4e38, 3.4e38], [-3e38, -3e38, 3e38, 3e38]], np.float32)
    with np.errstate(over="ignore"):
        c0, c1, r0, r1 = proto_crop_windows(boxes, 10, 12)
    assert (c0.tolist(), c1.tolist(), r0.tolist(), r1.tolist()) == ([12, 0], [12, 12], [10, 0], [10, 10])
