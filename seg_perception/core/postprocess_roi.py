"""From box-first raw outputs (``ROI_OUTPUTS``: CenterMask) to ``Detections`` in source pixels.

The graph already ran detection, NMS and the per-box heads (``core.metadata.ROI_OUTPUTS``);
what is left depends on the source image and the node's parameters:

1. drop padding rows and detections at or below ``score_threshold``;
2. Fast NMS again with the node's ``nms_iou_threshold`` / ``class_agnostic_nms`` /
   ``top_k`` (the graph's own NMS used the model's export-time threshold, 0.6 in
   centermask2; a stricter node threshold suppresses more, a looser one changes
   nothing), then ``max_detections``, highest score first;
3. paste each ``M x M`` mask probability map into its box at source resolution
   (``paste_masks``) and threshold it;
4. keypoints from heatmaps (``heatmaps_to_keypoints``), scaled to source pixels.

Masks are pasted into the box the network pooled them from (not clipped), then cut to
the image: detectron2 pastes into the box after clipping it to the image, which
stretches the masks of objects cut by the frame edge.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import cv2
import numpy as np

from seg_perception.core.keypoints import keypoints_to_pixels, suppress_unused_keypoints
from seg_perception.core.postprocess import PostprocessParams, fast_nms, mask_regions
from seg_perception.core.types import CroppedMask, Detections


def _paste_taps(coords: np.ndarray, lo_edge: float, hi_edge: float, m: int) -> np.ndarray:
    """``(len(coords), m)`` bilinear weights sampling an m-cell grid spanning ``[lo_edge, hi_edge]``.

    ``coords`` are pixel centres (source pixels). A sample position outside the grid's
    cell centres reads zeros beyond the first/last cell, as ``grid_sample(...,
    padding_mode="zeros", align_corners=False)`` does in detectron2's ``paste_masks_in_image``.
    """
    span = max(hi_edge - lo_edge, 1e-6)
    u = (coords - lo_edge) / span * m - 0.5  # position in cell-centre units
    lo = np.floor(u).astype(np.int64)
    w = (u - lo).astype(np.float32)
    mat = np.zeros((coords.shape[0], m), np.float32)
    rows = np.arange(coords.shape[0])
    ok = (lo >= 0) & (lo < m)
    mat[rows[ok], lo[ok]] += 1.0 - w[ok]
    hi = lo + 1
    ok = (hi >= 0) & (hi < m)
    mat[rows[ok], hi[ok]] += w[ok]
    return mat


def paste_masks(
    masks: np.ndarray,
    boxes: np.ndarray,
    image_width: int,
    image_height: int,
    threshold: float = 0.5,
) -> list[CroppedMask]:
    """Binary masks in the source image from ``(D, M, M)`` probability grids spanning their boxes.

    masks: (D, M, M) probabilities; row/column ``i`` of a grid is centred at
           ``(i + 0.5) / M`` of its box's height/width.
    boxes: (D, 4) x1, y1, x2, y2 in source pixels, *not* clipped (the box the grid spans).
    Returns one ``CroppedMask`` per box over ``mask_regions`` of the clipped box: pixels
    whose bilinearly resampled probability exceeds ``threshold``. (Above 0.5 a mask never
    reaches outside its box, so the region loses nothing.)
    """
    masks = np.asarray(masks, np.float32)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    clipped = boxes.copy()
    np.clip(clipped[:, 0::2], 0, image_width, out=clipped[:, 0::2])
    np.clip(clipped[:, 1::2], 0, image_height, out=clipped[:, 1::2])
    regions = mask_regions(clipped, image_width, image_height)
    out: list[CroppedMask] = []
    for grid, (bx0, by0, bx1, by1), (x0, y0, x1, y1) in zip(masks, boxes, regions):
        m_h, m_w = grid.shape
        ry = _paste_taps(np.arange(y0, y1) + 0.5, by0, by1, m_h)  # (rh, M)
        rx = _paste_taps(np.arange(x0, x1) + 0.5, bx0, bx1, m_w)  # (rw, M)
        region = (ry @ grid) @ rx.T
        out.append(CroppedMask(int(x0), int(y0), (region > threshold).view(np.uint8)))
    return out


def heatmaps_to_keypoints(heatmaps: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Keypoints from ``(D, K, S, S)`` heatmap logits spanning ``(D, 4)`` boxes -> ``(D, K, 3)``.

    Follows detectron2's ``heatmaps_to_keypoints`` (Mask R-CNN): each map is resized
    bicubically to the box's size rounded up to whole pixels (in the units of ``boxes``),
    the maximum's pixel centre is the keypoint (``(i + 0.5) * box / ceil(box)`` from the
    box corner), and the score is the spatial softmax at that peak normalised over the
    ``S x S`` map (``1 / sum(exp(map - peak))``, in (0, 1]): comparable across box sizes.
    Returns x, y in the units of ``boxes`` and the score.
    """
    heatmaps = np.asarray(heatmaps, np.float32)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    d, k = heatmaps.shape[:2]
    out = np.zeros((d, k, 3), np.float32)
    for i in range(d):
        x0, y0, x1, y1 = boxes[i]
        w, h = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
        wc, hc = int(math.ceil(w)), int(math.ceil(h))
        maps = heatmaps[i]
        roi = cv2.resize(np.ascontiguousarray(maps.transpose(1, 2, 0)), (wc, hc), interpolation=cv2.INTER_CUBIC)
        roi = roi.reshape(hc * wc, k)
        pos = roi.argmax(axis=0)
        peak = roi[pos, np.arange(k)]
        with np.errstate(over="ignore"):
            score = 1.0 / np.exp(maps - peak[:, None, None]).sum(axis=(1, 2))
        out[i, :, 0] = (pos % wc + 0.5) * (w / wc) + x0
        out[i, :, 1] = (pos // wc + 0.5) * (h / hc) + y0
        out[i, :, 2] = score
    return out


def postprocess_roi(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    masks: np.ndarray,
    image_width: int,
    image_height: int,
    params: PostprocessParams | None = None,
    keypoint_heatmaps: np.ndarray | None = None,
    network_size: tuple[int, int] | None = None,
    keypoint_table: np.ndarray | None = None,
) -> Detections:
    """Detections for one image from its raw ``ROI_OUTPUTS``.

    boxes:   (D, 4) x1, y1, x2, y2 normalised to the network input (not clipped).
    scores:  (D,) scores, 0 for padding rows.
    classes: (D,) class index (float or int).
    masks:   (D, M, M) mask probabilities spanning each box.
    keypoint_heatmaps: optional (D, K, S, S) logits spanning each box.
    network_size: (width, height) of the network input; keypoints are decoded at that
                  resolution (as detectron2 decodes at its input resolution) and then
                  scaled to the source. None: decode directly at source resolution.
    keypoint_table: optional (C, K) bool (``keypoints.class_keypoint_table``).

    Returns ``Detections`` in source pixels, highest score first, boxes clipped to the image.
    """
    params = params or PostprocessParams()
    boxes = np.asarray(boxes, np.float32)
    scores = np.asarray(scores, np.float32)
    classes = np.asarray(classes)
    masks = np.asarray(masks, np.float32)
    _check_shapes(boxes, scores, classes, masks, keypoint_heatmaps, image_width, image_height)
    num_kp = 0 if keypoint_heatmaps is None else int(keypoint_heatmaps.shape[1])
    if keypoint_table is not None and (keypoint_table.ndim != 2 or keypoint_table.shape[1] != num_kp):
        raise ValueError(f"keypoint_table must be (C, K={num_kp}), got {keypoint_table.shape}")

    class_ids = np.rint(classes).astype(np.int64)
    valid = np.isfinite(boxes).all(axis=1) & np.isfinite(scores) & (scores > params.score_threshold)
    cand = np.flatnonzero(valid)
    if cand.size == 0:
        return Detections.empty(num_kp)
    scale = np.array([image_width, image_height, image_width, image_height], np.float32)
    px = boxes[cand] * scale
    px = np.concatenate([np.minimum(px[:, :2], px[:, 2:]), np.maximum(px[:, :2], px[:, 2:])], axis=1)
    clipped = px.copy()
    np.clip(clipped[:, 0::2], 0, image_width, out=clipped[:, 0::2])
    np.clip(clipped[:, 1::2], 0, image_height, out=clipped[:, 1::2])
    groups = np.zeros_like(class_ids[cand]) if params.class_agnostic else class_ids[cand]
    keep = fast_nms(clipped, scores[cand], groups, params.nms_iou_threshold, params.top_k)[: params.max_detections]
    rows = cand[keep]

    out_masks = paste_masks(masks[rows], px[keep], image_width, image_height, params.mask_threshold)
    if keypoint_heatmaps is not None:
        hm = np.asarray(keypoint_heatmaps, np.float32)[rows]
        if network_size is None:
            kps = heatmaps_to_keypoints(hm, px[keep])
        else:
            net_w, net_h = network_size
            net_boxes = boxes[rows] * np.array([net_w, net_h, net_w, net_h], np.float32)
            net_boxes = np.concatenate(
                [np.minimum(net_boxes[:, :2], net_boxes[:, 2:]), np.maximum(net_boxes[:, :2], net_boxes[:, 2:])], axis=1)
            kps = heatmaps_to_keypoints(hm, net_boxes)
            kps[..., 0] /= net_w
            kps[..., 1] /= net_h
            kps = keypoints_to_pixels(kps, image_width, image_height)
        if keypoint_table is not None:
            kps = suppress_unused_keypoints(kps, class_ids[rows], keypoint_table)
    else:
        kps = np.zeros((len(rows), 0, 3), np.float32)
    return Detections(
        boxes=clipped[keep].astype(np.float32),
        scores=scores[rows].astype(np.float32),
        class_ids=class_ids[rows].astype(np.int32),
        masks=out_masks,
        keypoints=kps.astype(np.float32),
    )


def postprocess_roi_batch(
    outputs: Mapping[str, np.ndarray],
    image_sizes: Sequence[tuple[int, int]],
    params: PostprocessParams | None = None,
    network_size: tuple[int, int] | None = None,
    keypoint_table: np.ndarray | None = None,
) -> list[Detections]:
    """``postprocess_roi`` for each image of a backend's batched ``ROI_OUTPUTS``.

    image_sizes: (width, height) of each batch element's source image.
    """
    missing = [k for k in ("boxes", "scores", "classes", "masks") if k not in outputs]
    if missing:
        raise ValueError(f"raw outputs lack {missing}; got {sorted(outputs)}")
    batch = outputs["boxes"].shape[0]
    if len(image_sizes) != batch:
        raise ValueError(f"{len(image_sizes)} image sizes given for a batch of {batch}")
    hms = outputs.get("keypoint_heatmaps")
    return [
        postprocess_roi(
            outputs["boxes"][b], outputs["scores"][b], outputs["classes"][b], outputs["masks"][b], w, h, params,
            None if hms is None else hms[b], network_size, keypoint_table,
        )
        for b, (w, h) in enumerate(image_sizes)
    ]


def _check_shapes(
    boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, masks: np.ndarray,
    heatmaps: np.ndarray | None, image_width: int, image_height: int,
) -> None:
    """Raise ValueError naming the first raw output whose shape breaks ``ROI_OUTPUTS``."""
    if image_width <= 0 or image_height <= 0:
        raise ValueError(f"bad source image size {image_width}x{image_height}")
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be (D, 4), got {boxes.shape}")
    d = boxes.shape[0]
    if scores.shape != (d,):
        raise ValueError(f"scores must be (D={d},), got {scores.shape}")
    if classes.shape != (d,):
        raise ValueError(f"classes must be (D={d},), got {classes.shape}")
    if masks.ndim != 3 or masks.shape[0] != d or min(masks.shape[1:]) < 1:
        raise ValueError(f"masks must be (D={d}, M, M), got {masks.shape}")
    if heatmaps is not None:
        hm = np.asarray(heatmaps)
        if hm.ndim != 4 or hm.shape[0] != d or min(hm.shape[2:]) < 1:
            raise ValueError(f"keypoint_heatmaps must be (D={d}, K, S, S), got {hm.shape}")


__all__ = ["paste_masks", "heatmaps_to_keypoints", "postprocess_roi", "postprocess_roi_batch"]
