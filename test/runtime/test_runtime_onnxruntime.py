"""ONNX Runtime backend: loading, contract checks, clear errors, and no torch import."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from seg_perception.core.metadata import ModelMetadata, metadata_path_for  # noqa: E402
from seg_perception.runtime.base import Backend, BackendError  # noqa: E402
from seg_perception.runtime.onnxruntime_backend import OnnxRuntimeBackend, select_providers  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def known_answer_path(tmp_path_factory):
    pytest.importorskip("torch")
    from seg_perception.models.known_answer import write_known_answer_model

    return write_known_answer_model(tmp_path_factory.mktemp("ka"))


def copy_model(src: Path, dst_dir: Path, with_metadata: bool = True) -> Path:
    dst = dst_dir / src.name
    shutil.copy(src, dst)
    if with_metadata:
        shutil.copy(metadata_path_for(src), metadata_path_for(dst))
    return dst


def test_backend_reads_sidecar_metadata_and_runs_on_cpu(known_answer_path):
    backend = OnnxRuntimeBackend(known_answer_path, threads=1)
    assert isinstance(backend, Backend)
    assert backend.name == "onnxruntime" and backend.precision == "fp32"
    assert backend.providers[-1] == "CPUExecutionProvider"
    assert backend.metadata.class_names == ["person", "bottle", "cup"]
    out = backend.infer(np.zeros((1, 120, 160, 3), np.uint8))
    assert sorted(out) == ["boxes", "keypoints", "mask_coeffs", "protos", "scores"]
    assert all(v.dtype == np.float32 for v in out.values())
    backend.close()


def test_explicit_metadata_wins_over_the_sidecar(known_answer_path):
    md = ModelMetadata.load(metadata_path_for(known_answer_path))
    md.name = "renamed"
    assert OnnxRuntimeBackend(known_answer_path, metadata=md).metadata.name == "renamed"


def test_metadata_embedded_in_the_graph_is_used_when_the_sidecar_is_lost(known_answer_path, tmp_path):
    path = copy_model(known_answer_path, tmp_path, with_metadata=False)
    assert OnnxRuntimeBackend(path).metadata.input_width == 160


def test_missing_model_file_is_named(tmp_path):
    with pytest.raises(BackendError, match=r"ONNX model not found: .*absent\.onnx"):
        OnnxRuntimeBackend(tmp_path / "absent.onnx")


def test_corrupt_model_file_is_named(known_answer_path, tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_bytes(known_answer_path.read_bytes()[:500])
    with pytest.raises(BackendError, match=r"could not load ONNX model .*broken\.onnx"):
        OnnxRuntimeBackend(path)


def test_metadata_for_another_input_size_is_refused(known_answer_path, tmp_path):
    path = copy_model(known_answer_path, tmp_path)
    md = ModelMetadata.load(metadata_path_for(path))
    md.input_width = 640
    md.save(metadata_path_for(path))
    with pytest.raises(BackendError, match=r"known_answer\.onnx does not match its metadata: .*shape \[1, 120, 160, 3\]"):
        OnnxRuntimeBackend(path)


def test_metadata_with_other_class_count_is_refused(known_answer_path):
    md = ModelMetadata.load(metadata_path_for(known_answer_path))
    md.class_names = md.class_names + ["extra"]
    with pytest.raises(BackendError, match=r"output 'scores' has shape \[1, 8, 3\], metadata implies \[\.\.\., 4\]"):
        OnnxRuntimeBackend(known_answer_path, metadata=md)


def test_corrupt_sidecar_is_named(known_answer_path, tmp_path):
    path = copy_model(known_answer_path, tmp_path)
    metadata_path_for(path).write_text("{not json")
    with pytest.raises(BackendError, match=r"bad model metadata .*known_answer\.json"):
        OnnxRuntimeBackend(path)


def test_graph_with_a_different_input_is_refused(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 120, 160])
    out = helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 3, 120, 160])
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["boxes"])], "g", [inp], [out])
    path = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    md = ModelMetadata(name="x", architecture="x", class_names=["a"], input_width=160, input_height=120)
    with pytest.raises(BackendError, match=r"foreign\.onnx .*expected one input named 'images'.*missing outputs"):
        OnnxRuntimeBackend(path, metadata=md)


def test_wrong_image_batches_are_rejected_with_the_expected_shape(known_answer_path):
    backend = OnnxRuntimeBackend(known_answer_path)
    with pytest.raises(ValueError, match=r"expected \(B, 120, 160, 3\) uint8 images, got \(1, 160, 120, 3\)"):
        backend.infer(np.zeros((1, 160, 120, 3), np.uint8))
    with pytest.raises(ValueError, match="float32"):
        backend.infer(np.zeros((1, 120, 160, 3), np.float32))


def test_unavailable_provider_is_an_error_not_a_silent_cpu_fallback(known_answer_path):
    with pytest.raises(BackendError, match="CUDAExecutionProvider.*not available"):
        select_providers(["CUDAExecutionProvider"], ["CPUExecutionProvider"], known_answer_path)


def test_provider_preference_is_tensorrt_then_cuda_then_cpu(tmp_path):
    chosen = select_providers(
        None, ["CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"],
        tmp_path / "m.onnx", fp16=True,
    )
    assert [p if isinstance(p, str) else p[0] for p in chosen] == [
        "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    trt_options = chosen[0][1]
    assert trt_options["trt_engine_cache_enable"] and trt_options["trt_fp16_enable"]
    assert trt_options["trt_engine_cache_path"] == str(tmp_path)


def test_onnxruntime_backend_never_imports_torch(known_answer_path):
    """The node must run ONNX models on machines without PyTorch: check in a fresh interpreter."""
    code = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        from seg_perception.runtime.factory import create_backend
        backend = create_backend("onnxruntime", {str(known_answer_path)!r}, threads=1)
        out = backend.infer(np.zeros((1, 120, 160, 3), np.uint8))
        assert out["scores"].shape == (1, 8, 3)
        auto = create_backend("auto", {str(known_answer_path)!r})
        assert auto.name == "onnxruntime", auto.name
        leaked = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.") or m == "torchvision")
        print("LEAKED", leaked)
        sys.exit(1 if leaked else 0)
        """
    )
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
