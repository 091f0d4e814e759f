"""Where the node's CenterMask post-processing differs from centermask2 (see
docs/official_checkpoints.md, "CenterMask(-Lite) against centermask2")."""

from __future__ import annotations

import numpy as np

from seg_perception.core.postprocess import PostprocessParams, box_iou
from seg_perception.core.postprocess_roi import postprocess_roi


def _two_overlapping_detections() -> dict[str, np.ndarray]:
    # Same class, IoU 0.55: centermask2's own NMS (greedy, 0.6, in the graph) keeps both.
    boxes = np.array([[0.10, 0.10, 0.50, 0.50], [0.216, 0.10, 0.616, 0.50]], np.float32)
    assert 0.5 < box_iou(boxes[:1], boxes[1:])[0, 0] <= 0.6
    return {"boxes": boxes, "scores": np.array([0.9, 0.8], np.float32), "classes": np.zeros(2, np.float32),
            "masks": np.ones((2, 28, 28), np.float32)}


def test_the_default_node_nms_threshold_suppresses_what_centermask2_keeps():
    raw = _two_overlapping_detections()
    default = postprocess_roi(**raw, image_width=200, image_height=100, params=PostprocessParams())
    assert PostprocessParams().nms_iou_threshold == 0.5 and len(default) == 1


def test_an_nms_threshold_of_centermask2s_keeps_its_detections():
    raw = _two_overlapping_detections()
    same = postprocess_roi(**raw, image_width=200, image_height=100, params=PostprocessParams(nms_iou_threshold=0.6))
    assert len(same) == 2
    np.testing.assert_allclose(same.scores, [0.9, 0.8])
