"""``seg-perception evaluate``: COCO AP of a model, computed on what the node would publish.

Frames go through ``pipeline.SegmentationPipeline`` (ONNX Runtime by default: the same
pre-processing, backend and post-processing as the node), the detections are scored
by ``evaluation.evaluator`` (pycocotools): mask and box AP, AP50, AP75,
APs/m/l, and keypoint OKS AP with the dataset's ``keypoint_sigmas`` when it has them.
On top of that this tool reports a per-class table and draws precision-recall curves.

Two sources of frames:

- a COCO dataset (``--annotations DIR/annotations.json``; images relative to it), or
- a recording (``--bag BAG --annotations GT.json``): the colour frames of the bag,
  paired with annotated images by header stamp (``evaluation.coco.align_images_to_frames``),
  e.g. a ``seg-perception generate-recording`` bag and its ``ground_truth.json``.

Scores: a low ``--score-threshold`` (0.05, COCO practice) so that AP sees the whole
precision-recall curve; the node's default threshold (0.3) would cut it short.

``--protocol yolact`` is the official dbolya/yolact COCO evaluation (``eval.py``), so that
an exported official checkpoint gives its published figure: every detection ``Detect``
keeps (score threshold 0, Fast NMS without second threshold, 100 per image), boxes as the
integer boxes of its ``postprocess`` (truncated), detections whose integer box has no
area dropped. The official eval scores YOLACT++ boxes by the class score and masks by the
re-scored one; here both use the re-scored one (box AP of YOLACT++ may differ slightly).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


# name -> (score threshold, detections per image, official YOLACT integer boxes)
PROTOCOLS: dict[str, tuple[float, int, bool]] = {
    "default": (0.05, 100, False),
    "yolact": (0.0, 100, True),  # dbolya/yolact eval.py: --score_threshold 0, max_num_detections 100
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="seg-perception evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=None, help="ONNX model (default: the shipped model)")
    p.add_argument("--annotations", type=Path, required=True, help="COCO annotations (dataset or bag ground truth)")
    p.add_argument("--results", type=Path, default=None,
                   help="score this COCO results file (another framework's detections: bbox, segmentation RLE, "
                        "keypoints) instead of running a model")
    p.add_argument("--bag", type=Path, default=None, help="evaluate on this recording's colour frames")
    p.add_argument("--topic", default=None, help="image topic of the bag (default: its only colour topic)")
    p.add_argument("--max-images", type=int, default=None, help="evaluate only the first N images (by id)")
    p.add_argument("--backend", default="onnxruntime", help="inference backend (default onnxruntime)")
    p.add_argument("--threads", type=int, default=0, help="inference threads (0: the backend decides)")
    p.add_argument("--images", type=Path, default=None,
                   help="folder of the dataset's images (default: the annotations file's folder), "
                        "e.g. val2017/ beside annotations/instances_val2017.json")
    p.add_argument("--protocol", choices=sorted(PROTOCOLS), default="default",
                   help="'default': score threshold 0.05, 100 detections; 'yolact': the official "
                        "dbolya/yolact COCO evaluation (threshold 0, 100 detections, integer boxes)")
    p.add_argument("--score-threshold", type=float, default=None,
                   help="lowest score kept (default: the protocol's, 0.05 or 0)")
    p.add_argument("--out", type=Path, default=None, help="write report.json and pr_curve.png here")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of tables")
    return p


def score_results_file(args: argparse.Namespace) -> int:
    """``--results``: pycocotools AP of a COCO results file; no model runs."""
    from seg_perception.evaluation.coco import AnnotationError
    from seg_perception.evaluation.evaluator import evaluate_results_file
    from seg_perception.evaluation.report import format_report

    try:
        report = evaluate_results_file(args.results, args.annotations)
    except AnnotationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2) if args.json else f"results {args.results}\n" + format_report(report))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.results is not None:
        return score_results_file(args)
    from seg_perception.evaluation.evaluator import bag_frames, dataset_frames, evaluate_model
    from seg_perception.evaluation.report import format_report, save_pr_plot
    from seg_perception.pipeline import load_evaluation_pipeline
    from seg_perception.runtime.base import BackendError

    threshold, max_detections, integer_boxes = PROTOCOLS[args.protocol]
    if args.score_threshold is not None:
        threshold = args.score_threshold
    try:
        pipeline = load_evaluation_pipeline(args.model, args.backend, args.threads, threshold, max_detections)
    except BackendError as exc:  # missing, corrupt or foreign model file, or a backend that is not installed
        print(f"error: {exc}", file=sys.stderr)
        return 2
    notes: list[str] = [f"protocol {args.protocol}: score threshold {threshold:g}, {max_detections} detections per image"
                        + (", integer boxes" if integer_boxes else "")]
    try:
        if args.bag is not None:
            frames = bag_frames(args.bag, args.annotations, args.topic, args.max_images, notes)
        else:
            frames = dataset_frames(args.annotations, args.max_images, args.images)
        report = evaluate_model(pipeline, frames, args.annotations, notes, integer_boxes)
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
