"""ONNX export: contract-shaped graph, metadata beside it, and parity with PyTorch.

The model here has random weights (seeded, see ``models_testlib.small_yolact``): the
tests compare two executions of the same network, so accuracy does not matter, but
the inputs are real camera frames so activations have realistic statistics.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from support.models_testlib import (  # noqa: E402
    SMALL_CLASSES,
    SMALL_INPUT,
    exported_small_model,
    hsr_frames,
    limit_torch_threads,
    mask_iou,
    small_metadata,
    small_yolact,
)

from seg_perception.core.metadata import INPUT_NAME, ModelMetadata, metadata_path_for  # noqa: E402
from seg_perception.core.postprocess import PostprocessParams, postprocess_yolact_batch  # noqa: E402
from seg_perception.core.preprocess import resize_for_network  # noqa: E402
from seg_perception.models.export import METADATA_PROP_KEY, export_onnx  # noqa: E402
from seg_perception.models.transform import ImageInputModel  # noqa: E402

limit_torch_threads()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    onnx_path, _ = exported_small_model(tmp_path_factory.getbasetemp())
    return onnx_path


@pytest.fixture(scope="module")
def torch_reference():
    model = small_yolact()
    metadata = small_metadata(model)
    return ImageInputModel(model, metadata.mean, metadata.std).eval()


@pytest.fixture(scope="module")
def session(exported):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(exported), options, providers=["CPUExecutionProvider"])


def run_both(session, torch_reference, batch: np.ndarray) -> tuple[dict, dict]:
    names = torch_reference.output_names
    onnx_out = dict(zip(names, session.run(names, {INPUT_NAME: batch})))
    with torch.no_grad():
        torch_out = {n: t.numpy() for n, t in zip(names, torch_reference(torch.from_numpy(batch)))}
    return onnx_out, torch_out


def test_graph_passes_the_checker_and_has_the_contract_signature(exported):
    graph = onnx.load(str(exported))
    onnx.checker.check_model(graph, full_check=True)
    (inp,) = graph.graph.input
    assert inp.name == INPUT_NAME
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim] == [1, SMALL_INPUT, SMALL_INPUT, 3]
    assert [o.name for o in graph.graph.output] == ["boxes", "scores", "mask_coeffs", "protos", "keypoints"]
    assert graph.opset_import[0].version == 17


def test_metadata_is_written_beside_the_graph_and_embedded_in_it(exported):
    sidecar = metadata_path_for(exported)
    metadata = ModelMetadata.load(sidecar)
    assert metadata.class_names == SMALL_CLASSES
    assert (metadata.input_width, metadata.input_height) == (SMALL_INPUT, SMALL_INPUT)
    assert metadata.architecture == "yolact_resnet18" and metadata.num_prototypes == 32
    props = {p.key: p.value for p in onnx.load(str(exported)).metadata_props}
    assert json.loads(props[METADATA_PROP_KEY]) == json.loads(sidecar.read_text())


def test_export_refuses_metadata_that_disagrees_with_the_model(tmp_path):
    model = small_yolact()
    metadata = small_metadata(model)
    metadata.class_names = ["only_one"]
    with pytest.raises(ValueError, match="num_classes=3, metadata says 1"):
        export_onnx(model, metadata, tmp_path / "bad.onnx")
    assert not (tmp_path / "bad.onnx").exists()


def test_dynamic_batch_export_runs_two_images_at_once(tmp_path):
    model = small_yolact()
    path = export_onnx(model, small_metadata(model), tmp_path / "dyn.onnx", dynamic_batch=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = np.random.default_rng(0).integers(0, 256, (2, SMALL_INPUT, SMALL_INPUT, 3), dtype=np.uint8)
    boxes, scores = sess.run(["boxes", "scores"], {INPUT_NAME: batch})
    single = sess.run(["scores"], {INPUT_NAME: batch[1:]})[0]
    assert boxes.shape[0] == 2
    np.testing.assert_allclose(scores[1:], single, atol=1e-5)


def real_batches():
    frames = hsr_frames()
    if not frames:
        pytest.skip("hsr_people recording not available (/work/shared absent)")
    return [(f, resize_for_network(f, SMALL_INPUT, SMALL_INPUT)) for f in frames[:3]]


def threshold_in_a_gap(scores: np.ndarray, keep: int = 20) -> float:
    """A score threshold half-way between the keep-th and (keep+1)-th best prior scores.

    Makes "same detections" a well-posed question: no candidate sits within float
    noise of the threshold.
    """
    best = np.sort(scores.max(axis=-1).ravel())[::-1]
    return float((best[keep - 1] + best[keep]) / 2)


def test_onnxruntime_matches_pytorch_on_real_frames(session, torch_reference):
    for _, batch in real_batches():
        onnx_out, torch_out = run_both(session, torch_reference, batch)
        for name in torch_out:
            np.testing.assert_allclose(onnx_out[name], torch_out[name], rtol=1e-4, atol=1e-4, err_msg=name)


def test_postprocessed_detections_agree_between_onnxruntime_and_pytorch(session, torch_reference):
    for frame, batch in real_batches():
        h, w = frame.shape[:2]
        onnx_out, torch_out = run_both(session, torch_reference, batch)
        params = PostprocessParams(score_threshold=threshold_in_a_gap(torch_out["scores"]))
        (a,) = postprocess_yolact_batch(onnx_out, [(w, h)], params)
        (b,) = postprocess_yolact_batch(torch_out, [(w, h)], params)
        assert len(a) == len(b) > 0
        np.testing.assert_array_equal(a.class_ids, b.class_ids)
        assert np.abs(a.boxes - b.boxes).max() < 0.5  # source pixels
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
        np.testing.assert_allclose(a.keypoints, b.keypoints, atol=0.5)
        for ma, mb in zip(a.masks, b.masks):
            assert mask_iou(ma, mb, w, h) >= 0.99


def test_onnxruntime_matches_pytorch_on_skimage_samples(session, torch_reference):
    data = pytest.importorskip("skimage.data", reason="scikit-image not installed")
    for image in (data.astronaut(), data.coffee(), data.chelsea()):
        batch = resize_for_network(np.ascontiguousarray(image[..., :3]), SMALL_INPUT, SMALL_INPUT)
        onnx_out, torch_out = run_both(session, torch_reference, batch)
        for name in torch_out:
            np.testing.assert_allclose(onnx_out[name], torch_out[name], rtol=1e-4, atol=1e-4, err_msg=name)
