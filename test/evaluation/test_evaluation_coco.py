"""COCO evaluation of Detections (pycocotools) and pairing annotated images with recorded frames."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pycocotools")

from seg_perception.core.types import CroppedMask, Detections  # noqa: E402
from seg_perception.evaluation.coco import align_images_to_frames, evaluate_detections  # noqa: E402

W, H = 64, 48
# Per image: (category name, box x1, y1, x2, y2); masks fill the boxes; 3 keypoints per instance.
OBJECTS = {1: [("bottle", 4, 4, 20, 40), ("cup", 30, 10, 50, 30)], 2: [("bottle", 40, 8, 60, 44)]}
CATEGORIES = [{"id": 7, "name": "bottle", "keypoints": ["top", "middle", "bottom"], "skeleton": []},
              {"id": 9, "name": "cup"}]
MODEL_CLASSES = ["person", "bottle", "cup"]


def keypoints_of(x1, y1, x2, y2):
    cx = (x1 + x2) / 2
    return [[cx, y1, 2], [cx, (y1 + y2) / 2, 2], [cx, y2 - 1, 2]]


def coco_gt(stamps: dict[int, int] | None = None) -> dict:
    from pycocotools import mask as mask_utils

    images, anns = [], []
    for image_id, objs in OBJECTS.items():
        img = {"id": image_id, "width": W, "height": H, "file_name": f"{image_id}.png"}
        if stamps:
            img["stamp_ns"] = stamps[image_id]
        images.append(img)
        for name, x1, y1, x2, y2 in objs:
            full = np.zeros((H, W), np.uint8)
            full[y1:y2, x1:x2] = 1
            rle = mask_utils.encode(np.asfortranarray(full))
            rle["counts"] = rle["counts"].decode()
            ann = {"id": len(anns) + 1, "image_id": image_id, "category_id": 7 if name == "bottle" else 9,
                   "segmentation": rle, "bbox": [x1, y1, x2 - x1, y2 - y1]}
            if name == "bottle":
                ann["keypoints"] = [v for kp in keypoints_of(x1, y1, x2, y2) for v in kp]
            anns.append(ann)
    return {"images": images, "annotations": anns, "categories": CATEGORIES}


def detections_of(objs, shift: int = 0, score: float = 0.9) -> Detections:
    n = len(objs)
    boxes = np.array([[x1 + shift, y1, x2 + shift, y2] for _, x1, y1, x2, y2 in objs], np.float32).reshape(n, 4)
    kpts = np.array([[[x + shift, y, 1.0] for x, y, _ in keypoints_of(x1, y1, x2, y2)]
                     for _, x1, y1, x2, y2 in objs], np.float32).reshape(n, 3, 3)
    return Detections(
        boxes=boxes, scores=np.full(n, score, np.float32),
        class_ids=np.array([MODEL_CLASSES.index(o[0]) for o in objs], np.int32),
        masks=[CroppedMask(x1 + shift, y1, np.ones((y2 - y1, x2 - x1), np.uint8)) for _, x1, y1, x2, y2 in objs],
        keypoints=kpts)


def test_perfect_detections_score_ap_one_for_masks_boxes_and_keypoints():
    result = evaluate_detections({i: detections_of(o) for i, o in OBJECTS.items()}, coco_gt(), MODEL_CLASSES)
    for kind in ("segm", "bbox", "keypoints"):
        assert (result[kind]["AP"], result[kind]["AP50"], result[kind]["AP75"]) == (1.0, 1.0, 1.0), kind
    assert result["images"] == 2 and result["detections"] == 3
    assert result["category_map"] == {"person": None, "bottle": 7, "cup": 9}
    assert result["unmatched_classes"] == ["person"]


def test_missed_and_misplaced_instances_lower_the_ap():
    missing_cup = {1: detections_of(OBJECTS[1][:1]), 2: detections_of(OBJECTS[2])}
    result = evaluate_detections(missing_cup, coco_gt(), MODEL_CLASSES)
    assert result["segm"]["AP"] == pytest.approx(0.5)  # bottle AP 1, cup AP 0
    shifted = evaluate_detections({i: detections_of(o, shift=3) for i, o in OBJECTS.items()}, coco_gt(), MODEL_CLASSES)
    assert shifted["segm"]["AP50"] == 1.0 and shifted["segm"]["AP"] < 1.0
    nothing = evaluate_detections({1: detections_of([]), 2: detections_of([])}, coco_gt(), MODEL_CLASSES)
    assert nothing["segm"]["AP"] == 0.0 and nothing["detections"] == 0


def test_class_ids_map_to_categories_in_id_order_without_names():
    dets = {i: detections_of(o) for i, o in OBJECTS.items()}
    for d in dets.values():  # model class ids 0 = bottle, 1 = cup, as the categories sorted by id
        d.class_ids = d.class_ids - 1
    result = evaluate_detections(dets, coco_gt())
    assert result["segm"]["AP"] == 1.0 and result["category_map"] == {"0": 7, "1": 9}


def test_model_classes_that_name_no_category_are_an_error():
    with pytest.raises(ValueError, match="no model class"):
        evaluate_detections({1: detections_of([])}, coco_gt(), ["dog", "cat"])


def test_images_pair_with_frames_by_stamp_when_every_image_has_one():
    frames = [(500, W, H), (100, W, H), (300, W, H)]
    pairs, notes = align_images_to_frames(coco_gt({1: 300, 2: 500}), frames)
    assert pairs == {1: 2, 2: 0} and "by stamp" in notes[0]
    partly, notes = align_images_to_frames(coco_gt({1: 300, 2: 999}), frames)
    assert partly == {1: 2} and "1 annotated images have no frame" in notes[1]
    with pytest.raises(ValueError, match="none of the 2 annotated images"):
        align_images_to_frames(coco_gt({1: 1, 2: 2}), frames)


def test_images_pair_with_frames_by_index_otherwise_and_sizes_must_agree():
    pairs, notes = align_images_to_frames(coco_gt(), [(0, W, H), (1, W, H)])
    assert pairs == {1: 0, 2: 1} and "by index" in notes[0]
    with pytest.raises(ValueError, match="2 images and the run 3 frames"):
        align_images_to_frames(coco_gt(), [(0, W, H)] * 3)
    with pytest.raises(ValueError, match="annotated image 2 .* is 64x48 but frame 1 .* is 640x480"):
        align_images_to_frames(coco_gt(), [(0, W, H), (1, 640, 480)])
