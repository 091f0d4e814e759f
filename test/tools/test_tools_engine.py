"""``seg-perception engine``: argument checks, engine cache keys, calibration data -- all without TensorRT.

Building an engine needs TensorRT and an NVIDIA GPU; those tests skip with the reason
``tensorrt not installed / no GPU``. Everything the build depends on that can be
checked without them (the cache key and its sidecar, the staleness check the backend
runs at load, the calibration frames and cache) is tested here.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest

from seg_perception.core.preprocess import resize_for_network
from seg_perception.runtime.calibration import (
    CalibrationData,
    CalibrationError,
    CalibrationStream,
    calibration_cache_matches,
    calibration_cache_path,
    write_calibration_record,
)
from seg_perception.runtime.engine_cache import (
    EngineKey,
    check_engine_record,
    engine_info_path,
    engine_is_current,
    engine_path_for_key,
    file_sha256,
    write_engine_info,
)
from seg_perception.tools.engine import main

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


def _gpu_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


needs_tensorrt = pytest.mark.skipif(not (HAS_TENSORRT and _gpu_available()), reason="tensorrt not installed / no GPU")


@pytest.fixture
def model_dir(tmp_path):
    """A stand-in exported model: an .onnx file and its metadata JSON (contents do not matter here)."""
    (tmp_path / "m.onnx").write_bytes(b"onnx graph bytes")
    (tmp_path / "m.json").write_text(json.dumps({
        "name": "m", "architecture": "centermask_lite_vovnet19_slim_dw", "class_names": ["a"],
        "input_width": 64, "input_height": 48, "output_format": "roi", "num_prototypes": 0}))
    return tmp_path


def key(onnx_sha: str = "ab" * 32, **changes) -> EngineKey:
    fields = dict(onnx_sha256=onnx_sha, tensorrt_version="10.3.0", gpu_name="Orin", compute_capability="8.7",
                  precision="fp16", dla_core=None)
    fields.update(changes)
    return EngineKey(**fields)


def test_engine_help_works_without_tensorrt():
    result = subprocess.run([sys.executable, "-m", "seg_perception.tools.cli", "engine", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for option in ("--fp16", "--int8", "--calibrator", "--calib-images", "--calib-bag", "--calib-cache",
                   "--workspace", "--dla-core"):
        assert option in result.stdout


@pytest.mark.parametrize("args, message", [
    (["--int8"], "--int8 needs calibration frames: --calib-images DIR or --calib-bag BAG"),
    (["--calib-images", "."], "--calib-\\* options only apply to --int8 builds"),
    (["--int8", "--calib-topic", "/cam"], "--calib-topic needs --calib-bag"),
    (["--int8", "--calib-images", "nowhere"], "calibration image folder not found: nowhere"),
    (["--workspace", "0"], "--workspace must be positive"),
    (["-o", "m.trt"], "must end in .engine or .plan"),
])
def test_bad_arguments_are_refused_before_tensorrt_is_needed(model_dir, args, message, capsys, monkeypatch):
    monkeypatch.chdir(model_dir)
    assert main(["m.onnx", *args]) == 1
    assert re.search(message, capsys.readouterr().err)


def test_missing_model_or_metadata_is_named(model_dir, capsys):
    assert main([str(model_dir / "x.onnx")]) == 1
    assert "ONNX model not found" in capsys.readouterr().err
    (model_dir / "m.json").unlink()
    assert main([str(model_dir / "m.onnx")]) == 1
    assert "model metadata not found" in capsys.readouterr().err


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here")
def test_without_tensorrt_the_build_says_so_and_writes_nothing(model_dir, capsys):
    assert main([str(model_dir / "m.onnx"), "--fp16"]) == 1
    err = capsys.readouterr().err
    assert "TensorRT is not installed here" in err and "Nothing was written" in err
    assert not (model_dir / "m.engine").exists()


def test_cache_key_digest_is_stable_and_covers_every_field():
    base = key()
    assert base.digest() == key().digest() and len(base.digest()) == 16
    for change in ({"tensorrt_version": "10.4.0"}, {"gpu_name": "RTX 4090"}, {"compute_capability": "8.9"},
                   {"precision": "int8"}, {"dla_core": 0}, {"onnx_sha256": "cd" * 32}):
        assert key(**change).digest() != base.digest()
    with pytest.raises(ValueError, match="unknown precision 'bf16'"):
        key(precision="bf16")
    assert engine_path_for_key("a/m.onnx", base).as_posix() == "a/m.engine"
    assert engine_path_for_key("a/m.onnx", base, "cache").name == f"m.fp16.{base.digest()}.engine"


def test_an_engine_is_current_only_for_its_exact_key(model_dir):
    engine = model_dir / "m.engine"
    engine.write_bytes(b"plan")
    current = key(file_sha256(model_dir / "m.onnx"))
    assert engine_is_current(engine, current) == (False, [f"{engine} has no build record (m.engine.json); "
                                                         "its TensorRT version, GPU and precision are unknown"])
    write_engine_info(engine, current, model_dir / "m.onnx", build_seconds=12.0)
    assert engine_info_path(engine).name == "m.engine.json"
    assert engine_is_current(engine, current) == (True, [])
    ok, reasons = engine_is_current(engine, key(current.onnx_sha256, tensorrt_version="10.7.0", precision="int8"))
    assert not ok
    assert reasons == ["TensorRT version: engine built with 10.3.0, this machine has 10.7.0",
                       "precision: engine has fp16, wanted int8"]


def test_the_backend_check_sees_a_changed_onnx_file_and_a_foreign_gpu(model_dir):
    engine = model_dir / "m.engine"
    engine.write_bytes(b"plan")
    write_engine_info(engine, key(file_sha256(model_dir / "m.onnx")), model_dir / "m.onnx")
    fits = check_engine_record(engine, "10.3.0", "Orin", "8.7")
    assert not fits.stale and fits.precision == "fp16" and fits.onnx_path == model_dir / "m.onnx"
    (model_dir / "m.onnx").write_bytes(b"re-exported graph")
    stale = check_engine_record(engine, "10.3.0", "Xavier", "7.2")
    assert stale.reasons[0].startswith("ONNX model (sha256): the ONNX file changed since the engine was built")
    assert "GPU: engine built with Orin, this machine has Xavier" in stale.reasons
    (model_dir / "m.onnx").unlink()  # an engine deployed alone: only TensorRT and the GPU can be checked
    assert not check_engine_record(engine, "10.3.0", "Orin", "8.7").stale
    engine_info_path(engine).write_text("{}")
    with pytest.raises(ValueError, match="is not a seg_perception.engine/1 file"):
        check_engine_record(engine, "10.3.0", "Orin", "8.7")


def test_the_tensorrt_backend_rebuilds_or_refuses_a_stale_engine(model_dir, monkeypatch):
    # The decision the backend takes at load, with TensorRT and CUDA stood in for.
    import types

    import seg_perception.runtime.tensorrt_backend as trt_backend
    from seg_perception.runtime.base import BackendError

    engine = model_dir / "m.engine"
    engine.write_bytes(b"plan")
    write_engine_info(engine, key(file_sha256(model_dir / "m.onnx")), model_dir / "m.onnx", workspace_bytes=1 << 28)
    monkeypatch.setattr(trt_backend, "gpu_identity", lambda cudart=None: ("Xavier", "7.2"))
    builds = []
    monkeypatch.setattr(trt_backend, "build_engine", lambda *args, **kwargs: builds.append((args, kwargs)))
    backend = object.__new__(trt_backend.TensorRTBackend)  # only the load-time check, no engine
    backend.model_path, backend._cudart = engine, None
    fake_trt = types.SimpleNamespace(__version__="10.3.0")
    with pytest.raises(BackendError, match=r"m\.engine is stale: GPU: engine built with Orin, this machine has "
                                           r"Xavier.*Rebuild it with: seg-perception engine .*m\.onnx --fp16 -o"):
        backend._ensure_current(fake_trt, "fp32", rebuild_stale=False)
    assert backend._ensure_current(fake_trt, "fp32", rebuild_stale=True) == "fp16"  # the recorded precision
    ((args, kwargs),) = builds
    assert args == (model_dir / "m.onnx", engine) and kwargs["fp16"] and not kwargs["int8"]
    assert kwargs["workspace_bytes"] == 1 << 28
    # An INT8 engine without its calibration cache cannot be rebuilt unattended.
    write_engine_info(engine, key(file_sha256(model_dir / "m.onnx"), precision="int8"), model_dir / "m.onnx",
                      calibration={"algorithm": "entropy", "cache": "m.entropy.calib"})
    with pytest.raises(BackendError, match="--int8 --calib-images DIR"):
        backend._ensure_current(fake_trt, "fp32", rebuild_stale=True)
    monkeypatch.setattr(trt_backend, "gpu_identity", lambda cudart=None: ("Orin", "8.7"))
    assert backend._ensure_current(fake_trt, "fp32", rebuild_stale=True) == "int8"  # fits: nothing rebuilt
    assert len(builds) == 1


def write_images(folder, count: int) -> list[np.ndarray]:
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (30 + i, 40, 3), np.uint8) for i in range(count)]
    for i, rgb in enumerate(images):
        cv2.imwrite(str(folder / f"{i:03d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    (folder / "notes.txt").write_text("not an image")
    return images


def test_calibration_frames_from_a_folder_are_resized_as_the_node_resizes_them(tmp_path):
    images = write_images(tmp_path / "calib", 5)
    data = CalibrationData.from_directory(tmp_path / "calib", 64, 48, batch_size=2, stride=2)
    batches = list(data.batches())
    assert [b.shape for b in batches] == [(2, 48, 64, 3)]  # frames 0, 2, 4; the odd last one is dropped
    np.testing.assert_array_equal(batches[0][1], resize_for_network(images[2], 64, 48)[0])
    assert batches[0].flags.c_contiguous and batches[0].dtype == np.uint8
    assert [n.rsplit("/", 1)[-1] for n in data.names] == ["000.png", "002.png", "004.png"]
    limited = CalibrationData.from_directory(tmp_path / "calib", 64, 48, max_images=2)
    assert len(list(limited.batches())) == 2


def test_calibration_sources_that_give_nothing_are_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CalibrationError, match="no images"):
        list(CalibrationData.from_directory(tmp_path / "empty", 64, 48).batches())
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(CalibrationError, match="cannot decode calibration image"):
        list(CalibrationData.from_directory(tmp_path / "bad", 64, 48).batches())
    with pytest.raises(CalibrationError, match="calibration bag not found"):
        CalibrationData.from_bag(tmp_path / "nope", 64, 48)


def test_calibration_frames_from_a_recording(hsr_bag):
    data = CalibrationData.from_bag(hsr_bag, 64, 48, max_images=3, stride=2)
    batches = list(data.batches())
    assert len(batches) == 3 and batches[0].shape == (1, 48, 64, 3)
    assert data.names[1].endswith("#2")  # every second frame


def test_calibration_stream_serves_batches_and_keeps_the_cache(tmp_path):
    write_images(tmp_path / "calib", 3)
    cache = calibration_cache_path(tmp_path / "m.onnx", "entropy")
    assert cache.name == "m.entropy.calib"
    stream = CalibrationStream(CalibrationData.from_directory(tmp_path / "calib", 64, 48), cache)
    assert stream.read_cache() is None
    served = []
    while (batch := stream.next_batch()) is not None:
        served.append(batch)
    assert len(served) == stream.batches_served == 3
    stream.write_cache(b"TRT-calibration-table")
    assert CalibrationStream(None, cache).read_cache() == b"TRT-calibration-table"
    assert not calibration_cache_matches(cache, "ab", "10.3.0", "entropy")  # no record yet
    write_calibration_record(cache, "ab", "10.3.0", "entropy", images=3)
    assert calibration_cache_matches(cache, "ab", "10.3.0", "entropy")
    assert not calibration_cache_matches(cache, "cd", "10.3.0", "entropy")  # another graph
    assert not calibration_cache_matches(cache, "ab", "10.4.0", "entropy")
    assert not calibration_cache_matches(cache, "ab", "10.3.0", "minmax")


@needs_tensorrt
def test_fp16_engine_builds_is_cached_and_matches_onnxruntime(known_answer_model, tmp_path, capsys):
    from seg_perception.runtime.onnxruntime_backend import OnnxRuntimeBackend
    from seg_perception.runtime.tensorrt_backend import TensorRTBackend

    assert main([str(known_answer_model), "--fp16", "-o", str(tmp_path / "ka.engine")]) == 0
    assert main([str(known_answer_model), "--fp16", "-o", str(tmp_path / "ka.engine")]) == 0
    assert "is up to date" in capsys.readouterr().err
    batch = np.random.default_rng(0).integers(0, 256, (1, 120, 160, 3), np.uint8)
    a = TensorRTBackend(tmp_path / "ka.engine").infer(batch)
    b = OnnxRuntimeBackend(known_answer_model).infer(batch)
    for name in b:
        np.testing.assert_allclose(a[name], b[name], atol=1e-2, err_msg=name)


@needs_tensorrt
def test_int8_engine_builds_from_calibration_images(known_answer_model, tmp_path):
    write_images(tmp_path / "calib", 8)
    assert main([str(known_answer_model), "--int8", "--calib-images", str(tmp_path / "calib"),
                 "--calibrator", "minmax", "-o", str(tmp_path / "ka8.engine")]) == 0
    assert (known_answer_model.parent / "known_answer.minmax.calib").is_file()
