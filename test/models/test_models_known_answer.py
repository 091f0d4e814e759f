"""The known-answer model: a real ONNX graph whose outputs (and final masks) are known exactly."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from seg_perception.core.metadata import ModelMetadata, metadata_path_for  # noqa: E402
from seg_perception.core.postprocess import PostprocessParams, postprocess_yolact_batch  # noqa: E402
from seg_perception.models import known_answer as ka  # noqa: E402
from seg_perception.runtime.onnxruntime_backend import OnnxRuntimeBackend  # noqa: E402

H, W = ka.INPUT_HEIGHT, ka.INPUT_WIDTH


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    path = ka.write_known_answer_model(tmp_path_factory.mktemp("known_answer"))
    return OnnxRuntimeBackend(path, threads=1)


def image_with_bright_cell(row: int, col: int, base: int = 40) -> np.ndarray:
    img = np.full((1, H, W, 3), base, np.uint8)
    ch, cw = H // 4, W // 4
    img[0, row * ch:(row + 1) * ch, col * cw:(col + 1) * cw] = 230
    return img


def test_writes_onnx_and_metadata_with_classes_keypoints_and_skeleton(tmp_path):
    path = ka.write_known_answer_model(tmp_path, name="ka")
    assert path == tmp_path / "ka.onnx" and path.is_file()
    md = ModelMetadata.load(metadata_path_for(path))
    assert md.class_names == ["person", "bottle", "cup"]
    assert md.keypoint_names == ka.KEYPOINT_NAMES and md.skeleton == ka.SKELETON
    assert (md.input_width, md.input_height, md.num_prototypes) == (160, 120, 2)


@pytest.mark.parametrize("seed", [0, 1])
def test_graph_outputs_equal_the_numpy_reference(backend, seed):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (1, H, W, 3), dtype=np.uint8)
    got = backend.infer(img)
    want = ka.expected_outputs(img)
    assert set(got) == set(want)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("row, col", [(0, 0), (1, 2), (3, 3)])
def test_first_detection_follows_the_brightest_cell(backend, row, col):
    out = backend.infer(image_with_bright_cell(row, col))
    np.testing.assert_array_equal(out["boxes"][0, 0], [col / 4, row / 4, (col + 1) / 4, (row + 1) / 4])


def test_score_tells_frames_apart_by_mean_intensity(backend):
    dark = backend.infer(np.full((1, H, W, 3), 10, np.uint8))["scores"][0, 0, 0]
    bright = backend.infer(np.full((1, H, W, 3), 200, np.uint8))["scores"][0, 0, 0]
    assert dark == pytest.approx(0.5 + 0.49 * 10 / 255, abs=1e-6)
    assert bright == pytest.approx(0.5 + 0.49 * 200 / 255, abs=1e-6)


def test_postprocessing_yields_the_exact_rectangle_and_ellipse(backend):
    img = image_with_bright_cell(2, 1)
    (dets,) = postprocess_yolact_batch(backend.infer(img), [(W, H)], PostprocessParams(score_threshold=0.3))
    assert len(dets) == 2
    # Highest score first: the fixed "bottle" (0.9) then the "person" on the bright cell.
    assert dets.class_ids.tolist() == [1, 0]
    np.testing.assert_array_equal(dets.boxes[0], [80, 30, 140, 90])
    np.testing.assert_array_equal(dets.boxes[1], [40, 60, 80, 90])
    ellipse = dets.masks[0].to_full(H, W)
    np.testing.assert_array_equal(ellipse, ka.ellipse_mask())
    rectangle = np.zeros((H, W), np.uint8)
    rectangle[60:90, 40:80] = 1
    # The official YOLACT crop keeps one prototype pixel of padding around the box before
    # upsampling, so the rectangle's mask may reach beyond the box, never past the padding.
    official = dets.masks[1].to_full(H, W)
    assert np.all(official[60:90, 40:80] == 1)
    ys, xs = np.nonzero(official)
    pad_x, pad_y = W / raw_proto_width(backend), H / raw_proto_height(backend)
    assert xs.min() >= 40 - pad_x and xs.max() < 80 + pad_x and ys.min() >= 60 - pad_y and ys.max() < 90 + pad_y
    # The box_region_masks deviation cuts it to the box: the exact rectangle.
    (boxed,) = postprocess_yolact_batch(backend.infer(img), [(W, H)],
                                        PostprocessParams(score_threshold=0.3, box_region_masks=True))
    np.testing.assert_array_equal(boxed.masks[1].to_full(H, W), rectangle)
    np.testing.assert_allclose(dets.keypoints[0, :, :2], [[80, 30], [140, 30], [140, 90], [80, 90], [110, 60]])
    np.testing.assert_array_equal(dets.keypoints[0, :, 2], [1, 1, 1, 1, 0])


def raw_proto_width(backend) -> int:
    return int(backend.infer(image_with_bright_cell(0, 0))["protos"].shape[2])


def raw_proto_height(backend) -> int:
    return int(backend.infer(image_with_bright_cell(0, 0))["protos"].shape[1])


def test_ellipse_is_inscribed_in_the_known_box():
    mask = ka.ellipse_mask()
    ys, xs = np.nonzero(mask)
    assert (xs.min(), xs.max() + 1, ys.min(), ys.max() + 1) == (80, 140, 30, 90)
    assert mask[60, 110] == 1 and mask[30, 80] == 0


def test_batched_input_is_answered_per_image(backend):
    imgs = np.concatenate([image_with_bright_cell(0, 3), image_with_bright_cell(3, 0)])
    out = backend.infer(imgs)  # the graph has a static batch of 1; the backend loops
    np.testing.assert_array_equal(out["boxes"][:, 0], [[0.75, 0, 1, 0.25], [0, 0.75, 0.25, 1]])
