"""COCO mask, box and keypoint AP of ``Detections`` against COCO ground truth (pycocotools).

The evaluator knows nothing about the model or how the detections were made (as in
detectron2): it takes ``Detections`` per COCO image id and a COCO ground truth, and
returns the standard COCO summary numbers (``evaluate_detections``). Everything that
scores detections goes through it, by way of ``evaluation.evaluator``.

Classes map to COCO categories by name when the model's ``class_names`` are given
(classes with no category of the same name are left out and listed); without names,
class id ``i`` is the ``i``-th category in order of category id.

Keypoint AP is computed for the categories that declare ``keypoints`` in the ground
truth, when their keypoint count equals the model's; OKS uses COCO's person sigmas
when the keypoints are COCO's 17 person keypoints and ``DEFAULT_KEYPOINT_SIGMA`` for
each keypoint otherwise (pass ``keypoint_sigmas`` to choose).

``align_images_to_frames`` pairs annotated images with the frames of a recording
(the rule is in its docstring).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from seg_perception.core.types import Detections

# COCO's summary (COCOeval.stats) in order, for masks/boxes and for keypoints.
_BOX_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
_KEYPOINT_STATS = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
DEFAULT_KEYPOINT_SIGMA = 0.05  # between COCO's body-joint sigmas (0.025 eyes .. 0.107 hips)
COCO_PERSON_KEYPOINTS = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
                         "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
                         "left_knee", "right_knee", "left_ankle", "right_ankle")


class AnnotationError(ValueError):
    """An annotation file cannot be used; the message names the file and what to do."""


def read_annotation_file(path: str | Path) -> dict[str, Any]:
    """The COCO document in ``path``; AnnotationError (one line naming the file) when it is not one."""
    path = Path(path)
    try:
        dataset = json.loads(path.read_text())
    except FileNotFoundError:
        raise AnnotationError(f"annotation file not found: {path} (give the COCO JSON file of the dataset)") from None
    except IsADirectoryError:
        raise AnnotationError(f"{path} is a directory; give the COCO JSON file inside it") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"cannot read the annotation file {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise AnnotationError(f"annotation file {path} is not valid JSON: {exc}") from None
    if not isinstance(dataset, dict) or not isinstance(dataset.get("images"), list):
        raise AnnotationError(f"annotation file {path} is not COCO: it needs an 'images' list "
                              "(and 'annotations', 'categories')")
    return dataset


def normalise_annotations(dataset: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A copy of a COCO document that every consumer can trust, and notes on what was changed.

    - Annotations naming an image id that is not in ``images`` are dropped (and counted):
      otherwise training ignores them and COCOeval fails on them, both without a word.
    - Annotation ids are renumbered 1..N when any is missing, below 1 or repeated:
      COCOeval marks a detection matched to annotation id 0 as unmatched, so files
      numbered from 0 (labelme and many converters) scored too low (0.949 for perfect
      detections). Nothing outside this document refers to annotation ids.
    """
    data = copy.deepcopy(dataset)
    notes: list[str] = []
    image_ids = {img.get("id") for img in data.get("images", [])}
    anns = data.get("annotations") or []
    kept = [a for a in anns if a.get("image_id") in image_ids]
    if len(kept) != len(anns):
        missing = sorted({str(a.get("image_id")) for a in anns if a.get("image_id") not in image_ids})
        notes.append(f"{len(anns) - len(kept)} of {len(anns)} annotations name an image id that is not in 'images' "
                     f"and were dropped (image ids {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''})")
    ids = [a.get("id") for a in kept]
    if any(not isinstance(i, int) or i < 1 for i in ids) or len(set(ids)) != len(ids):
        for new_id, ann in enumerate(kept, 1):
            ann["id"] = new_id
        notes.append("annotation ids renumbered 1..N (the file has ids below 1, missing or repeated, which "
                     "pycocotools would count as unmatched)")
    data["annotations"] = kept
    return data, notes


def require_images(annotation_file: str | Path, dataset: dict[str, Any], root: str | Path | None = None,
                   max_images: int | None = None) -> None:
    """Raise AnnotationError unless every image file the document names exists (the first ``max_images``
    in id order; ``root``: the folder ``file_name`` is relative to, default the annotation file's).

    Checked before a long run starts, so a missing image does not end it hours later.
    """
    annotation_file = Path(annotation_file)
    folder = Path(root) if root is not None else annotation_file.parent
    images = sorted(dataset.get("images", []), key=lambda im: im["id"])[:max_images]
    missing = [im for im in images if not (folder / str(im.get("file_name", ""))).is_file()]
    if missing:
        first = folder / str(missing[0].get("file_name", ""))
        raise AnnotationError(f"{len(missing)} of {len(images)} images named in {annotation_file} do not exist "
                              f"(first: {first}, image id {missing[0].get('id')}); 'file_name' is relative to "
                              f"{folder}: fix the paths or copy the images there")


def _complete(dataset: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Normalise (``normalise_annotations``) and fill the optional fields COCOeval relies on
    (iscrowd, area, num_keypoints)."""
    from pycocotools import mask as mask_utils

    data, notes = normalise_annotations(dataset)
    images = {img["id"]: img for img in data.get("images", [])}
    data.setdefault("categories", [])
    for ann in data.setdefault("annotations", []):
        ann.setdefault("iscrowd", 0)
        if "keypoints" in ann and "num_keypoints" not in ann:
            ann["num_keypoints"] = int(np.count_nonzero(np.asarray(ann["keypoints"]).reshape(-1, 3)[:, 2] > 0))
        if "area" not in ann:
            seg = ann.get("segmentation")
            img = images.get(ann["image_id"], {})
            if seg and "height" in img:
                h, w = int(img["height"]), int(img["width"])
                if isinstance(seg, list):
                    rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
                elif isinstance(seg.get("counts"), list):
                    rle = mask_utils.frPyObjects(seg, h, w)
                else:
                    rle = seg
                ann["area"] = float(mask_utils.area(rle))
            elif "bbox" in ann:
                ann["area"] = float(ann["bbox"][2] * ann["bbox"][3])
            else:
                ann["area"] = 0.0
    return data, notes


def load_coco(gt: Any) -> Any:
    """A ``pycocotools.coco.COCO`` from a path, a dataset dict, or a COCO object (returned as is).

    The one place ground truth is loaded for scoring: the document is normalised
    (``normalise_annotations``), and what that changed is in the object's ``notes``
    (a list of sentences; ``evaluate_detections`` reports them).
    """
    from pycocotools.coco import COCO

    if isinstance(gt, COCO):
        return gt
    dataset = read_annotation_file(gt) if isinstance(gt, (str, Path)) else gt
    if not isinstance(dataset, dict) or "images" not in dataset:
        raise AnnotationError("COCO ground truth needs an 'images' list (and 'annotations', 'categories')")
    coco = COCO()
    coco.dataset, coco.notes = _complete(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def category_ids_for(coco: Any, class_names: Sequence[str] | None, num_classes: int) -> tuple[list[int | None], list[str]]:
    """Per class id, its COCO category id (None: no such category), and the unmatched class names."""
    cats = sorted(coco.loadCats(coco.getCatIds()), key=lambda c: c["id"])
    if class_names is None:
        ids: list[int | None] = [cats[i]["id"] if i < len(cats) else None for i in range(num_classes)]
        return ids, [str(i) for i, c in enumerate(ids) if c is None]
    by_name = {c["name"]: c["id"] for c in cats}
    by_lower = {c["name"].lower(): c["id"] for c in cats}
    ids = [by_name.get(n, by_lower.get(n.lower())) for n in class_names]
    return ids, [n for n, c in zip(class_names, ids) if c is None]


def detections_to_coco(detections: Detections, image_id: int, height: int, width: int,
                       category_ids: Sequence[int | None]) -> list[dict[str, Any]]:
    """COCO result entries (segmentation RLE, bbox xywh, score, keypoints) of one image."""
    from pycocotools import mask as mask_utils

    out = []
    has_kpts = detections.keypoints.ndim == 3 and detections.keypoints.shape[1] > 0
    for i in range(len(detections)):
        cid = int(detections.class_ids[i])
        cat = category_ids[cid] if 0 <= cid < len(category_ids) else None
        if cat is None:
            continue
        m = detections.masks[i]
        if m.x + m.width > width or m.y + m.height > height:
            raise ValueError(f"image {image_id}: a mask reaches ({m.x + m.width}, {m.y + m.height}), outside the "
                             f"annotated image size {width}x{height}")
        rle = mask_utils.encode(np.asfortranarray(m.to_full(height, width)))
        rle["counts"] = rle["counts"].decode("ascii")
        x1, y1, x2, y2 = (float(v) for v in detections.boxes[i])
        entry: dict[str, Any] = {"image_id": int(image_id), "category_id": int(cat), "score": float(detections.scores[i]),
                                 "segmentation": rle, "bbox": [x1, y1, x2 - x1, y2 - y1]}
        if has_kpts:
            entry["keypoints"] = [float(v) for v in detections.keypoints[i].reshape(-1)]
        out.append(entry)
    return out


def _summarise(coco_gt: Any, results: list[dict[str, Any]], iou_type: str, image_ids: list[int],
               cat_ids: list[int] | None = None, sigmas: np.ndarray | None = None,
               details: dict[str, dict[str, Any]] | None = None) -> dict[str, float | None]:
    """The COCO summary of one ``iou_type``; with ``details`` (a dict), also the per-category
    AP and precision-recall curves of the same COCOeval run under ``details["per_class"]``
    and ``details["pr_curves"]`` (keyed by ``iou_type``)."""
    from pycocotools.cocoeval import COCOeval

    names = _KEYPOINT_STATS if iou_type == "keypoints" else _BOX_STATS
    cats = sorted(coco_gt.loadCats(cat_ids if cat_ids is not None else coco_gt.getCatIds()), key=lambda c: c["id"])
    if not results:  # loadRes refuses an empty list; no detections means AP 0 where there is ground truth
        if details is not None:
            details["per_class"][iou_type] = {c["name"]: 0.0 for c in cats}
            details["pr_curves"][iou_type] = {}
        return {k: 0.0 for k in names}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        ev.params.imgIds = image_ids
        if cat_ids is not None:
            ev.params.catIds = cat_ids
        if sigmas is not None:
            ev.params.kpt_oks_sigmas = sigmas
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    if details is not None:
        details["per_class"][iou_type], details["pr_curves"][iou_type] = _per_class_and_pr(ev, cats)
    # COCOeval writes -1 where there is no ground truth (e.g. no small objects).
    return {k: (None if v < 0 else float(v)) for k, v in zip(names, ev.stats)}


def _per_class_and_pr(ev: Any, cats: list[dict[str, Any]]) -> tuple[dict[str, float | None], dict[str, list[float]]]:
    """Per-category AP (IoU 0.5:0.95, all areas, 100 detections) and the class-mean PR curves
    of an accumulated COCOeval: ``({category name: AP or None}, {"recall": [...],
    "precision@0.5": [...], "precision@0.75": [...], "precision@0.5:0.95": [...]})``."""
    prec = ev.eval["precision"]  # (T, R, K, A, M); -1 where a category has no ground truth
    per_class: dict[str, float | None] = {}
    for k, c in enumerate(cats):
        p = prec[:, :, k, 0, -1]
        per_class[c["name"]] = float(p[p > -1].mean()) if (p > -1).any() else None

    def mean_curve(p: np.ndarray) -> list[float]:
        p = np.where(p > -1, p, np.nan)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return [float(v) if np.isfinite(v) else 0.0 for v in np.nanmean(p, axis=-1)]

    curves = {
        "recall": [float(r) for r in ev.params.recThrs],
        "precision@0.5": mean_curve(prec[0, :, :, 0, -1]),
        "precision@0.75": mean_curve(prec[5, :, :, 0, -1]),
        "precision@0.5:0.95": mean_curve(prec[:, :, :, 0, -1].transpose(1, 0, 2).reshape(prec.shape[1], -1)),
    }
    return per_class, curves


def evaluate_detections(detections_per_image: Mapping[int, Detections], coco_gt: Any,
                        class_names: Sequence[str] | None = None,
                        keypoint_sigmas: Sequence[float] | None = None, details: bool = False) -> dict[str, Any]:
    """COCO metrics of ``detections_per_image`` (COCO image id -> Detections) against ``coco_gt``.

    ``coco_gt``: a COCO JSON path, dataset dict or ``pycocotools.coco.COCO``. Only the
    given images are evaluated. Returns ``{"segm": {...}, "bbox": {...}, "keypoints":
    {...} or None, "images", "detections", "category_map", "unmatched_classes",
    "notes"}`` with AP/AP50/AP75/... in [0, 1] (None where COCO has no ground truth).
    ``details``: also ``"per_class"`` and ``"pr_curves"`` ({iou type: ...}), from the same
    COCOeval runs.
    """
    coco = load_coco(coco_gt)
    image_ids = sorted(int(i) for i in detections_per_image)
    unknown = [i for i in image_ids if i not in coco.imgs]
    if unknown:
        raise ValueError(f"image ids {unknown[:5]} are not in the annotations")
    num_classes = max((int(d.class_ids.max()) + 1 for d in detections_per_image.values() if len(d)), default=0)
    num_classes = max(num_classes, len(class_names or []))
    cat_ids, unmatched = category_ids_for(coco, class_names, num_classes)
    if class_names is not None and all(c is None for c in cat_ids):
        cats = ", ".join(c["name"] for c in coco.loadCats(coco.getCatIds()))
        raise ValueError(f"no model class ({', '.join(class_names)}) names a category of the annotations ({cats})")
    results: list[dict[str, Any]] = []
    for image_id in image_ids:
        img = coco.imgs[image_id]
        results += detections_to_coco(detections_per_image[image_id], image_id, int(img["height"]), int(img["width"]),
                                      cat_ids)
    notes: list[str] = list(getattr(coco, "notes", []))
    extra: dict[str, dict[str, Any]] | None = {"per_class": {}, "pr_curves": {}} if details else None
    out: dict[str, Any] = {
        "images": len(image_ids), "detections": len(results),
        "segm": _summarise(coco, results, "segm", image_ids, details=extra),
        "bbox": _summarise(coco, results, "bbox", image_ids, details=extra),
        "keypoints": None,
    }
    kp_cats = [c for c in coco.loadCats(coco.getCatIds()) if c.get("keypoints")]
    model_k = max((d.keypoints.shape[1] for d in detections_per_image.values() if d.keypoints.ndim == 3), default=0)
    if kp_cats and model_k:
        k = len(kp_cats[0]["keypoints"])
        if k != model_k:
            notes.append(f"keypoint AP skipped: the annotations have {k} keypoints per instance, the model {model_k}")
        else:
            coco_person = tuple(kp_cats[0]["keypoints"]) == COCO_PERSON_KEYPOINTS  # pycocotools' own sigmas
            sigmas = (np.asarray(keypoint_sigmas, np.float64) if keypoint_sigmas is not None
                      else None if coco_person else np.full(k, DEFAULT_KEYPOINT_SIGMA))
            ids = [c["id"] for c in kp_cats]
            kp_results = [r for r in results if r["category_id"] in ids and "keypoints" in r]
            out["keypoints"] = _summarise(coco, kp_results, "keypoints", image_ids, ids, sigmas, extra)
    elif kp_cats:
        notes.append("keypoint AP skipped: the model has no keypoints")
    out["category_map"] = {(class_names[i] if class_names else str(i)): c for i, c in enumerate(cat_ids)}
    out["unmatched_classes"] = unmatched
    out["notes"] = notes
    if extra is not None:
        out.update(extra)
    return out


def read_results_file(path: str | Path) -> list[dict[str, Any]]:
    """A COCO results file (a JSON list of ``{image_id, category_id, score, bbox | segmentation |
    keypoints}``); AnnotationError naming the file when it is not one."""
    path = Path(path)
    try:
        results = json.loads(path.read_text())
    except FileNotFoundError:
        raise AnnotationError(f"results file not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AnnotationError(f"results file {path} is not readable JSON: {exc}") from None
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        raise AnnotationError(f"results file {path} is not COCO results: expected a JSON list of detections "
                              "({image_id, category_id, score, bbox / segmentation / keypoints})")
    for i, r in enumerate(results):
        missing = [k for k in ("image_id", "category_id", "score") if k not in r]
        if missing or not any(k in r for k in ("bbox", "segmentation", "keypoints")):
            raise AnnotationError(f"results file {path}: detection {i} lacks {', '.join(missing) or 'bbox, segmentation and keypoints'}")
    return results


def evaluate_results(results: Sequence[dict[str, Any]], coco_gt: Any,
                     keypoint_sigmas: Sequence[float] | None = None) -> dict[str, Any]:
    """COCO metrics of detections already in COCO results form (another framework's output).

    Scored over every image of the ground truth, as pycocotools' own scripts do; each
    IoU type is scored when the results carry it (``segmentation`` -> "segm", ``bbox``
    -> "bbox", ``keypoints`` -> "keypoints", on the categories that declare keypoints).
    """
    coco = load_coco(coco_gt)
    image_ids = sorted(coco.getImgIds())
    known_images, known_cats = set(image_ids), set(coco.getCatIds())
    bad_images = sorted({r["image_id"] for r in results} - known_images)
    bad_cats = sorted({r["category_id"] for r in results} - known_cats)
    if bad_images or bad_cats:
        raise AnnotationError("; ".join(
            ([f"image ids the annotations do not have: {bad_images[:10]}"] if bad_images else [])
            + ([f"category ids the annotations do not have: {bad_cats[:10]}"] if bad_cats else [])))
    out: dict[str, Any] = {"images": len(image_ids), "detections": len(results), "segm": None, "bbox": None,
                           "keypoints": None, "notes": list(getattr(coco, "notes", []))}
    for iou_type, key in (("segm", "segmentation"), ("bbox", "bbox")):
        entries = [r for r in results if key in r]
        if entries:
            out[iou_type] = _summarise(coco, entries, iou_type, image_ids)
    kp_entries = [r for r in results if "keypoints" in r]
    kp_cats = [c for c in coco.loadCats(coco.getCatIds()) if c.get("keypoints")]
    if kp_entries and kp_cats:
        k = len(kp_cats[0]["keypoints"])
        coco_person = tuple(kp_cats[0]["keypoints"]) == COCO_PERSON_KEYPOINTS
        sigmas = (np.asarray(keypoint_sigmas, np.float64) if keypoint_sigmas is not None
                  else None if coco_person else np.full(k, DEFAULT_KEYPOINT_SIGMA))
        out["keypoints"] = _summarise(coco, kp_entries, "keypoints", image_ids, [c["id"] for c in kp_cats], sigmas)
    elif kp_entries:
        out["notes"].append("keypoint AP skipped: no category of the annotations declares keypoints")
    return out


def _image_stamp(img: Mapping[str, Any]) -> int | None:
    if "stamp_ns" in img:
        return int(img["stamp_ns"])
    stamp = img.get("stamp")
    if isinstance(stamp, Mapping) and "sec" in stamp:
        return int(stamp["sec"]) * 1_000_000_000 + int(stamp.get("nanosec", 0))
    return None


def align_images_to_frames(coco_gt: Any, frames: Sequence[tuple[int, int, int]]) -> tuple[dict[int, int], list[str]]:
    """Pair annotated images with recorded frames: ``{image_id: frame position}`` and notes.

    ``frames``: per frame of the run, in order (recordings in command-line order, then
    recording order), its ``(header stamp ns, width, height)``.

    The rule: when **every** COCO image carries a stamp (``"stamp_ns": int`` or
    ``"stamp": {"sec", "nanosec"}``, the header stamp of the annotated image), images
    pair with the frame of exactly that header stamp (the first, if the run has
    several); images whose stamp no frame has are left out with a note. Otherwise
    images pair **by index**: the images sorted by ``id`` are the frames in order, and
    their counts must agree. Either way, a paired image's width and height must equal
    the frame's. Raises ValueError (naming image and frame) when the rule cannot apply.
    """
    coco = load_coco(coco_gt)
    images = sorted(coco.dataset["images"], key=lambda img: img["id"])
    stamps = [_image_stamp(img) for img in images]
    notes: list[str] = []
    pairs: dict[int, int] = {}
    if images and all(s is not None for s in stamps):
        first: dict[int, int] = {}
        for pos, (stamp, _, _) in enumerate(frames):
            first.setdefault(stamp, pos)
        missing = [img["id"] for img, s in zip(images, stamps) if s not in first]
        pairs = {img["id"]: first[s] for img, s in zip(images, stamps) if s in first}
        if not pairs:
            raise ValueError(f"none of the {len(images)} annotated images has the header stamp of a replayed frame "
                             f"(aligned by stamp, because every image has one)")
        if missing:
            notes.append(f"{len(missing)} annotated images have no frame with their stamp and are not evaluated "
                         f"(ids {missing[:10]}{' ...' if len(missing) > 10 else ''})")
        rule = "stamp"
    else:
        if len(images) != len(frames):
            raise ValueError(f"the annotations have {len(images)} images and the run {len(frames)} frames; pairing by "
                             f"index needs equal counts (or give every image a 'stamp_ns' to pair by stamp)")
        pairs = {img["id"]: pos for pos, img in enumerate(images)}
        rule = "index"
    by_id = {img["id"]: img for img in images}
    for image_id, pos in pairs.items():
        img = by_id[image_id]
        _, w, h = frames[pos]
        if (int(img.get("width", w)), int(img.get("height", h))) != (w, h):
            raise ValueError(f"annotated image {image_id} ({img.get('file_name', '')}) is {img.get('width')}x"
                             f"{img.get('height')} but frame {pos} (paired by {rule}) is {w}x{h}")
    notes.insert(0, f"annotations paired with frames by {rule}: {len(pairs)} images")
    return pairs, notes
