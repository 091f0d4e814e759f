"""Our post-processing against the obvious full-resolution one, at 1, 20 and 100 instances.

Both take the same raw outputs (boxes, scores, coefficients, prototypes), share the
same thresholding and Fast NMS, and end in message-ready run-length encodings.
Ours assembles each mask only where it can be set (its box plus the official
one-prototype-pixel padding), at source resolution, and encodes the crop. The naive
reference does what a first implementation (and the official code) does: per instance,
sigmoid of the prototype product over the whole map, zero outside the padded box,
resize to the full image, threshold, and encode the full-frame mask.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from seg_perception.benchmark.timing import interleaved, stats
from seg_perception.core.masks import encode_coco_rle
from seg_perception.core.postprocess import PostprocessParams, postprocess_yolact, proto_crop_windows
from seg_perception.core.types import CroppedMask


def naive_full_frame_masks(coeffs: np.ndarray, protos: np.ndarray, boxes: np.ndarray, image_width: int,
                           image_height: int, mask_threshold: float = 0.5) -> list[CroppedMask]:
    """Full-image masks the obvious (official) way, a drop-in for ``assemble_masks``.

    boxes: normalised network-input boxes, as ``assemble_masks`` takes them.
    """
    import cv2

    hp, wp = protos.shape[:2]
    c0, c1, r0, r1 = proto_crop_windows(boxes, hp, wp)
    out = []
    for i, coeff in enumerate(coeffs):
        prob = 1.0 / (1.0 + np.exp(-(protos @ coeff)))
        cropped = np.zeros((hp, wp), np.float32)
        cropped[r0[i]:r1[i], c0[i]:c1[i]] = prob[r0[i]:r1[i], c0[i]:c1[i]]
        full = cv2.resize(cropped, (image_width, image_height), interpolation=cv2.INTER_LINEAR)
        out.append(CroppedMask(0, 0, (full > mask_threshold).astype(np.uint8)))
    return out


def synthetic_raw_outputs(num_instances: int, num_priors: int = 19248, num_classes: int = 80,
                          protos_hw: tuple[int, int] = (138, 138), seed: int = 0) -> dict[str, np.ndarray]:
    """Raw outputs with exactly ``num_instances`` well-separated confident detections."""
    rng = np.random.default_rng(seed)
    corners = np.sort(rng.uniform(0, 1, (num_priors, 2, 2)), axis=1)  # (N, [lo, hi], [x, y])
    boxes = corners.reshape(num_priors, 4)  # x1, y1, x2, y2
    scores = rng.uniform(0, 0.05, (num_priors, num_classes)).astype(np.float32)
    # Instances on a grid so NMS keeps them all; sizes like real objects (5-25 % of the image).
    side = int(np.ceil(np.sqrt(num_instances)))
    for i in range(num_instances):
        r, c = divmod(i, side)
        x0, y0 = c / side, r / side
        w = h = 0.8 / side
        boxes[i] = (x0, y0, x0 + w, y0 + h)
        scores[i, i % num_classes] = 0.9
    return {
        "boxes": boxes.astype(np.float32),
        "scores": scores,
        "mask_coeffs": rng.uniform(-1, 1, (num_priors, 32)).astype(np.float32),
        "protos": rng.uniform(0, 1, (*protos_hw, 32)).astype(np.float32),
    }


def bench_postprocessing(image_size: tuple[int, int] = (640, 480), counts: tuple[int, ...] = (1, 20, 100),
                         iterations: int = 20, progress: bool = True) -> list[dict[str, Any]]:
    width, height = image_size
    params = PostprocessParams(score_threshold=0.5, max_detections=max(counts))
    rows = []
    for n in counts:
        raw = synthetic_raw_outputs(n)

        def run(assembler=None) -> list:
            dets = postprocess_yolact(raw["boxes"], raw["scores"], raw["mask_coeffs"], raw["protos"],
                                      width, height, params, mask_assembler=assembler)
            assert len(dets) == n
            return [encode_coco_rle(m) for m in dets.masks]

        ours, naive = run, (lambda: run(naive_full_frame_masks))
        times = interleaved({"ours": ours, "naive": naive}, iterations, 2, progress, desc=f"post {n}")
        s_ours, s_naive = stats(times["ours"]), stats(times["naive"])
        rows.append({"instances": n, "image": f"{width}x{height}", "ours": s_ours, "naive": s_naive,
                     "speedup": round(s_naive["p50_ms"] / s_ours["p50_ms"], 2)})
    return rows
