"""`regress` compares classes by name: a model whose class list was renamed or reordered
is a regression even when every mask is unchanged (issue 13, item 1)."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import REPO
from support.regress_testlib import run_regress

pytest.importorskip("onnxruntime")

SHIPPED_MODEL = REPO / "models" / "seg_perception_default.onnx"
SHIPPED_GOLDEN = REPO / "test" / "golden" / "seg_perception_default"
# Loose enough that only the class names can make this run differ from the golden run
# (the synthetic recording's pixels vary slightly with the OpenCV build).
LOOSE = ["--match-iou", "0.3", "--mask-iou", "0", "--box-tol", "1000", "--score-tol", "1", "--keypoint-tol", "1000"]


def test_swapped_class_names_are_a_regression_not_a_match(tmp_path, capsys):
    if not SHIPPED_MODEL.is_file() or not (SHIPPED_GOLDEN / "manifest.json").is_file():
        pytest.skip("the shipped model or its committed golden run is absent")
    from seg_perception.synth.cli import main_generate_recording

    model = tmp_path / "model" / SHIPPED_MODEL.name
    model.parent.mkdir()
    shutil.copy(SHIPPED_MODEL, model)
    metadata = json.loads(SHIPPED_MODEL.with_suffix(".json").read_text())
    names = metadata["class_names"]
    assert names[0] == "box" and names[4] == "ball"
    names[0], names[4] = names[4], names[0]
    model.with_suffix(".json").write_text(json.dumps(metadata))

    recording = tmp_path / "synthetic_recording"  # the golden run's recording key
    assert main_generate_recording([str(recording), "-n", "12", "--seed", "0", "--quiet"]) == 0
    code, out, err = run_regress(capsys, recording, "--golden", SHIPPED_GOLDEN, "--model", model,
                                 "--backend", "onnxruntime", "-p", "device=cpu", "--out", tmp_path / "out", *LOOSE)
    assert code == 1, out + err
    assert "MATCH" not in out
    assert "REGRESSION: the model's class list changed (id 0: box -> ball; id 4: ball -> box)" in out, out
    assert "class box -> ball" in out, out  # the instances themselves name the change
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["status"] == "regression"
    assert report["comparison"]["problems"] and not report["comparison"]["passed"]


def test_report_names_instances_by_position_and_says_why_a_low_score_one_is_there():
    """Issue 13, item 8: '#2' read like a track id; an instance below score_threshold looked like a bug."""
    import numpy as np

    from seg_perception.core.types import CroppedMask, Detections
    from seg_perception.regression.compare import compare_runs, explain_low_scores
    from seg_perception.regression.records import FrameResult

    def frame(boxes, scores):
        n = len(boxes)
        d = Detections(np.array(boxes, np.float32).reshape(n, 4), np.array(scores, np.float32), np.zeros(n, np.int32),
                       [CroppedMask(int(b[0]), int(b[1]), np.ones((int(b[3] - b[1]), int(b[2] - b[0])), np.uint8))
                        for b in boxes], np.zeros((n, 0, 3), np.float32))
        return FrameResult("rec", 0, 7, 7, "cam", 640, 480, d, ["person"] * n)

    golden = frame([(10, 10, 110, 210)], [0.8])
    run = frame([(10, 10, 110, 210), (300, 100, 340, 200)], [0.8, 0.2])
    comparison = compare_runs({"rec": [golden]}, {"rec": [run]})
    explain_low_scores(comparison, score_threshold=0.3, tracking_low_score=0.1)
    (diff,) = comparison.diffs()
    text = diff.describe()
    assert "#" not in text and "added instance at position 1: person score 0.200" in text
    assert "score below score_threshold 0.3: published because it continues a track" in text
