"""The one evaluator: frames through a predictor, scored by ``coco.evaluate_detections``.

Training's AP curve (a torch predictor), ``seg-perception evaluate`` and the shipped
model's release record (the ONNX pipeline), and ``seg-perception regress
--annotations`` (a run's recorded detections, ``evaluate_stamped``) all score here, so
a figure in one place means the same as in another. The evaluator knows nothing of
the model beyond a callable ``rgb -> Detections``.

Frame sources: ``dataset_frames`` (a COCO dataset's images) and ``bag_frames`` (a
recording's colour frames paired with annotated images by stamp).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from seg_perception.core.stamps import stamp_ns
from seg_perception.core.types import Detections
from seg_perception.evaluation.coco import (
    align_images_to_frames, evaluate_detections, evaluate_results, load_coco, read_annotation_file, read_results_file,
)

Predict = Callable[[np.ndarray], Detections]


def dataset_frames(annotations: Path, max_images: int | None = None,
                   images: Path | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """``(image id, RGB)`` of a COCO dataset's images (in ``images``, default beside the annotations),
    in id order, as the node would receive them (RGB, source size)."""
    import cv2

    annotations = Path(annotations)
    doc = read_annotation_file(annotations)
    folder = images if images is not None else annotations.parent
    for img in sorted(doc["images"], key=lambda im: im["id"])[:max_images]:
        path = folder / img["file_name"]
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(f"image {path} (id {img['id']}) is missing or unreadable")
        yield int(img["id"]), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def bag_frames(bag: Path, annotations: Path, topic: str | None, max_images: int | None,
               notes: list[str]) -> Iterator[tuple[int, np.ndarray]]:
    """``(image id, RGB)`` of the bag's frames that have annotations (paired by stamp or index)."""
    from seg_perception.bags import read_images, rosbags_image_to_fields
    from seg_perception.core.image import decode_compressed, decode_image

    frames = []
    for item in read_images(bag, topic):
        fields = rosbags_image_to_fields(item.msg)
        rgb = decode_compressed(fields["format"], fields["data"]) if "format" in fields else decode_image(**fields)
        frames.append((stamp_ns(item.msg.header.stamp), rgb))
    pairs, pair_notes = align_images_to_frames(str(annotations), [(s, f.shape[1], f.shape[0]) for s, f in frames])
    notes.extend(pair_notes)
    for image_id in sorted(pairs)[:max_images]:
        yield image_id, frames[pairs[image_id]][1]


def yolact_integer_boxes(dets: Detections) -> Detections:
    """The official YOLACT evaluation's boxes: truncated to integers, zero-area ones dropped.

    Its ``postprocess`` returns ``boxes.long()`` of the clipped boxes and ``eval.py`` skips
    a detection (box and mask) whose integer box has no area.
    """
    boxes = np.floor(dets.boxes).astype(np.float32)
    keep = np.flatnonzero((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) > 0)
    return Detections(boxes=boxes[keep], scores=dets.scores[keep], class_ids=dets.class_ids[keep],
                      masks=[dets.masks[i] for i in keep], keypoints=dets.keypoints[keep])


def evaluate_predictor(predict: Predict, frames: Iterable[tuple[int, np.ndarray]],
                       annotations: str | Path | Mapping[str, Any], *,
                       class_names: Sequence[str] | None = None, keypoint_sigmas: Sequence[float] | None = None,
                       details: bool = False, notes: Sequence[str] = (), integer_boxes: bool = False) -> dict[str, Any]:
    """COCO metrics of ``predict`` on ``frames`` ((COCO image id, RGB) pairs) against ``annotations``
    (a COCO file, or its document as the caller prepared it).

    class_names:     the model's classes, mapped to categories by name (None: class i is
                     the i-th category by id).
    keypoint_sigmas: OKS sigmas (None: the annotations' ``keypoint_sigmas`` if they have them).
    integer_boxes:   ``yolact_integer_boxes`` on every image (``--protocol yolact``; not timed).
    The report of ``coco.evaluate_detections`` (``details``: with per-class AP and PR
    curves) plus ``fps`` (frames per second of ``predict``, pre- and post-processing
    included, this machine), ``annotations`` and ``notes`` (``notes`` first).
    ValueError when there is no frame.
    """
    doc = dict(annotations) if isinstance(annotations, Mapping) else read_annotation_file(annotations)
    coco = load_coco(doc)
    if keypoint_sigmas is None:
        keypoint_sigmas = doc.get("keypoint_sigmas") or None
    dets: dict[int, Detections] = {}
    seconds = 0.0
    for image_id, rgb in frames:
        t0 = time.perf_counter()
        dets[image_id] = predict(rgb)
        seconds += time.perf_counter() - t0
        if integer_boxes:
            dets[image_id] = yolact_integer_boxes(dets[image_id])
    if not dets:
        raise ValueError("no annotated frames to evaluate")
    report = evaluate_detections(dets, coco, class_names=class_names, keypoint_sigmas=keypoint_sigmas,
                                 details=details)
    report["notes"] = list(notes) + report["notes"]
    report["fps"] = len(dets) / seconds if seconds > 0 else None
    report["annotations"] = None if isinstance(annotations, Mapping) else str(annotations)
    return report


def evaluate_model(pipeline: Any, frames: Iterable[tuple[int, np.ndarray]], annotations: str | Path,
                   notes: Sequence[str] = (), integer_boxes: bool = False) -> dict[str, Any]:
    """``evaluate_predictor`` of a model pipeline (callable, with ``metadata``): its class
    names map to categories; with per-class AP and PR curves, and the model's name."""
    md = pipeline.metadata
    report = evaluate_predictor(pipeline, frames, annotations, class_names=md.class_names, details=True, notes=notes,
                                integer_boxes=integer_boxes)
    report["model"] = md.name
    return report


def evaluate_stamped(frames: Sequence[tuple[int, int, int, Detections | None]], annotations: str | Path,
                     class_names: Sequence[str] | None) -> dict[str, Any]:
    """COCO metrics of a run's outputs: ``frames`` are (stamp ns, width, height, detections
    or None where the run has no output), paired with annotated images by stamp
    (``coco.align_images_to_frames``); frames without output are left out and counted."""
    coco = load_coco(annotations)
    pairs, notes = align_images_to_frames(coco, [(s, w, h) for s, w, h, _ in frames])
    dropped = [i for i, pos in pairs.items() if frames[pos][3] is None]
    if dropped:
        notes.append(f"{len(dropped)} annotated frames had no output (dropped) and are not evaluated")
    per_image = {i: frames[pos][3] for i, pos in pairs.items() if frames[pos][3] is not None}
    result = evaluate_detections(per_image, coco, class_names)
    result["notes"] = notes + result["notes"]
    result["annotations"] = str(annotations)
    return result


def evaluate_results_file(results: str | Path, annotations: str | Path) -> dict[str, Any]:
    """pycocotools AP of a COCO results file (another framework's detections) against the
    annotations; AnnotationError (one line) when a file is unreadable or does not fit."""
    from seg_perception.evaluation.coco import AnnotationError

    doc = read_annotation_file(annotations)
    detections = read_results_file(results)
    try:
        report = evaluate_results(detections, doc, doc.get("keypoint_sigmas"))
    except AnnotationError as exc:
        raise AnnotationError(f"{results} does not fit {annotations}: {exc} (results of another dataset?)") from None
    report.update({"results": str(results), "annotations": str(annotations), "model": None})
    return report
