"""``seg-perception quantize``: FP16 / INT8 Q/DQ ONNX files, their metadata, the accuracy gate, bad input.

Real ONNX Runtime, the real shipped model, real calibration frames (the hsr_people
recording, read through the package's bag reader, when it is here; else an image folder).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from seg_perception.core.metadata import ModelMetadata  # noqa: E402
from seg_perception.tools import quantize  # noqa: E402

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "seg_perception_default.onnx"
HSR_BAG = Path("/work/shared/data/hsr_people/hsr_people_mcap")


def _run(model: Path, frame: np.ndarray) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"]).run(None, {"images": frame})


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    from seg_perception.synth import write_coco_dataset
    import cv2
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        write_coco_dataset(Path(tmp), 1, 1000, 384, 288)
        bgr = cv2.imread(str(next((Path(tmp) / "images").iterdir())))
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)[None]


def test_int8_from_a_bag_is_qdq_symmetric_per_channel_with_its_metadata(tmp_path, frame):
    if not HSR_BAG.exists():
        pytest.skip("hsr_people recording not here")
    out = tmp_path / "int8" / "m.onnx"
    assert quantize.main([str(SHIPPED), "--precision", "int8", "--calibration", str(HSR_BAG), "--calib-max-images",
                          "4", "--calib-stride", "5", "--no-eval", "--no-progress", "-o", str(out)]) == 0
    md = ModelMetadata.load(out.with_suffix(".json"))
    assert md.precision == "int8" and md.class_names == ModelMetadata.load(SHIPPED.with_suffix(".json")).class_names
    graph = onnx.load(str(out)).graph
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    dq = [n for n in graph.node if n.op_type == "DequantizeLinear"]
    weights = [n for n in dq if n.input[0] in inits and inits[n.input[0]].ndim == 4]
    assert weights and all(inits[n.input[1]].ndim == 1 for n in weights)  # per-channel scales
    assert all(not np.any(inits[n.input[2]]) for n in dq if len(n.input) > 2)  # symmetric: zero points 0
    assert {inits[n.input[0]].dtype for n in dq if n.input[0] in inits} == {np.dtype(np.int8)}
    embedded = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(embedded["seg_perception.metadata"])["precision"] == "int8"
    ref, got = _run(SHIPPED, frame), _run(out, frame)
    assert [a.shape for a in ref] == [b.shape for b in got]
    assert np.corrcoef(ref[1].ravel(), got[1].ravel())[0, 1] > 0.9  # class scores still track the FP32 model


def test_fp16_gate_measures_ap_and_writes_the_record(tmp_path, frame):
    pytest.importorskip("onnxconverter_common")
    from seg_perception.synth import write_coco_dataset

    write_coco_dataset(tmp_path / "val", 2, 1000, 384, 288)
    out = tmp_path / "m_fp16.onnx"
    assert quantize.main([str(SHIPPED), "--precision", "fp16", "--eval-annotations",
                          str(tmp_path / "val" / "annotations.json"), "--eval-images", "2", "-o", str(out)]) == 0
    record = json.loads(out.with_suffix(".quantize.json").read_text())
    assert set(record["ap_drop"]) == {"segm", "bbox", "keypoints"}
    assert all(abs(d) <= 0.02 for d in record["ap_drop"].values())
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].type == "tensor(uint8)"
    assert {o.type for o in sess.get_outputs()} == {"tensor(float)"}
    ref, got = _run(SHIPPED, frame), _run(out, frame)
    assert max(float(np.abs(a - b).max()) for a, b in zip(ref[:2], got[:2])) < 0.01


def test_gate_refuses_past_the_threshold_unless_forced(tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnxconverter_common")
    figures = iter([{"AP": {"segm": 0.60, "bbox": 0.60, "keypoints": 0.20}, "network_ms_median": 10.0},
                    {"AP": {"segm": 0.55, "bbox": 0.60, "keypoints": 0.20}, "network_ms_median": 9.0}] * 2)
    monkeypatch.setattr(quantize, "measure", lambda *a, **k: next(figures))
    (tmp_path / "a.json").write_text("{}")
    out = tmp_path / "m_fp16.onnx"
    args = [str(SHIPPED), "--precision", "fp16", "--eval-annotations", str(tmp_path / "a.json"), "-o", str(out)]
    assert quantize.main(args) == 1
    err = capsys.readouterr().err
    assert "AP drops by 0.050 (> --max-ap-drop 0.02)" in err and "nothing written" in err
    assert "segm      AP fp32 0.600  fp16 0.550  drop +0.050" in err
    assert not out.exists() and not out.with_suffix(".json").exists()
    assert quantize.main(args + ["--force"]) == 0
    assert "WARNING: AP drops by 0.050" in capsys.readouterr().err
    assert out.exists() and ModelMetadata.load(out.with_suffix(".json")).precision == "fp16"


@pytest.mark.parametrize("argv,message", [
    (["--precision", "int8"], "--precision int8 needs --calibration BAG_OR_DIR"),
    (["--precision", "fp16", "--calibration", "x"], "--calibration only applies to --precision int8"),
    (["--precision", "int8", "--calibration", "/nonexistent"], "calibration source not found: /nonexistent"),
    (["--precision", "fp16", "--max-ap-drop", "2"], "--max-ap-drop must be between 0 and 1"),
])
def test_bad_arguments_get_one_line_and_nothing_is_written(tmp_path, capsys, argv, message):
    out = tmp_path / "o.onnx"
    assert quantize.main([str(SHIPPED), *argv, "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("seg-perception quantize: error:") and message in err[0]
    assert not any(tmp_path.iterdir())


def test_refuses_to_overwrite_its_input_or_requantize(tmp_path, capsys):
    import shutil

    model = tmp_path / "m.onnx"
    shutil.copy(SHIPPED, model)
    md = ModelMetadata.load(SHIPPED.with_suffix(".json"))
    md.save(tmp_path / "m.json")
    assert quantize.main([str(model), "--precision", "fp16", "-o", str(model)]) == 1
    assert "would overwrite the input" in capsys.readouterr().err
    md.precision = "fp16"
    md.save(tmp_path / "m.json")
    assert quantize.main([str(model), "--precision", "int8", "--calibration", str(tmp_path), "-o",
                          str(tmp_path / "n.onnx")]) == 1
    assert "already a fp16 graph" in capsys.readouterr().err
