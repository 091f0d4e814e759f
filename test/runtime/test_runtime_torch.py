"""PyTorch backend: rebuilds the network from a checkpoint and agrees with ONNX Runtime."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from support.models_testlib import SMALL_INPUT, exported_small_model, limit_torch_threads  # noqa: E402

from seg_perception.core.metadata import ModelMetadata, metadata_path_for  # noqa: E402
from seg_perception.models import yolact_resnet18  # noqa: E402
from seg_perception.runtime.base import BackendError  # noqa: E402
from seg_perception.runtime.onnxruntime_backend import OnnxRuntimeBackend  # noqa: E402
from seg_perception.runtime.torch_backend import TorchBackend  # noqa: E402

limit_torch_threads()


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    return exported_small_model(tmp_path_factory.getbasetemp())  # random weights, seeded


def test_torch_backend_matches_onnxruntime_on_the_same_weights(paths):
    onnx_path, ckpt = paths
    tb = TorchBackend(ckpt, device="cpu")
    ob = OnnxRuntimeBackend(onnx_path, threads=2)
    assert tb.name == "torch" and tb.precision == "fp32"
    batch = np.random.default_rng(5).integers(0, 256, (2, SMALL_INPUT, SMALL_INPUT, 3), dtype=np.uint8)
    a, b = tb.infer(batch), ob.infer(batch)
    assert set(a) == set(b) == {"boxes", "scores", "mask_coeffs", "protos", "keypoints"}
    for name in a:
        assert a[name].dtype == np.float32
        np.testing.assert_allclose(a[name], b[name], rtol=1e-4, atol=1e-4, err_msg=name)


def test_bare_state_dict_is_rebuilt_from_the_metadata(paths, tmp_path):
    _, ckpt = paths
    from seg_perception.models.checkpoint import read_checkpoint

    bare = tmp_path / "bare.pth"
    torch.save(read_checkpoint(ckpt)["state_dict"], bare)  # as official .pth files are
    shutil.copy(metadata_path_for(ckpt), metadata_path_for(bare))
    out = TorchBackend(bare, device="cpu").infer(np.zeros((1, SMALL_INPUT, SMALL_INPUT, 3), np.uint8))
    assert out["scores"].shape[-1] == 3


def test_checkpoint_that_disagrees_with_metadata_is_refused(paths, tmp_path):
    _, ckpt = paths
    from seg_perception.models.checkpoint import save_checkpoint

    other = save_checkpoint(yolact_resnet18(num_classes=7, input_size=SMALL_INPUT, num_keypoints=4), tmp_path / "o.pth")
    shutil.copy(metadata_path_for(ckpt), metadata_path_for(other))
    with pytest.raises(BackendError, match=r"o\.pth does not match its metadata"):
        TorchBackend(other, device="cpu")


def test_missing_metadata_and_bad_files_are_named(paths, tmp_path):
    _, ckpt = paths
    lonely = tmp_path / "lonely.pth"
    shutil.copy(ckpt, lonely)
    with pytest.raises(BackendError, match=r"metadata not found .*lonely\.json"):
        TorchBackend(lonely, device="cpu")
    md = ModelMetadata.load(metadata_path_for(ckpt))
    with pytest.raises(BackendError, match=r"checkpoint file not found: .*gone\.pth"):
        TorchBackend(tmp_path / "gone.pth", metadata=md, device="cpu")


def test_cuda_only_options_are_refused_on_cpu(paths):
    _, ckpt = paths
    with pytest.raises(BackendError, match="need a CUDA device"):
        TorchBackend(ckpt, device="cpu", half=True)
