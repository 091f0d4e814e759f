"""A COCO-format instance segmentation (+ keypoint) dataset for training.

Reads ``annotations.json`` (images, annotations with RLE or polygon masks, optional
``keypoints``) and the images it names. Samples are what ``augment`` and the losses
consume, in pixels of the (possibly augmented) image:

- ``image``      ``(3, H, W)`` uint8 RGB tensor,
- ``masks``      ``(N, H, W)`` uint8 0/1,
- ``boxes``      ``(N, 4)`` float32 x1, y1, x2, y2,
- ``labels``     ``(N,)`` int64 class index 0..C-1 (category order by id),
- ``keypoints``  ``(N, K, 3)`` float32 x, y, v (v > 0: labelled), K = 0 when there are none,
- ``iscrowd``    ``(N,)`` bool (crowd regions are neither positive nor negative),
- ``image_id``   the COCO image id.

Classes are the categories sorted by id; keypoint names come from the first category
that declares ``keypoints`` (all categories must then declare the same list, as the
synthetic data and COCO person do). ``class_keypoints`` is taken from the file when it
carries one (the synthetic data's per-class keypoint subsets).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset


@dataclass
class DatasetInfo:
    """What a trained model has to know about its data (becomes ``ModelMetadata``)."""

    class_names: list[str]
    category_ids: list[int]
    keypoint_names: list[str] = field(default_factory=list)
    skeleton: list[tuple[int, int]] = field(default_factory=list)
    class_keypoints: dict[str, list[int]] = field(default_factory=dict)
    keypoint_sigmas: list[float] = field(default_factory=list)


def read_dataset_info(doc: dict[str, Any]) -> DatasetInfo:
    """Classes, keypoint names, skeleton (0-based) and per-class keypoints of a COCO document."""
    cats = sorted(doc.get("categories", []), key=lambda c: c["id"])
    if not cats:
        raise ValueError("the annotations declare no categories")
    kp_names: list[str] = []
    skeleton: set[tuple[int, int]] = set()
    for c in cats:
        if c.get("keypoints"):
            if kp_names and list(c["keypoints"]) != kp_names:
                raise ValueError("categories declare different keypoint lists; one shared list is needed "
                                 "(give unused keypoints v = 0)")
            kp_names = list(c["keypoints"])
            skeleton.update((int(a) - 1, int(b) - 1) for a, b in c.get("skeleton", []))
    if "skeleton" in doc and kp_names:  # the synthetic data's 0-based full skeleton
        skeleton = {(int(a), int(b)) for a, b in doc["skeleton"]}
    class_keypoints = {str(k): [int(i) for i in v] for k, v in doc.get("class_keypoints", {}).items()}
    if not class_keypoints:
        class_keypoints = {c["name"]: [int(i) for i in c["keypoint_indices"]] for c in cats if "keypoint_indices" in c}
    return DatasetInfo(
        class_names=[c["name"] for c in cats], category_ids=[int(c["id"]) for c in cats],
        keypoint_names=kp_names, skeleton=sorted(skeleton), class_keypoints=class_keypoints,
        keypoint_sigmas=[float(s) for s in doc.get("keypoint_sigmas", [])],
    )


BACKGROUND_CATEGORY = "_background_"


def drop_background_category(doc: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The document without labelme's ``_background_`` category (and its annotations), and a note.

    labelme's COCO export declares the unlabelled area as a category; trained as a class
    it would be a class of its own that the model learns to "detect".
    """
    background = {c["id"] for c in doc.get("categories", []) if c.get("name") == BACKGROUND_CATEGORY}
    if not background:
        return doc, []
    anns = doc.get("annotations", [])
    kept = [a for a in anns if a.get("category_id") not in background]
    note = (f"category '{BACKGROUND_CATEGORY}' (labelme's unlabelled area) is not trained as a class"
            + (f"; its {len(anns) - len(kept)} annotations were dropped" if len(kept) != len(anns) else ""))
    return ({**doc, "categories": [c for c in doc["categories"] if c["id"] not in background], "annotations": kept},
            [note])


def decode_segmentation(seg: Any, height: int, width: int) -> np.ndarray:
    """A COCO ``segmentation`` (compressed/uncompressed RLE or polygons) -> ``(H, W)`` uint8 0/1."""
    from pycocotools import mask as mask_utils

    if isinstance(seg, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    elif isinstance(seg.get("counts"), list):
        rle = mask_utils.frPyObjects(seg, height, width)
    else:
        rle = dict(seg)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
    return mask_utils.decode(rle).astype(np.uint8)


class CocoInstanceDataset(Dataset):
    """COCO-format dataset; ``transform(sample) -> sample`` runs on every item (see ``augment``).

    ``root`` is the directory image ``file_name``s are relative to (default: the
    annotation file's directory). Images without annotations are kept (pure negatives).
    """

    def __init__(self, annotation_file: str | Path, root: str | Path | None = None, transform: Any = None,
                 max_images: int | None = None) -> None:
        from seg_perception.evaluation.coco import normalise_annotations, read_annotation_file

        self.annotation_file = Path(annotation_file)
        doc, self.notes = normalise_annotations(read_annotation_file(self.annotation_file))
        doc, background_notes = drop_background_category(doc)
        self.notes += background_notes
        self.root = Path(root) if root is not None else self.annotation_file.parent
        self.info = read_dataset_info(doc)
        self.transform = transform
        self._label_of = {cid: i for i, cid in enumerate(self.info.category_ids)}
        images = sorted(doc["images"], key=lambda im: im["id"])
        if max_images is not None:
            images = images[:max_images]
        self.images = images
        by_image: dict[int, list[dict]] = {im["id"]: [] for im in images}
        for ann in doc.get("annotations", []):
            if ann["image_id"] in by_image and ann["category_id"] in self._label_of:
                by_image[ann["image_id"]].append(ann)
        self.annotations = by_image
        used = {ann["category_id"] for anns in by_image.values() for ann in anns}
        empty = [n for n, cid in zip(self.info.class_names, self.info.category_ids) if cid not in used]
        if empty:
            self.notes.append(f"{len(empty)} of {len(self.info.class_names)} classes have no annotation in "
                              f"{self.annotation_file} and are trained as never present: {', '.join(empty)}")
        self._doc_images = images

    def require_images(self) -> None:
        """AnnotationError naming the first missing image (checked before training starts)."""
        from seg_perception.evaluation.coco import require_images

        require_images(self.annotation_file, {"images": self._doc_images}, self.root)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_keypoints(self) -> int:
        return len(self.info.keypoint_names)

    def load_raw(self, index: int) -> dict[str, Any]:
        """The un-augmented sample ``index`` (see the module docstring)."""
        img_entry = self.images[index]
        path = self.root / img_entry["file_name"]
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(f"image {path} (id {img_entry['id']}) is missing or unreadable")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        h, w = rgb.shape[:2]
        anns = self.annotations[img_entry["id"]]
        k = self.num_keypoints
        masks = np.zeros((len(anns), h, w), np.uint8)
        boxes = np.zeros((len(anns), 4), np.float32)
        kps = np.zeros((len(anns), k, 3), np.float32)
        labels = np.zeros(len(anns), np.int64)
        crowd = np.zeros(len(anns), bool)
        for j, ann in enumerate(anns):
            if ann.get("segmentation"):
                masks[j] = decode_segmentation(ann["segmentation"], h, w)
            x, y, bw, bh = ann["bbox"]
            boxes[j] = (x, y, x + bw, y + bh)
            labels[j] = self._label_of[ann["category_id"]]
            crowd[j] = bool(ann.get("iscrowd", 0))
            if k and ann.get("keypoints"):
                kps[j] = np.asarray(ann["keypoints"], np.float32).reshape(k, 3)
        return {
            "image": torch.from_numpy(rgb).permute(2, 0, 1).contiguous(),
            "masks": torch.from_numpy(masks),
            "boxes": torch.from_numpy(boxes),
            "labels": torch.from_numpy(labels),
            "keypoints": torch.from_numpy(kps),
            "iscrowd": torch.from_numpy(crowd),
            "image_id": int(img_entry["id"]),
        }

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.load_raw(index)
        return self.transform(sample) if self.transform is not None else sample


def collate(batch: list[dict[str, Any]]) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Stack images (all the same size after ``augment``); targets stay a list per image."""
    images = torch.stack([b["image"] for b in batch])
    targets = [{k: v for k, v in b.items() if k != "image"} for b in batch]
    return images, targets


__all__ = ["DatasetInfo", "read_dataset_info", "drop_background_category", "decode_segmentation", "CocoInstanceDataset", "collate"]
