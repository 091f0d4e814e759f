"""Evaluate the 3D and tracking outputs against the synthetic scenes' ground truth.

No trained model is needed: detections are made from the generator's ground-truth
masks, and for tracking they are perturbed the way a detector errs (see
``DetectionNoise``), so the figures measure the tracker and the depth geometry, not
a network. ``python -m seg_perception.tools.synth_eval tracking|depth3d --help``.

Frames: 3D ground truth is ``InstanceTruth.visible_centroid_3d``, the mean of the
object's visible surface points in the camera optical frame (metres), i.e. what a
perfect depth camera and a perfect mask would give.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import cv2
import numpy as np

from seg_perception.core.depth3d import CameraIntrinsics, Depth3DParams, instances_3d
from seg_perception.core.tracking import Tracker, TrackerParams
from seg_perception.core.tracking_metrics import MotAccumulator, MotSummary
from seg_perception.core.types import CroppedMask, Detections
from seg_perception.synth.scene import Frame, generate_frame, generate_sequence


def detections_from_frame(frame: Frame) -> Detections:
    """Perfect detections of a synthetic frame: ground-truth masks cut to their boxes,
    score 1, the true class; ``track_ids`` are left 0 (the truth is in ``gt_ids``)."""
    masks, boxes, classes = [], [], []
    for inst in frame.instances:
        x, y, w, h = inst.bbox
        masks.append(CroppedMask(int(x), int(y), inst.mask[y:y + h, x:x + w].astype(np.uint8)))
        boxes.append([x, y, x + w, y + h])
        classes.append(inst.class_id)
    n = len(masks)
    return Detections(
        boxes=np.asarray(boxes, np.float32).reshape(n, 4),
        scores=np.ones(n, np.float32),
        class_ids=np.asarray(classes, np.int32).reshape(n),
        masks=masks,
        keypoints=np.zeros((n, 0, 3), np.float32),
    )


def gt_ids(frame: Frame) -> np.ndarray:
    return np.asarray([inst.track_id for inst in frame.instances], np.int64)


def intrinsics_of(frame: Frame) -> CameraIntrinsics:
    c = frame.camera
    return CameraIntrinsics(c.fx, c.fy, c.cx, c.cy)


# ----------------------------------------------------------------------------
# Detector-like noise


@dataclass(frozen=True)
class DetectionNoise:
    """How perturbed ground truth imitates a detector (probabilities per detection).

    dropout:      a true object is not detected in this frame.
    low_score:    a detected object gets a low score (U(0.15, 0.5), ByteTrack's case).
    box_sigma:    each box edge moves by N(0, box_sigma x box size) pixels.
    mask_morph:   the mask is eroded or dilated by 1 px (each with half this).
    class_flip:   the class is replaced by a random one.
    false_positives: mean number (Poisson) of spurious boxes per frame, score U(0.1, 0.7).
    """

    dropout: float = 0.1
    low_score: float = 0.15
    box_sigma: float = 0.03
    mask_morph: float = 0.3
    class_flip: float = 0.02
    false_positives: float = 0.3

    @staticmethod
    def none() -> "DetectionNoise":
        return DetectionNoise(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def perturb_detections(dets: Detections, ids: np.ndarray, height: int, width: int, noise: DetectionNoise,
                       rng: np.random.Generator, num_classes: int = 7) -> tuple[Detections, np.ndarray]:
    """Noisy copy of perfect detections, and the gt id of each (0 for false positives)."""
    k = np.ones((3, 3), np.uint8)
    boxes, scores, classes, masks, out_ids = [], [], [], [], []
    for i in range(len(dets)):
        if rng.random() < noise.dropout:
            continue
        b = dets.boxes[i].astype(np.float64)
        size = np.array([b[2] - b[0], b[3] - b[1]] * 2)
        b = b + rng.normal(0.0, noise.box_sigma, 4) * size
        b[[0, 2]] = np.clip(np.sort(b[[0, 2]]), 0, width)
        b[[1, 3]] = np.clip(np.sort(b[[1, 3]]), 0, height)
        m = dets.masks[i]
        u = rng.random()
        data = m.data
        if u < noise.mask_morph / 2:
            eroded = cv2.erode(data, k)
            data = eroded if eroded.any() else data
        elif u < noise.mask_morph:
            data = cv2.dilate(np.pad(data, 1), k)
            m = CroppedMask(m.x - 1, m.y - 1, data)
            data = m.data
        boxes.append(b)
        scores.append(rng.uniform(0.15, 0.5) if rng.random() < noise.low_score else rng.uniform(0.55, 0.95))
        cls = int(dets.class_ids[i])
        if rng.random() < noise.class_flip:
            cls = int(rng.integers(num_classes))
        classes.append(cls)
        masks.append(CroppedMask(m.x, m.y, data))
        out_ids.append(int(ids[i]))
    for _ in range(int(rng.poisson(noise.false_positives))):
        w, h = rng.uniform(15, 80, 2)
        x, y = rng.uniform(0, max(width - w, 1)), rng.uniform(0, max(height - h, 1))
        boxes.append([x, y, x + w, y + h])
        scores.append(rng.uniform(0.1, 0.7))
        classes.append(int(rng.integers(num_classes)))
        masks.append(CroppedMask(int(x), int(y), np.ones((max(int(h), 1), max(int(w), 1)), np.uint8)))
        out_ids.append(0)
    n = len(boxes)
    return Detections(
        boxes=np.asarray(boxes, np.float32).reshape(n, 4),
        scores=np.asarray(scores, np.float32).reshape(n),
        class_ids=np.asarray(classes, np.int32).reshape(n),
        masks=masks,
        keypoints=np.zeros((n, 0, 3), np.float32),
    ), np.asarray(out_ids, np.int64)


# ----------------------------------------------------------------------------
# Tracking


def evaluate_tracking(frames: Iterable[Frame], params: TrackerParams | None = None,
                      noise: DetectionNoise | None = None, seed: int = 0,
                      iou_threshold: float = 0.5) -> MotSummary:
    """Run ``Tracker`` over noisy ground-truth detections of ``frames``; CLEAR-MOT totals.

    Matching for the metrics uses box IoU >= ``iou_threshold`` (the MOT convention)
    between the published instances (track id != 0) and the true boxes.
    """
    noise = noise if noise is not None else DetectionNoise()
    rng = np.random.default_rng([seed, 8])
    tracker = Tracker(params)
    acc = MotAccumulator(iou_threshold)
    for frame in frames:
        perfect = detections_from_frame(frame)
        ids = gt_ids(frame)
        noisy, _ = perturb_detections(perfect, ids, frame.camera.height, frame.camera.width, noise, rng)
        out = tracker.update(noisy, frame.stamp_ns)
        acc.update_boxes(ids, perfect.boxes, out.track_ids.astype(np.int64), out.boxes)
    return acc.summary()


def combine(summaries: Sequence[MotSummary]) -> dict:
    """Totals over several sequences (sums; MOTA and IDF1 recomputed from them where exact)."""
    keys = ["num_frames", "num_gt", "num_predictions", "num_matches", "num_misses", "num_false_positives",
            "num_id_switches", "num_fragmentations", "num_unique_gt", "mostly_tracked", "mostly_lost"]
    tot = {k: int(sum(getattr(s, k) for s in summaries)) for k in keys}
    errors = tot["num_misses"] + tot["num_false_positives"] + tot["num_id_switches"]
    tot["mota"] = 1.0 - errors / max(tot["num_gt"], 1)
    tot["idf1_mean"] = float(np.mean([s.idf1 for s in summaries])) if summaries else 0.0
    tot["id_switches_per_100_gt"] = 100.0 * tot["num_id_switches"] / max(tot["num_gt"], 1)
    return tot


# ----------------------------------------------------------------------------
# 3D


def centroid_errors(frames: Iterable[Frame], params: Depth3DParams | None = None,
                    depth_range: tuple[float, float] = (0.5, 1.5), min_area: int = 300) -> np.ndarray:
    """Centroid errors (metres) of perfect-mask detections whose true centroid depth lies
    in ``depth_range`` and whose mask has at least ``min_area`` pixels; NaN where the
    instance got no 3D."""
    errs = []
    for frame in frames:
        dets = detections_from_frame(frame)
        res = instances_3d(dets, frame.depth, intrinsics_of(frame), params=params)
        for i, inst in enumerate(frame.instances):
            z = inst.visible_centroid_3d[2]
            if not (depth_range[0] <= z < depth_range[1]) or inst.area < min_area:
                continue
            errs.append(np.linalg.norm(res.centroids[i] - inst.visible_centroid_3d) if res.valid[i] else np.nan)
    return np.asarray(errs, np.float64)


# ----------------------------------------------------------------------------
# Command line


def _stats_cm(e: np.ndarray) -> dict:
    ok = e[np.isfinite(e)] * 100
    if ok.size == 0:
        return {"n": int(e.size), "valid": 0}
    return {"n": int(e.size), "valid": int(ok.size), "median_cm": round(float(np.median(ok)), 2),
            "mean_cm": round(float(ok.mean()), 2), "p90_cm": round(float(np.percentile(ok, 90)), 2),
            "p95_cm": round(float(np.percentile(ok, 95)), 2), "max_cm": round(float(ok.max()), 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="seg-perception synth-eval", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    t = sub.add_parser("tracking", help="ID switches / fragmentations on noisy ground-truth detections")
    t.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    t.add_argument("--frames", type=int, default=150)
    t.add_argument("--width", type=int, default=640)
    t.add_argument("--height", type=int, default=480)
    t.add_argument("--fps", type=float, default=15.0)
    t.add_argument("--matcher", default="auto", choices=("auto", "hungarian", "greedy"))
    t.add_argument("--no-noise", action="store_true")
    d = sub.add_parser("depth3d", help="centroid error against the visible-surface centroid")
    d.add_argument("--seed", type=int, default=7)
    d.add_argument("--frames", type=int, default=40)
    d.add_argument("--width", type=int, default=640)
    d.add_argument("--height", type=int, default=480)
    d.add_argument("--erosion", type=int, default=2)
    d.add_argument("--method", default="median", choices=("median", "trimmed_mean"))
    args = ap.parse_args(argv)
    t0 = time.time()
    if args.what == "tracking":
        params = TrackerParams(matcher=args.matcher)
        noise = DetectionNoise.none() if args.no_noise else DetectionNoise()
        sums = []
        for s in args.seeds:
            frames = generate_sequence(s, args.frames, fps=args.fps, width=args.width, height=args.height)
            sums.append(evaluate_tracking(frames, params, noise, seed=s))
            print(json.dumps({"seed": s, **{k: (round(v, 4) if isinstance(v, float) else v)
                                            for k, v in sums[-1].as_dict().items()}}), flush=True)
        print(json.dumps({"total": combine(sums), "params": asdict(params), "noise": asdict(noise),
                          "seconds": round(time.time() - t0, 1)}))
    else:
        params = Depth3DParams(erosion_px=args.erosion, centroid_method=args.method)
        frames = (generate_frame(args.seed, i, width=args.width, height=args.height) for i in range(args.frames))
        errs = centroid_errors(frames, params)
        print(json.dumps({"depth_0.5_1.5m": _stats_cm(errs), "params": asdict(params),
                          "seconds": round(time.time() - t0, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
