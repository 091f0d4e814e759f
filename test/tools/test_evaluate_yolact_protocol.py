"""``seg-perception evaluate --protocol yolact``: the official dbolya/yolact COCO protocol."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from seg_perception.core.types import CroppedMask, Detections
from seg_perception.pipeline import DEFAULT_MODEL_NAME
from seg_perception.evaluation.evaluator import yolact_integer_boxes
from seg_perception.tools.evaluate import PROTOCOLS, main

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "models" / DEFAULT_MODEL_NAME


def test_the_yolact_protocol_is_the_official_eval_settings():
    # dbolya/yolact eval.py: --score_threshold 0, cfg.max_num_detections 100, integer boxes.
    assert PROTOCOLS["yolact"] == (0.0, 100, True)


def test_integer_boxes_are_truncated_and_zero_area_ones_dropped():
    masks = [CroppedMask(0, 0, np.ones((2, 2), np.uint8)) for _ in range(3)]
    dets = Detections(boxes=np.array([[1.7, 2.2, 10.9, 8.5], [5.2, 5.1, 5.9, 9.0], [0, 0, 640, 480]], np.float32),
                      scores=np.array([0.9, 0.8, 0.1], np.float32), class_ids=np.array([0, 1, 2], np.int32),
                      masks=masks, keypoints=np.zeros((3, 0, 3), np.float32))
    out = yolact_integer_boxes(dets)
    np.testing.assert_array_equal(out.boxes, [[1, 2, 10, 8], [0, 0, 640, 480]])  # 5.2..5.9 -> 5..5: no area
    np.testing.assert_array_equal(out.class_ids, [0, 2])
    assert out.masks == [masks[0], masks[2]]


def test_evaluate_cli_with_the_yolact_protocol_and_a_separate_image_folder(tmp_path: Path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("pycocotools")
    from seg_perception.synth import write_coco_dataset

    annotations = write_coco_dataset(tmp_path / "val", n_images=3, seed=5, width=160, height=120)
    # COCO's own layout: annotations/instances_val2017.json, images in val2017/.
    doc = json.loads(annotations.read_text())
    (tmp_path / "coco" / "annotations").mkdir(parents=True)
    (tmp_path / "coco" / "val2017").mkdir()
    for img in doc["images"]:
        shutil.copy(annotations.parent / img["file_name"], tmp_path / "coco" / "val2017" / Path(img["file_name"]).name)
        img["file_name"] = Path(img["file_name"]).name
    gt = tmp_path / "coco" / "annotations" / "instances_val2017.json"
    gt.write_text(json.dumps(doc))
    args = ["--model", str(MODEL), "--annotations", str(gt), "--images", str(tmp_path / "coco" / "val2017"),
            "--threads", "1", "--json"]
    assert main(args + ["--protocol", "yolact"]) == 0
    official = json.loads(capsys.readouterr().out)
    assert main(args) == 0
    default = json.loads(capsys.readouterr().out)
    assert any("protocol yolact: score threshold 0, 100 detections per image, integer boxes" in n
               for n in official["notes"])
    assert official["images"] == default["images"] == 3
    # Threshold 0 keeps the low-scoring detections the default protocol's 0.05 drops.
    assert default["detections"] < official["detections"] <= 3 * 100
    # Without --images the files are looked for beside the annotations: one clear error.
    assert main(args[:4] + ["--json"]) == 2
    assert "missing or unreadable" in capsys.readouterr().err
