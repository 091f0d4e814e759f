"""Backends with box-first (``output_format == "roi"``) models: outputs, checks, torch == ONNX Runtime."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from support.models_testlib import limit_torch_threads  # noqa: E402
from support.parity_testlib import CLASSES, KEYPOINTS, small_centermask  # noqa: E402

from seg_perception.core.metadata import ROI_OUTPUTS, ModelMetadata, metadata_path_for  # noqa: E402
from seg_perception.models.checkpoint import save_checkpoint  # noqa: E402
from seg_perception.models.export import export_onnx, metadata_for_model  # noqa: E402
from seg_perception.runtime.base import BackendError  # noqa: E402
from seg_perception.runtime.onnxruntime_backend import OnnxRuntimeBackend  # noqa: E402
from seg_perception.runtime.torch_backend import TorchBackend  # noqa: E402

limit_torch_threads()
SIZE = 64


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A small CenterMask-Lite with keypoints: (onnx path, our checkpoint path), weights random, seeded."""
    root = tmp_path_factory.mktemp("roi")
    model = small_centermask("centermask_lite_vovnet19_slim_dw", SIZE, detections_per_image=8,
                             num_keypoints=len(KEYPOINTS), keypoint_conv_dims=[32])
    metadata = metadata_for_model(model, "lite", CLASSES, KEYPOINTS)
    onnx_path = export_onnx(model, metadata, root / "lite.onnx")
    ckpt = save_checkpoint(model, root / "lite_torch.pth")
    metadata.save(metadata_path_for(ckpt))
    return onnx_path, ckpt


@pytest.fixture(scope="module")
def batch():
    return np.random.default_rng(3).integers(0, 256, (1, SIZE, SIZE, 3), np.uint8)


def test_onnxruntime_returns_the_roi_contract(exported, batch):
    out = OnnxRuntimeBackend(exported[0], threads=2).infer(batch)
    assert list(out) == list(ROI_OUTPUTS)
    assert out["masks"].shape == (1, 8, 28, 28) and out["keypoint_heatmaps"].shape == (1, 8, 3, 56, 56)
    assert all(v.dtype == np.float32 for v in out.values())


def test_torch_backend_rebuilds_centermask_from_our_checkpoint_and_agrees(exported, batch):
    onnx_path, ckpt = exported
    a = TorchBackend(ckpt, device="cpu").infer(batch)
    b = OnnxRuntimeBackend(onnx_path, threads=2).infer(batch)
    real = int((a["scores"][0] > 0).sum())
    assert real > 0
    for name in ROI_OUTPUTS:
        np.testing.assert_allclose(a[name][0, :real], b[name][0, :real], rtol=1e-3, atol=1e-3, err_msg=name)


def test_a_bare_centermask2_state_dict_is_rebuilt_from_the_metadata(exported, tmp_path):
    _, ckpt = exported
    model = small_centermask("centermask_lite_vovnet19_slim_dw", SIZE)  # architecture defaults, no keypoints
    bare = tmp_path / "model_final.pth"
    torch.save({"model": model.state_dict(), "iteration": 1}, bare)
    md = ModelMetadata.load(metadata_path_for(ckpt))
    md.keypoint_names, md.skeleton = [], []
    md.save(metadata_path_for(bare))
    backend = TorchBackend(bare, device="cpu")  # strict load of the rebuilt network
    assert backend.module.model.detections_per_image == 50  # the architecture's default
    assert backend.output_names == ["boxes", "scores", "classes", "masks"]


def test_metadata_that_disagrees_with_the_graph_is_refused(exported, tmp_path):
    onnx_path, _ = exported
    copy = tmp_path / "copy.onnx"
    shutil.copy(onnx_path, copy)
    md = ModelMetadata.load(metadata_path_for(onnx_path))
    md.keypoint_names = ["only_one"]
    md.save(metadata_path_for(copy))
    with pytest.raises(BackendError, match=r"output 'keypoint_heatmaps' has shape \[1, 8, 3, 56, 56\], "
                                           r"metadata implies \[\.\.\., 1, \*, \*\]"):
        OnnxRuntimeBackend(copy)
    md.keypoint_names, md.output_format = [], "yolact"
    md.save(metadata_path_for(copy))
    with pytest.raises(BackendError, match=r"missing outputs \['mask_coeffs', 'protos'\]"):
        OnnxRuntimeBackend(copy)
