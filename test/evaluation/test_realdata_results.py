"""`seg-perception evaluate --results`: a COCO results file of another framework, scored with
pycocotools (issue 13, item 6); the numbers must equal a direct pycocotools run."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from support.realdata_testlib import rect_mask, rle_of

pytest.importorskip("pycocotools")

COCO_KEYPOINTS = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
                  "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
                  "right_knee", "left_ankle", "right_ankle"]
W, H = 96, 72


def people(rng: np.random.Generator, image_id: int, count: int) -> list[tuple[int, int, int, int]]:
    return [(int(rng.integers(0, W - 30)), int(rng.integers(0, H - 40)), int(rng.integers(12, 30)),
             int(rng.integers(20, 40))) for _ in range(count)]


def keypoints_in(x: int, y: int, w: int, h: int, rng: np.random.Generator, noise: float) -> list[float]:
    pts = []
    for k in range(17):
        px, py = x + w * ((k * 7) % 17) / 17, y + h * k / 17
        pts += [float(px + rng.normal(0, noise)), float(py + rng.normal(0, noise)), 2.0]
    return pts


def write_files(tmp_path):
    rng = np.random.default_rng(5)
    images, anns, results = [], [], []
    for image_id in (1, 2, 3):
        images.append({"id": image_id, "file_name": f"{image_id}.png", "width": W, "height": H})
        for x, y, w, h in people(rng, image_id, 3):
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                         "segmentation": rle_of(rect_mask(W, H, x, y, w, h)), "bbox": [x, y, w, h], "area": w * h,
                         "keypoints": keypoints_in(x, y, w, h, rng, 0.0), "num_keypoints": 17})
            dx, dy = (int(v) for v in rng.integers(-3, 4, 2))  # a detector's error
            results.append({"image_id": image_id, "category_id": 1, "score": float(rng.uniform(0.3, 1.0)),
                            "segmentation": rle_of(rect_mask(W, H, max(0, x + dx), max(0, y + dy), w, h)),
                            "bbox": [max(0, x + dx), max(0, y + dy), w, h],
                            "keypoints": keypoints_in(x, y, w, h, rng, 2.0)})
        x, y, w, h = people(rng, image_id, 1)[0]  # a false positive
        results.append({"image_id": image_id, "category_id": 1, "score": 0.5, "bbox": [x, y, w, h],
                        "segmentation": rle_of(rect_mask(W, H, x, y, w, h)), "keypoints": keypoints_in(x, y, w, h, rng, 1)})
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"images": images, "annotations": anns, "categories": [
        {"id": 1, "name": "person", "keypoints": COCO_KEYPOINTS, "skeleton": []}]}))
    dets = tmp_path / "dets.json"
    dets.write_text(json.dumps(results))
    return gt, dets


def pycocotools_stats(gt, dets, iou_type: str) -> list[float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(gt))
        ev = COCOeval(coco, coco.loadRes(str(dets)), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats]


def test_results_file_scores_equal_a_direct_pycocotools_run(tmp_path, capsys):
    from seg_perception.tools.cli import main

    gt, dets = write_files(tmp_path)
    capsys.readouterr()
    assert main(["evaluate", "--results", str(dets), "--annotations", str(gt), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    for iou_type in ("segm", "bbox", "keypoints"):
        direct = pycocotools_stats(gt, dets, iou_type)
        ours = [v if v is not None else -1.0 for v in report[iou_type].values()]
        assert ours == pytest.approx(direct, abs=1e-12), iou_type
        assert 0.05 < direct[0] < 0.99, (iou_type, direct[0])  # a real score, not a trivial one
    assert report["images"] == 3 and report["detections"] == 12


def test_results_naming_an_unknown_image_is_one_line(tmp_path, capsys):
    from seg_perception.tools.cli import main

    gt, dets = write_files(tmp_path)
    results = json.loads(dets.read_text())
    results[0]["image_id"] = 42
    dets.write_text(json.dumps(results))
    capsys.readouterr()
    assert main(["evaluate", "--results", str(dets), "--annotations", str(gt)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (f"error: {dets} does not fit {gt}: image ids the annotations do not have: [42] "
                           "(results of another dataset?)")
