"""Real COCO files made on disk for the real-data tests (issue 13): images, masks, ids from 0."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

# Per image: (width, height) and its instances as (category id, x, y, w, h) rectangles.
IMAGES = {0: ((64, 48), [(0, 4, 4, 20, 16), (1, 30, 20, 24, 20)]),
          1: ((64, 48), [(0, 10, 8, 30, 30)])}
CATEGORIES = [{"id": 0, "name": "_background_"}, {"id": 1, "name": "cup"}, {"id": 3, "name": "plate"}]


def rect_mask(width: int, height: int, x: int, y: int, w: int, h: int) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    mask[y:y + h, x:x + w] = 1
    return mask


def rle_of(mask: np.ndarray) -> dict[str, Any]:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def labelme_style_coco(root: Path, write_images: bool = True) -> Path:
    """A labelme-like COCO export: annotation and image ids from 0, a `_background_` category
    (id 0, unused), category ids with a gap, a class ("plate") without a single annotation.
    Category ``k`` of IMAGES is the k-th non-background category ("cup" for 0, 1)."""
    import cv2

    root.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_id, ((w, h), instances) in IMAGES.items():
        name = f"img_{image_id}.png"
        images.append({"id": image_id, "file_name": name, "width": w, "height": h})
        picture = np.full((h, w, 3), 40, np.uint8)
        for _, x, y, bw, bh in instances:
            picture[y:y + bh, x:x + bw] = (200, 180, 30)
            annotations.append({"id": len(annotations), "image_id": image_id, "category_id": 1,
                                "segmentation": rle_of(rect_mask(w, h, x, y, bw, bh)), "bbox": [x, y, bw, bh],
                                "area": bw * bh, "iscrowd": 0})
        if write_images:
            cv2.imwrite(str(root / name), picture)
    path = root / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))
    return path


def perfect_detections(annotation_file: Path, class_id: int = 0) -> dict[int, Any]:
    """Per image id, Detections equal to its ground truth (score 0.9, class ``class_id``)."""
    from pycocotools import mask as mask_utils

    from seg_perception.core.types import CroppedMask, Detections

    doc = json.loads(annotation_file.read_text())
    out = {}
    for img in doc["images"]:
        anns = [a for a in doc["annotations"] if a["image_id"] == img["id"]]
        boxes, masks = [], []
        for a in anns:
            x, y, w, h = a["bbox"]
            boxes.append([x, y, x + w, y + h])
            full = mask_utils.decode({**a["segmentation"], "counts": a["segmentation"]["counts"].encode("ascii")})
            masks.append(CroppedMask(x, y, np.ascontiguousarray(full[y:y + h, x:x + w])))
        out[img["id"]] = Detections(np.asarray(boxes, np.float32).reshape(-1, 4), np.full(len(anns), 0.9, np.float32),
                                    np.full(len(anns), class_id, np.int32), masks, np.zeros((len(anns), 0, 3), np.float32))
    return out
