"""Priors and box coding: the anchors and encodings of the official YOLACT."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from seg_perception.models.backbones import resnet_backbone, resnet_feature_size  # noqa: E402
from seg_perception.models.box_coder import (  # noqa: E402
    decode_boxes,
    decode_keypoints,
    encode_boxes,
    encode_keypoints,
)
from seg_perception.models.priors import (  # noqa: E402
    BASE_ASPECT_RATIOS,
    BASE_PRIOR_SCALES,
    make_priors,
    num_priors,
    scaled_prior_scales,
)

OFFICIAL_550_SIZES = [(69, 69), (35, 35), (18, 18), (9, 9), (5, 5)]


def official_priors_loop(conv_sizes, scales, aspect_ratios, max_size, square):
    """The official make_priors algorithm, one prior at a time, as the test oracle.

    For each cell (row-major), each scale, each aspect ratio: the centre is the cell
    centre, w = scale * sqrt(ar) / max_size, h = scale / sqrt(ar) / max_size, and with
    square anchors h = w (``use_pixel_scales=True``, ``preapply_sqrt=False``).
    """
    out = []
    for (conv_h, conv_w), level_scales in zip(conv_sizes, scales):
        for j in range(conv_h):
            for i in range(conv_w):
                x, y = (i + 0.5) / conv_w, (j + 0.5) / conv_h
                for scale in level_scales:
                    for ar in aspect_ratios:
                        w = scale * math.sqrt(ar) / max_size
                        h = scale / math.sqrt(ar) / max_size
                        out.append([x, y, w, w if square else h])
    return np.array(out, dtype=np.float64)


def test_feature_sizes_for_550_match_the_official_pyramid():
    assert [resnet_feature_size(550, s) for s in (8, 16, 32, 64, 128)] == [69, 35, 18, 9, 5]


def test_prior_count_for_550_is_19248():
    scales = [[s] for s in BASE_PRIOR_SCALES]
    priors = make_priors(OFFICIAL_550_SIZES, (550, 550), scales)
    assert priors.shape == (19248, 4)
    assert priors.dtype == torch.float32
    assert num_priors(OFFICIAL_550_SIZES, scales, BASE_ASPECT_RATIOS) == 3 * (69**2 + 35**2 + 18**2 + 9**2 + 5**2)


@pytest.mark.parametrize("square", [True, False])
def test_priors_equal_the_official_loop_in_value_and_order(square):
    scales = [[s] for s in BASE_PRIOR_SCALES]
    ours = make_priors(OFFICIAL_550_SIZES, (550, 550), scales, use_square_anchors=square).numpy()
    reference = official_priors_loop(OFFICIAL_550_SIZES, scales, BASE_ASPECT_RATIOS, 550, square)
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-7)


def test_square_anchors_have_equal_width_and_height_and_three_sizes():
    priors = make_priors([(2, 2)], (550, 550), [[24.0]], use_square_anchors=True).numpy()
    assert np.array_equal(priors[:, 2], priors[:, 3])
    np.testing.assert_allclose(priors[:3, 2] * 550, [24, 24 * math.sqrt(0.5), 24 * math.sqrt(2)], rtol=1e-6)


def test_several_scales_per_level_come_scale_major_then_aspect_ratio():
    scales = [[24.0, 30.0]]
    ours = make_priors([(3, 2)], (550, 550), scales, use_square_anchors=False).numpy()
    reference = official_priors_loop([(3, 2)], scales, BASE_ASPECT_RATIOS, 550, False)
    np.testing.assert_allclose(ours, reference, atol=1e-7)


def test_non_square_input_keeps_anchors_square_in_pixels():
    priors = make_priors([(4, 5)], (300, 400), [[60.0]], use_square_anchors=True).numpy()
    np.testing.assert_allclose(priors[:, 2] * 400, priors[:, 3] * 300, rtol=1e-6)
    np.testing.assert_allclose(priors[0, :2], [0.1, 0.125])  # first cell centre (x, y)


def test_scales_follow_the_input_size_like_the_official_im700_config():
    assert scaled_prior_scales(700) == (30.0, 61.0, 122.0, 244.0, 488.0)
    assert scaled_prior_scales(550) == BASE_PRIOR_SCALES


def test_feature_size_formula_matches_a_real_resnet_forward():
    torch.set_num_threads(2)
    trunk = resnet_backbone(18).eval()
    with torch.no_grad():
        feats = trunk(torch.zeros(1, 3, 100, 130))
    for f, stride in zip(feats, (4, 8, 16, 32)):
        assert tuple(f.shape[-2:]) == (resnet_feature_size(100, stride), resnet_feature_size(130, stride))


def test_box_decoding_uses_variances_point_one_and_point_two():
    priors = torch.tensor([[0.5, 0.5, 0.2, 0.4]])
    deltas = torch.tensor([[[1.0, -1.0, 0.0, math.log(2.0) / 0.2]]])
    box = decode_boxes(deltas, priors)[0, 0]
    # centre moves by 0.1 * prior size; height doubles by exp(0.2 * d)
    cx, cy, w, h = 0.5 + 0.1 * 0.2, 0.5 - 0.1 * 0.4, 0.2, 0.8
    torch.testing.assert_close(box, torch.tensor([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]))


def test_box_and_keypoint_encoding_round_trip():
    gen = torch.Generator().manual_seed(0)
    priors = torch.rand(50, 4, generator=gen) * 0.5 + 0.25
    boxes = torch.sort(torch.rand(50, 2, 2, generator=gen), dim=1).values.permute(0, 2, 1).reshape(50, 4)
    boxes = boxes[:, [0, 2, 1, 3]]  # x1, y1, x2, y2 with x1 < x2, y1 < y2
    torch.testing.assert_close(decode_boxes(encode_boxes(boxes, priors), priors), boxes, atol=1e-5, rtol=0)
    kps = torch.rand(50, 3, 2, generator=gen)
    raw = torch.cat([encode_keypoints(kps, priors), torch.zeros(50, 3, 1)], dim=-1)
    decoded = decode_keypoints(raw[None], priors)[0]
    torch.testing.assert_close(decoded[..., :2], kps, atol=1e-5, rtol=0)
    torch.testing.assert_close(decoded[..., 2], torch.full((50, 3), 0.5))
