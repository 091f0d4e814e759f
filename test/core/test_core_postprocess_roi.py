"""Box-first post-processing (``ROI_OUTPUTS``): thresholds, NMS, mask pasting, keypoint decoding."""

from __future__ import annotations

import math

import numpy as np
import pytest

from seg_perception.core.keypoints import class_keypoint_table
from seg_perception.core.metadata import ROI_OUTPUTS, ModelMetadata, output_names_for, output_trailing_dims
from seg_perception.core.postprocess import PostprocessParams
from seg_perception.core.postprocess_roi import (
    heatmaps_to_keypoints,
    paste_masks,
    postprocess_roi,
    postprocess_roi_batch,
)


def raw(d: int = 4, m: int = 28, k: int = 0) -> dict[str, np.ndarray]:
    """Raw outputs of D detections: all-foreground masks, heatmaps peaking at a known cell."""
    boxes = np.array([[0.1, 0.1, 0.4, 0.5], [0.5, 0.5, 0.9, 0.8], [0.12, 0.1, 0.42, 0.5], [0.0, 0.0, 0.0, 0.0]],
                     np.float32)[:d]
    out = {
        "boxes": boxes,
        "scores": np.array([0.9, 0.6, 0.8, 0.0], np.float32)[:d],  # row 3 is padding
        "classes": np.array([0, 1, 0, 0], np.float32)[:d],
        "masks": np.full((d, m, m), 0.9, np.float32),
    }
    if k:
        hm = np.full((d, k, 56, 56), -5.0, np.float32)
        hm[:, :, 10, 40] = 5.0  # peak at column 40, row 10 of each heatmap
        out["keypoint_heatmaps"] = hm
    return out


def test_metadata_knows_both_output_contracts():
    md = ModelMetadata("m", "centermask_lite_vovnet19_slim", ["a", "b"], 64, 64, ["k"], output_format="roi",
                       num_prototypes=0)
    assert output_names_for(md) == list(ROI_OUTPUTS)
    assert output_trailing_dims(md)["keypoint_heatmaps"] == [1, None, None]
    yolact = ModelMetadata("m", "yolact_resnet18", ["a"], 64, 64)
    assert output_names_for(yolact) == ["boxes", "scores", "mask_coeffs", "protos"]
    with pytest.raises(ValueError, match="unknown output_format 'boxes'"):
        ModelMetadata("m", "x", ["a"], 64, 64, output_format="boxes")


def test_padding_rows_and_low_scores_are_dropped_and_overlaps_suppressed():
    r = raw()
    d = postprocess_roi(r["boxes"], r["scores"], r["classes"], r["masks"], 200, 100,
                        PostprocessParams(score_threshold=0.5, nms_iou_threshold=0.5))
    # Row 2 overlaps row 0 (same class, IoU ~0.87) and scores lower: suppressed.
    np.testing.assert_allclose(d.scores, [0.9, 0.6])
    np.testing.assert_array_equal(d.class_ids, [0, 1])
    np.testing.assert_allclose(d.boxes, [[20, 10, 80, 50], [100, 50, 180, 80]], atol=1e-4)
    loose = postprocess_roi(r["boxes"], r["scores"], r["classes"], r["masks"], 200, 100,
                            PostprocessParams(score_threshold=0.5, nms_iou_threshold=0.95, max_detections=2))
    np.testing.assert_allclose(loose.scores, [0.9, 0.8])  # looser NMS keeps it, max_detections cuts


def test_all_foreground_masks_fill_exactly_their_box_region():
    r = raw(2)
    d = postprocess_roi(r["boxes"], r["scores"], r["classes"], r["masks"], 200, 100)
    for box, mask in zip(d.boxes, d.masks):
        x0, y0, x1, y1 = np.round(box).astype(int)
        assert (mask.x, mask.y, mask.width, mask.height) == (x0, y0, x1 - x0, y1 - y0)
        assert mask.data.all()


def test_masks_are_pasted_into_the_unclipped_box_then_cut_to_the_image():
    # Box half outside the image on the left; the grid's left half is background.
    grid = np.zeros((1, 28, 28), np.float32)
    grid[:, :, 14:] = 1.0
    (mask,) = paste_masks(grid, np.array([[-50.0, 0.0, 50.0, 40.0]]), 100, 40)
    assert (mask.x, mask.y, mask.width, mask.height) == (0, 0, 50, 40)
    assert mask.data.all()  # the visible half is the foreground half, not a squeezed copy


def test_paste_masks_matches_detectron2_grid_sample_pasting():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    grids = rng.random((3, 28, 28)).astype(np.float32)
    boxes = np.array([[10.3, 20.7, 70.2, 61.1], [-5.0, -8.0, 30.0, 25.0], [50.0, 40.0, 130.0, 95.0]])
    w, h = 100, 80
    # detectron2's _do_paste_mask: grid_sample over the whole image, align_corners=False.
    b = torch.from_numpy(boxes).float()
    ys, xs = torch.arange(h).float() + 0.5, torch.arange(w).float() + 0.5
    gy = (ys - b[:, 1:2]) / (b[:, 3:4] - b[:, 1:2]) * 2 - 1
    gx = (xs - b[:, 0:1]) / (b[:, 2:3] - b[:, 0:1]) * 2 - 1
    grid = torch.stack([gx[:, None, :].expand(3, h, w), gy[:, :, None].expand(3, h, w)], dim=3)
    ref = torch.nn.functional.grid_sample(torch.from_numpy(grids)[:, None], grid, align_corners=False)[:, 0] > 0.5
    for ours, expected in zip(paste_masks(grids, boxes, w, h, 0.5), ref.numpy()):
        np.testing.assert_array_equal(ours.to_full(h, w).astype(bool), expected)


def test_keypoints_are_decoded_at_the_heatmap_peak_with_detectron2_geometry():
    hm = np.full((1, 2, 56, 56), -5.0, np.float32)
    hm[0, 0, 10, 40] = 5.0
    hm[0, 1, 55, 0] = 5.0
    box = np.array([[20.0, 30.0, 132.0, 142.0]])  # 112 px: two pixels per heatmap cell
    kps = heatmaps_to_keypoints(hm, box)
    # Bicubic upsampling to 112 x 112 keeps the peak at cell (40, 10) -> pixel column 80 or 81.
    assert 20 + 80 <= kps[0, 0, 0] <= 20 + 82 and 30 + 20 <= kps[0, 0, 1] <= 30 + 22
    assert kps[0, 1, 0] < 20 + 2 and kps[0, 1, 1] > 142 - 2
    assert 0 < kps[0, 0, 2] <= 1  # spatial softmax at the peak, normalised over the 56 x 56 map


def test_keypoint_decoding_matches_a_torch_bicubic_reference():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    hm = rng.standard_normal((2, 5, 56, 56)).astype(np.float32)
    boxes = np.array([[10.2, 5.5, 60.7, 90.1], [0.0, 0.0, 20.0, 30.0]])
    kps = heatmaps_to_keypoints(hm, boxes)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        bw, bh = max(x1 - x0, 1), max(y1 - y0, 1)
        wc, hc = math.ceil(bw), math.ceil(bh)
        roi = torch.nn.functional.interpolate(torch.from_numpy(hm[[i]]), size=(hc, wc), mode="bicubic",
                                              align_corners=False)[0].reshape(5, -1)
        pos = roi.argmax(1).numpy()
        np.testing.assert_allclose(kps[i, :, 0], (pos % wc + 0.5) * bw / wc + x0, atol=1e-4)
        np.testing.assert_allclose(kps[i, :, 1], (pos // wc + 0.5) * bh / hc + y0, atol=1e-4)
        peak = roi.max(1).values.numpy()
        np.testing.assert_allclose(kps[i, :, 2], 1 / np.exp(hm[i] - peak[:, None, None]).sum((1, 2)), rtol=1e-4)


def test_keypoints_decoded_at_network_resolution_land_in_source_pixels():
    r = raw(2, k=3)
    d = postprocess_roi(r["boxes"], r["scores"], r["classes"], r["masks"], 640, 480,
                        keypoint_heatmaps=r["keypoint_heatmaps"], network_size=(320, 240))
    assert d.keypoints.shape == (2, 3, 3)
    # Peak at cell (40, 10) of 56: 40.5 / 56 of the box width from its left edge.
    x_expected = (0.1 + 0.3 * 40.5 / 56) * 640
    y_expected = (0.1 + 0.4 * 10.5 / 56) * 480
    assert abs(d.keypoints[0, 0, 0] - x_expected) < 640 / 320 * 1.5
    assert abs(d.keypoints[0, 0, 1] - y_expected) < 480 / 240 * 1.5


def test_keypoints_a_class_does_not_use_get_score_zero():
    r = raw(2, k=2)
    table = class_keypoint_table(["a", "b"], 2, {"b": [1]})
    d = postprocess_roi(r["boxes"], r["scores"], r["classes"], r["masks"], 100, 100,
                        keypoint_heatmaps=r["keypoint_heatmaps"], keypoint_table=table)
    assert d.class_ids.tolist() == [0, 1]
    assert (d.keypoints[0, :, 2] > 0).all() and d.keypoints[1, 0, 2] == 0 and d.keypoints[1, 1, 2] > 0


def test_nothing_above_threshold_gives_empty_detections_with_the_keypoint_count():
    r = raw(k=4)
    d = postprocess_roi(r["boxes"], r["scores"] * 0, r["classes"], r["masks"], 100, 100,
                        keypoint_heatmaps=r["keypoint_heatmaps"])
    assert len(d) == 0 and d.keypoints.shape == (0, 4, 3)


def test_batches_and_bad_shapes_are_reported():
    r = raw()
    batch = {k: v[None] for k, v in r.items()}
    (d,) = postprocess_roi_batch(batch, [(200, 100)], PostprocessParams(score_threshold=0.5))
    assert len(d) == 2
    with pytest.raises(ValueError, match=r"raw outputs lack \['masks'\]"):
        postprocess_roi_batch({k: v for k, v in batch.items() if k != "masks"}, [(200, 100)])
    with pytest.raises(ValueError, match=r"masks must be \(D=4, M, M\)"):
        postprocess_roi(r["boxes"], r["scores"], r["classes"], r["masks"][:2], 100, 100)
