"""The frame processor without DDS: what the node and offline regression both run per frame
(tracking threshold and publish rule, grasp points, 3D from depth), on the known-answer
ONNX model in ONNX Runtime; one model shared by two camera streams."""

from __future__ import annotations

import time

import numpy as np
import pytest

from seg_perception import params
from seg_perception.core.depth3d import CameraIntrinsics
from seg_perception.pipeline import FrameProcessor, SegmentationPipeline
from seg_perception.runtime.onnxruntime_backend import OnnxRuntimeBackend

pytest.importorskip("onnxruntime")

H, W = 120, 160  # the known-answer model's input size: no resampling of masks
STEP_NS = 66_666_667
K = CameraIntrinsics(fx=150.0, fy=150.0, cx=79.5, cy=59.5)


@pytest.fixture(scope="module")
def model(known_answer_model) -> SegmentationPipeline:
    pipeline = SegmentationPipeline(OnnxRuntimeBackend(known_answer_model, threads=1))
    yield pipeline
    pipeline.close()


def frame(cell: tuple[int, int] = (0, 0)) -> np.ndarray:
    """A dark image whose brightest 40 x 30 cell (the "person") is ``cell`` (col, row)."""
    rgb = np.full((H, W, 3), 20, np.uint8)
    col, row = cell
    rgb[row * 30:(row + 1) * 30, col * 40:(col + 1) * 40] = 200
    return rgb


def values(**changes) -> dict:
    return {**params.defaults(), **changes}


class Warnings:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def __call__(self, kind: str, message: str) -> None:
        self.seen.append((kind, message))

    def kinds(self) -> list[str]:
        return [k for k, _ in self.seen]


def test_track_ids_follow_the_publish_rule_and_each_camera_has_its_own_tracker(model):
    front, back = FrameProcessor(values()), FrameProcessor(values())
    front.attach(model)
    back.attach(model)  # one backend, two streams
    # The bottle (0.9) starts a track at once; the person (0.56, below tracking_new_track_score
    # 0.6) never does, and is published for its score (>= score_threshold 0.3) without an id.
    for i in range(3):
        dets = front.process(frame(), i * STEP_NS).detections
        assert dets.track_ids.tolist() == [1, 0] and dets.class_ids.tolist() == [1, 0]
    # The other camera's tracker gives its own first id, whatever the first one saw.
    assert back.process(frame((3, 3)), 0).detections.track_ids.tolist() == [1, 0]
    # Above both scores: the tracked bottle stays published, the untracked person does not...
    front.apply(values(score_threshold=0.95), {"score_threshold"})
    kept = front.process(frame(), 3 * STEP_NS).detections
    assert kept.track_ids.tolist() == [1] and kept.scores.tolist() == pytest.approx([0.9])
    # ...and a stream without tracking publishes nothing.
    untracked = FrameProcessor(values(score_threshold=0.95, tracking_enabled=False))
    untracked.attach(model)
    assert len(untracked.process(frame(), 0).detections) == 0
    # Letting go of the model does not close it: the other stream still runs.
    front.detach()
    assert back.process(frame((3, 3)), STEP_NS).detections.track_ids.tolist() == [1, 0]
    assert back.diagnostics()["tracking"] == "on" and front.diagnostics()["tracking"] == "off"


def test_grasp_points_and_3d_come_with_depth_and_intrinsics(model):
    processor = FrameProcessor(values(tracking_enabled=False, depth_min_points=5))
    processor.attach(model)
    result = processor.process(frame(), 0, np.full((H, W), 1.5, np.float32), K)
    assert result.grasp is not None and result.grasp.shape == (2, 3, 3)
    assert result.frame3d is not None and result.frame3d.instances.valid.all()
    np.testing.assert_allclose(result.frame3d.instances.centroids[:, 2], 1.5, atol=1e-3)
    assert processor.diagnostics()["frames_with_3d"] == "1"
    without = FrameProcessor(values(publish_grasp_keypoints=False))
    without.attach(model)
    assert without.process(frame(), 0).grasp is None


def test_grasp_points_come_after_the_instances_with_the_same_3d_as_in_one_pass(model):
    """The node publishes instances before the grasp points (detect, add_3d, publish,
    add_grasp): the grasp points and their 3D equal those of frame_3d given them at once."""
    from seg_perception.core.grasp import grasp_keypoints
    from seg_perception.pipeline.depth import frame_3d

    processor = FrameProcessor(values(tracking_enabled=False, depth_min_points=5))
    processor.attach(model)
    depth = np.full((H, W), 1.5, np.float32)
    result = processor.add_3d(processor.detect(processor.forward(frame()), 0), depth, K)
    assert result.grasp is None and result.frame3d.grasp.shape == (2, 0, 3)  # instances' 3D, no grasp yet
    result = processor.add_grasp(result)
    dets = result.detections
    grasp = grasp_keypoints(dets.masks).keypoints
    at_once = frame_3d(dets, depth, K, (H, W), processor.depth_params, grasp)
    np.testing.assert_array_equal(result.grasp, grasp)
    np.testing.assert_array_equal(result.frame3d.grasp_valid, at_once.grasp_valid)
    assert result.frame3d.grasp_valid.any()
    np.testing.assert_array_equal(result.frame3d.grasp, at_once.grasp)


@pytest.mark.parametrize("depth, intrinsics, says", [
    (np.full((H, W), np.nan, np.float32), K, "has no valid readings"),
    (np.full((H, H), 1.5, np.float32), K, "does not fit the colour image"),
    (np.full((H, W), 1.5, np.float32), None, "no usable camera_info"),
])
def test_depth_that_cannot_give_3d_is_reported_and_the_frame_still_published(model, depth, intrinsics, says):
    warn = Warnings()
    processor = FrameProcessor(values(), warn, depth_label="/cam/depth")
    processor.attach(model)
    result = processor.process(frame(), 0, depth, intrinsics)
    assert result.frame3d is None and len(result.detections) == 2
    assert warn.kinds() == ["depth"] and says in warn.seen[0][1] and "/cam/depth" in warn.seen[0][1]


def test_a_live_depth_stream_without_a_pair_is_reported_with_the_offset():
    warn = Warnings()
    processor = FrameProcessor(values(depth_sync_slop=0.01, depth_wait=0.0), warn)
    processor.depth.add(400_000_000, "depth")  # another clock, 0.4 s ahead
    assert processor.pair_depth(0, time.monotonic()) is None
    assert warn.kinds() == ["depth_sync"] and "+0.400 s" in warn.seen[0][1]
    processor.apply(values(depth_sync_slop=0.5), {"depth_sync_slop"})
    assert processor.pair_depth(0, time.monotonic()) == "depth"


def test_a_bad_parameter_combination_changes_nothing():
    processor = FrameProcessor(values())
    with pytest.raises(ValueError):
        processor.apply(values(depth_min=5.0, depth_max=1.0, score_threshold=0.9), {"depth_min", "score_threshold"})
    assert processor.values["score_threshold"] == 0.3 and processor.depth_params.max_depth == 10.0
    with pytest.raises(RuntimeError, match="attach"):
        processor.process(frame(), 0)
