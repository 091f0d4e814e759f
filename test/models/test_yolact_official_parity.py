"""Our YOLACT post-processing against outputs of the official dbolya/yolact code.

``test/data/yolact_official`` holds raw network outputs (border boxes, overlapping
classes, small boxes; base, R50, im700 and YOLACT++ configurations) and what the official
``Detect`` + ``postprocess`` made of them at three image sizes (see its SOURCE.md). No
official code runs here: the committed numbers are replayed through
``core.postprocess.postprocess_yolact`` with its default parameters.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from seg_perception.core.mask_rescoring import MaskIoURescorer
from seg_perception.core.postprocess import PostprocessParams, postprocess_yolact

DATA = Path(__file__).resolve().parents[1] / "data" / "yolact_official"
CONFIGS = ("base", "resnet50", "im700", "plus_resnet50")
SIZES = ((640, 480), (1280, 720), (375, 500))


def _load(config: str) -> tuple[dict[str, np.ndarray], dict]:
    with np.load(DATA / f"{config}_raw.npz", allow_pickle=False) as z:
        raw = {k: z[k] for k in z.files}
    return raw, json.loads((DATA / f"{config}_official.json").read_text())


def _result(official: dict, width: int, height: int) -> dict:
    (res,) = [r for r in official["results"] if (r["width"], r["height"]) == (width, height)]
    return res


def _rescorer(raw: dict[str, np.ndarray], tmp_path: Path) -> MaskIoURescorer | None:
    """The official MaskIoU weights of the data, through the loader the node uses."""
    arrays = {k[len("maskiou."):]: v for k, v in raw.items() if k.startswith("maskiou.")}
    if not arrays:
        return None
    path = tmp_path / "m.maskiou.npz"
    np.savez(path, **arrays)
    return MaskIoURescorer.load(path)


def _ours(raw: dict[str, np.ndarray], width: int, height: int, params: PostprocessParams, rescorer=None):
    return postprocess_yolact(raw["decoded_boxes"], raw["conf"][:, 1:], raw["mask_coeffs"],
                              raw["protos"].astype(np.float32), width, height, params, mask_rescorer=rescorer)


def _official_masks(res: dict) -> np.ndarray:
    from pycocotools import mask as mask_util

    h, w = res["height"], res["width"]
    if not res["masks_rle"]:
        return np.zeros((0, h, w), np.uint8)
    return mask_util.decode([{"size": [h, w], "counts": c} for c in res["masks_rle"]]).transpose(2, 0, 1)


def _mask_ious(dets, official_masks: np.ndarray, height: int, width: int) -> np.ndarray:
    ious = []
    for m, o in zip(dets.masks, official_masks):
        f, o = m.to_full(height, width).astype(bool), o.astype(bool)
        union = (f | o).sum()
        ious.append(1.0 if union == 0 else (f & o).sum() / union)
    return np.array(ious)


def test_reference_data_exercises_borders_small_boxes_and_low_scoring_classes():
    border = small = low = 0
    for config in CONFIGS:
        raw, official = _load(config)
        boxes, scores = raw["det_boxes"], raw["det_scores"]
        border += int(((boxes < 0) | (boxes > 1)).any(axis=1).sum())
        small += int((((boxes[:, 2] - boxes[:, 0]) * 640) < 16).sum())
        # Kept although below the 0.05 candidate threshold (official second_threshold=False).
        low += int((scores <= 0.05).sum())
    assert border >= 50 and small >= 20 and low >= 20, (border, small, low)


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_default_postprocessing_reproduces_the_official_detections_and_masks(config, size, tmp_path):
    raw, official = _load(config)
    width, height = size
    res = _result(official, width, height)
    # The official COCO evaluation: score threshold 0, 100 detections per image.
    dets = _ours(raw, width, height, PostprocessParams(score_threshold=0.0))
    assert len(dets) == len(res["classes"]) == 100
    np.testing.assert_array_equal(dets.class_ids, res["classes"])
    np.testing.assert_allclose(dets.scores, res["box_scores"], rtol=0, atol=1e-6)
    # Boxes: the official ones clipped to the image (kept as float here); the official
    # integer boxes are their truncation.
    scale = np.array([width, height, width, height], np.float32)
    expected = np.clip(raw["det_boxes"] * scale, 0, scale)
    np.testing.assert_allclose(dets.boxes, expected, rtol=0, atol=1e-3)
    ints = np.array(res["boxes_int"], np.float64)
    inside = (ints >= 0) & (ints <= scale)
    assert np.all((dets.boxes[inside] >= ints[inside] - 1e-3) & (dets.boxes[inside] < ints[inside] + 1 + 1e-3))
    ious = _mask_ious(dets, _official_masks(res), height, width)
    assert ious.min() >= 0.99, (config, size, ious.min())
    assert np.mean(ious == 1.0) >= 0.95  # nearly all pixel-exact; the rest differ by float rounding

    rescorer = _rescorer(raw, tmp_path)
    if rescorer is not None:
        # YOLACT++ (the official display path, rescore_bbox): class score x predicted
        # mask IoU, re-sorted; the official COCO mask scores.
        rescored = _ours(raw, width, height, PostprocessParams(score_threshold=0.0), rescorer)
        mask_scores = np.array(res["mask_scores"])
        order = np.argsort(-mask_scores, kind="stable")
        np.testing.assert_array_equal(rescored.class_ids, np.array(res["classes"])[order])
        np.testing.assert_allclose(rescored.scores, mask_scores[order], rtol=0, atol=1e-5)


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("threshold", (0.03, 0.05, 0.3, 0.5))
def test_a_score_threshold_keeps_exactly_the_official_detections_above_it(config, threshold):
    # The official postprocess(score_threshold=t) filters Detect's output after NMS; we
    # drop low pairs before NMS (cheaper), which must not change the result.
    raw, official = _load(config)
    res = _result(official, 640, 480)
    keep = np.array(res["box_scores"]) > threshold
    dets = _ours(raw, 640, 480, PostprocessParams(score_threshold=threshold))
    np.testing.assert_array_equal(dets.class_ids, np.array(res["classes"])[keep])
    np.testing.assert_allclose(dets.scores, np.array(res["box_scores"])[keep], rtol=0, atol=1e-6)
    ious = _mask_ious(dets, _official_masks(res)[keep], 480, 640)
    assert ious.size == 0 or ious.min() >= 0.99


def test_the_deviation_switches_change_what_they_say_and_are_off_by_default():
    defaults = PostprocessParams()
    assert not (defaults.clip_before_nms or defaults.box_region_masks or defaults.second_threshold)
    assert defaults.candidate_threshold == 0.05
    raw, official = _load("base")
    res = _result(official, 640, 480)
    official_keys = list(zip(res["classes"], np.round(res["box_scores"], 6)))
    # Clipping before NMS changes which border boxes survive.
    clipped = _ours(raw, 640, 480, PostprocessParams(score_threshold=0.0, clip_before_nms=True))
    assert list(zip(clipped.class_ids, np.round(clipped.scores, 6))) != official_keys
    # Box-region masks end at the box; the official ones reach beyond it.
    boxed = _ours(raw, 640, 480, PostprocessParams(score_threshold=0.0, box_region_masks=True))
    np.testing.assert_array_equal(boxed.class_ids, res["classes"])
    ious = _mask_ious(boxed, _official_masks(res), 480, 640)
    assert ious.mean() < 0.95
    for box, m in zip(boxed.boxes, boxed.masks):
        assert m.x <= box[0] + 1e-3 and box[2] <= m.x + m.width + 1e-3
        assert m.x + m.width - 1 < box[2] + 1e-3
    # second_threshold drops the kept detections scoring at or below the candidate threshold.
    second = _ours(raw, 640, 480, PostprocessParams(score_threshold=0.0, second_threshold=True))
    assert np.all(second.scores > 0.05)


@pytest.mark.parametrize("config", CONFIGS)
def test_our_box_decoding_equals_the_official_decode(config):
    torch = pytest.importorskip("torch")
    from seg_perception.models.box_coder import decode_boxes

    raw, _ = _load(config)
    ours = decode_boxes(torch.from_numpy(raw["loc"]), torch.from_numpy(raw["priors"])).numpy()
    np.testing.assert_allclose(ours, raw["decoded_boxes"], rtol=0, atol=1e-6)
