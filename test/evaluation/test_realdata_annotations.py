"""COCO annotation files as real tools produce them (issue 13, items 2 and 5): annotation
ids from 0, annotations of images that do not exist, one loader for every consumer."""

from __future__ import annotations

import json

import pytest

from support.realdata_testlib import labelme_style_coco, perfect_detections

pytest.importorskip("pycocotools")


def test_perfect_detections_score_ap_1_when_annotation_ids_start_at_0(tmp_path):
    from seg_perception.evaluation.coco import evaluate_detections

    gt = labelme_style_coco(tmp_path, write_images=False)
    assert min(a["id"] for a in json.loads(gt.read_text())["annotations"]) == 0
    result = evaluate_detections(perfect_detections(gt), gt, class_names=["cup"])
    assert result["segm"]["AP"] == pytest.approx(1.0) and result["bbox"]["AP"] == pytest.approx(1.0)
    assert any("renumbered" in n for n in result["notes"])


def test_pycocotools_alone_scores_the_same_file_below_1(tmp_path):
    """Why the renumbering exists: the unmodified file through pycocotools directly."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from seg_perception.evaluation.coco import detections_to_coco

    gt = labelme_style_coco(tmp_path, write_images=False)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(gt))
        results = [r for i, d in perfect_detections(gt).items() for r in detections_to_coco(d, i, 48, 64, [1])]
        ev = COCOeval(coco, coco.loadRes(results), "segm")
        ev.evaluate(), ev.accumulate(), ev.summarize()
    assert ev.stats[0] < 0.99


def test_annotations_of_missing_images_are_dropped_and_counted(tmp_path):
    from seg_perception.evaluation.coco import evaluate_detections

    gt = labelme_style_coco(tmp_path, write_images=False)
    doc = json.loads(gt.read_text())
    doc["annotations"].append({**doc["annotations"][0], "id": 99, "image_id": 7})
    gt.write_text(json.dumps(doc))
    result = evaluate_detections(perfect_detections(labelme_style_coco(tmp_path / "clean", write_images=False)), gt,
                                 class_names=["cup"])
    assert result["segm"]["AP"] == pytest.approx(1.0)
    assert any(n.startswith("1 of 4 annotations name an image id that is not in 'images'") and "7" in n
               for n in result["notes"]), result["notes"]


@pytest.mark.parametrize("content, expected", [
    (None, "annotation file not found"),
    ("{not json", "is not valid JSON"),
    ('{"annotations": []}', "needs an 'images' list"),
])
def test_a_bad_annotation_file_is_one_line_naming_it(tmp_path, content, expected):
    from seg_perception.evaluation.coco import AnnotationError, load_coco

    path = tmp_path / "gt.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(AnnotationError) as info:
        load_coco(path)
    assert expected in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)
