"""``seg-perception evaluate``: COCO AP of a model, computed on what the node would publish.

Frames go through ``pipeline.SegmentationPipeline`` (ONNX Runtime by default: the same
pre-processing, backend and post-processing as the node), the detections are scored
by ``evaluation.coco.evaluate_detections`` (pycocotools): mask and box AP, AP50, AP75,
APs/m/l, and keypoint OKS AP with the dataset's ``keypoint_sigmas`` when it has them.
On top of that this tool reports a per-class table and draws precision-recall curves.

Two sources of frames:

- a COCO dataset (``--annotations DIR/annotations.json``; images relative to it), or
- a recording (``--bag BAG --annotations GT.json``): the colour frames of the bag,
  paired with annotated images by header stamp (``evaluation.coco.align_images_to_frames``),
  e.g. a ``seg-perception generate-recording`` bag and its ``ground_truth.json``.

Scores: a low ``--score-threshold`` (0.05, COCO practice) so that AP sees the whole
precision-recall curve; the node's default threshold (0.3) would cut it short.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="seg-perception evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=None, help="ONNX model (default: the shipped model)")
    p.add_argument("--annotations", type=Path, required=True, help="COCO annotations (dataset or bag ground truth)")
    p.add_argument("--bag", type=Path, default=None, help="evaluate on this recording's colour frames")
    p.add_argument("--topic", default=None, help="image topic of the bag (default: its only colour topic)")
    p.add_argument("--max-images", type=int, default=None, help="evaluate only the first N images (by id)")
    p.add_argument("--backend", default="onnxruntime", help="inference backend (default onnxruntime)")
    p.add_argument("--threads", type=int, default=0, help="inference threads (0: the backend decides)")
    p.add_argument("--score-threshold", type=float, default=0.05, help="lowest score kept (default 0.05)")
    p.add_argument("--out", type=Path, default=None, help="write report.json and pr_curve.png here")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of tables")
    return p


def load_evaluation_pipeline(model: Path | None, backend: str = "onnxruntime", threads: int = 0,
                             score_threshold: float = 0.05) -> Any:
    """A ``SegmentationPipeline`` with evaluation post-processing (low threshold, 100 detections)."""
    from seg_perception.core.postprocess import PostprocessParams
    from seg_perception.pipeline import SegmentationPipeline, backend_options, default_model_path
    from seg_perception.runtime.factory import create_backend

    path = model if model is not None else default_model_path()
    opts = backend_options(backend, "cpu", "fp32", threads)
    params = PostprocessParams(score_threshold=score_threshold, max_detections=100)
    return SegmentationPipeline(create_backend(backend, path, **opts), params)


def dataset_frames(annotations: Path, max_images: int | None) -> Iterator[tuple[int, np.ndarray]]:
    """``(image id, RGB)`` of a COCO dataset's images, in id order."""
    import cv2

    doc = json.loads(annotations.read_text())
    for img in sorted(doc["images"], key=lambda im: im["id"])[:max_images]:
        path = annotations.parent / img["file_name"]
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(f"image {path} (id {img['id']}) is missing or unreadable")
        yield int(img["id"]), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def bag_frames(bag: Path, annotations: Path, topic: str | None, max_images: int | None,
               notes: list[str]) -> Iterator[tuple[int, np.ndarray]]:
    """``(image id, RGB)`` of the bag's frames that have annotations (paired by stamp or index)."""
    from seg_perception.bags import read_images, rosbags_image_to_fields
    from seg_perception.core.image import decode_compressed, decode_image
    from seg_perception.evaluation.coco import align_images_to_frames

    frames = []
    for item in read_images(bag, topic):
        fields = rosbags_image_to_fields(item.msg)
        rgb = decode_compressed(fields["format"], fields["data"]) if "format" in fields else decode_image(**fields)
        stamp = item.msg.header.stamp
        frames.append((int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec), rgb))
    pairs, pair_notes = align_images_to_frames(str(annotations), [(s, f.shape[1], f.shape[0]) for s, f in frames])
    notes.extend(pair_notes)
    for image_id in sorted(pairs)[:max_images]:
        yield image_id, frames[pairs[image_id]][1]


def per_class_and_pr(coco: Any, results: list[dict[str, Any]], iou_type: str, image_ids: list[int],
                     sigmas: Any = None) -> tuple[dict[str, float | None], dict[str, list[float]]]:
    """Per-category AP (IoU 0.5:0.95, all areas, 100 detections) and the class-mean PR curves.

    Returns ``({category name: AP or None}, {"recall": [...], "precision@0.5": [...],
    "precision@0.75": [...], "precision@0.5:0.95": [...]})``.
    """
    from pycocotools.cocoeval import COCOeval

    cats = sorted(coco.loadCats(coco.getCatIds()), key=lambda c: c["id"])
    if iou_type == "keypoints":
        cats = [c for c in cats if c.get("keypoints")]
    if not results:
        return {c["name"]: 0.0 for c in cats}, {}
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(coco, coco.loadRes(copy.deepcopy(results)), iou_type)
        ev.params.imgIds = image_ids
        ev.params.catIds = [c["id"] for c in cats]
        if sigmas is not None:
            ev.params.kpt_oks_sigmas = np.asarray(sigmas, np.float64)
        ev.evaluate()
        ev.accumulate()
    prec = ev.eval["precision"]  # (T, R, K, A, M); -1 where a category has no ground truth
    per_class: dict[str, float | None] = {}
    for k, c in enumerate(cats):
        p = prec[:, :, k, 0, -1]
        per_class[c["name"]] = float(p[p > -1].mean()) if (p > -1).any() else None

    def mean_curve(p: np.ndarray) -> list[float]:
        p = np.where(p > -1, p, np.nan)
        with np.errstate(invalid="ignore"), __import__("warnings").catch_warnings():
            __import__("warnings").simplefilter("ignore", RuntimeWarning)
            return [float(v) if np.isfinite(v) else 0.0 for v in np.nanmean(p, axis=-1)]

    curves = {
        "recall": [float(r) for r in ev.params.recThrs],
        "precision@0.5": mean_curve(prec[0, :, :, 0, -1]),
        "precision@0.75": mean_curve(prec[5, :, :, 0, -1]),
        "precision@0.5:0.95": mean_curve(prec[:, :, :, 0, -1].transpose(1, 0, 2).reshape(prec.shape[1], -1)),
    }
    return per_class, curves


def evaluate_frames(pipeline: Any, frames: Iterator[tuple[int, np.ndarray]], annotations: Path,
                    notes: list[str] | None = None) -> dict[str, Any]:
    """Run the pipeline on the frames and score them; the full report (see ``main``)."""
    from seg_perception.evaluation.coco import category_ids_for, detections_to_coco, evaluate_detections, load_coco

    doc = json.loads(Path(annotations).read_text())
    coco = load_coco(doc)
    md = pipeline.metadata
    sigmas = doc.get("keypoint_sigmas")
    if sigmas is not None and len(sigmas) != md.num_keypoints:
        sigmas = None
    dets: dict[int, Any] = {}
    seconds = 0.0
    for image_id, rgb in frames:
        t0 = time.perf_counter()
        dets[image_id] = pipeline(rgb)
        seconds += time.perf_counter() - t0
    if not dets:
        raise ValueError("no annotated frames to evaluate")
    report = evaluate_detections(dets, coco, class_names=md.class_names, keypoint_sigmas=sigmas)
    report["notes"] = list(notes or []) + report["notes"]
    report["fps"] = len(dets) / seconds if seconds > 0 else None
    report["model"] = md.name
    report["annotations"] = str(annotations)
    cat_ids, _ = category_ids_for(coco, md.class_names, md.num_classes)
    results: list[dict[str, Any]] = []
    for image_id, d in dets.items():
        img = coco.imgs[image_id]
        results += detections_to_coco(d, image_id, int(img["height"]), int(img["width"]), cat_ids)
    image_ids = sorted(dets)
    report["per_class"] = {}
    report["pr_curves"] = {}
    for iou_type in ("segm", "bbox") + (("keypoints",) if report.get("keypoints") else ()):
        rs = [r for r in results if "keypoints" in r] if iou_type == "keypoints" else results
        per_class, curves = per_class_and_pr(coco, rs, iou_type, image_ids, sigmas if iou_type == "keypoints" else None)
        report["per_class"][iou_type] = per_class
        report["pr_curves"][iou_type] = curves
    return report


def save_pr_plot(report: dict[str, Any], path: Path) -> None:
    """precision-recall curves (class mean) of masks, boxes and keypoints."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [k for k in ("segm", "bbox", "keypoints") if report["pr_curves"].get(k)]
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.5 * len(kinds), 4), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        c = report["pr_curves"][kind]
        for key in ("precision@0.5", "precision@0.75", "precision@0.5:0.95"):
            ax.plot(c["recall"], c[key], label=key.replace("precision@", "IoU " if kind != "keypoints" else "OKS "))
        ap = (report.get(kind) or {}).get("AP")
        ax.set_title(f"{ {'segm': 'mask', 'bbox': 'box', 'keypoints': 'keypoint'}[kind]} AP {ap if ap is None else f'{ap:.3f}'}")
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{report.get('model', '')} on {Path(report['annotations']).parent.name} ({report['images']} images)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def format_report(report: dict[str, Any]) -> str:
    def f(v: Any) -> str:
        return "  -  " if v is None else f"{v:.3f}"

    lines = [f"model {report.get('model')}  images {report['images']}  detections {report['detections']}  "
             f"fps {report['fps']:.1f} (pre + inference + post, this machine)" if report.get("fps") else ""]
    lines.append(f"{'':10s} {'AP':>6s} {'AP50':>6s} {'AP75':>6s} {'APs':>6s} {'APm':>6s} {'APl':>6s}")
    for name, key in (("mask", "segm"), ("box", "bbox"), ("keypoints", "keypoints")):
        s = report.get(key)
        if s:
            lines.append(f"{name:10s} " + " ".join(f"{f(s.get(k)):>6s}" for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")))
    per = report.get("per_class", {})
    if per.get("segm"):
        lines.append("")
        lines.append(f"{'class':12s} {'mask AP':>8s} {'box AP':>8s} {'kpt AP':>8s}")
        for name in per["segm"]:
            lines.append(f"{name:12s} {f(per['segm'].get(name)):>8s} {f(per.get('bbox', {}).get(name)):>8s} "
                         f"{f(per.get('keypoints', {}).get(name)):>8s}")
    for note in report.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    pipeline = load_evaluation_pipeline(args.model, args.backend, args.threads, args.score_threshold)
    notes: list[str] = []
    try:
        if args.bag is not None:
            frames = bag_frames(args.bag, args.annotations, args.topic, args.max_images, notes)
        else:
            frames = dataset_frames(args.annotations, args.max_images)
        report = evaluate_frames(pipeline, frames, args.annotations, notes)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        pipeline.close()
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        slim = {k: v for k, v in report.items() if k != "pr_curves"}
        (args.out / "report.json").write_text(json.dumps(slim, indent=2) + "\n")
        save_pr_plot(report, args.out / "pr_curve.png")
    print(json.dumps({k: v for k, v in report.items() if k != "pr_curves"}, indent=2) if args.json
          else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
