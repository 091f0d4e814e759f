"""Backend selection by name and by the files present."""

from __future__ import annotations

import importlib.util

import pytest

from seg_perception.runtime.base import BackendError
from seg_perception.runtime.factory import create_backend, engine_path_for, resolve_backend

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


def test_unknown_backend_name_lists_the_choices(tmp_path):
    with pytest.raises(BackendError, match="unknown backend 'openvino'; choose one of auto, onnxruntime, torch, tensorrt"):
        create_backend("openvino", tmp_path / "m.onnx")


def test_auto_picks_onnxruntime_without_an_engine(tmp_path):
    assert resolve_backend("auto", tmp_path / "m.onnx") == ("onnxruntime", tmp_path / "m.onnx")


def test_auto_picks_torch_for_a_checkpoint(tmp_path):
    assert resolve_backend("auto", tmp_path / "m.pth") == ("torch", tmp_path / "m.pth")


def test_engine_beside_the_model_is_found(tmp_path):
    (tmp_path / "m.engine").write_bytes(b"x")
    assert engine_path_for(tmp_path / "m.onnx") == tmp_path / "m.engine"
    assert resolve_backend("tensorrt", tmp_path / "m.onnx") == ("tensorrt", tmp_path / "m.engine")
    expected = "tensorrt" if HAS_TENSORRT else "onnxruntime"
    assert resolve_backend("auto", tmp_path / "m.onnx")[0] == expected


def test_onnxruntime_given_an_engine_path_uses_the_onnx_beside_it(tmp_path):
    assert resolve_backend("onnxruntime", tmp_path / "m.engine") == ("onnxruntime", tmp_path / "m.onnx")


def test_bad_options_are_reported_for_the_chosen_backend(tmp_path):
    pytest.importorskip("onnxruntime")
    with pytest.raises(BackendError, match="bad options for the onnxruntime backend"):
        create_backend("onnxruntime", tmp_path / "m.onnx", no_such_option=1)


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here")
def test_tensorrt_without_the_package_says_so(tmp_path):
    (tmp_path / "m.engine").write_bytes(b"x")
    with pytest.raises(BackendError, match="needs NVIDIA's tensorrt Python package"):
        create_backend("tensorrt", tmp_path / "m.engine")
