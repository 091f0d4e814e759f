"""From YOLACT-style raw outputs to ``Detections`` in source-image pixels.

The graph ends where shapes become data-dependent (see ``YOLACT_OUTPUTS`` in
``core.metadata``); everything after that lives here:

1. score threshold: a cheap pre-filter on each prior's best class score, then
   per (prior, class) pair, as YOLACT's ``Detect`` does;
2. per-class ``top_k`` and **Fast NMS** (Bolya et al., "YOLACT: Real-time Instance
   Segmentation", ICCV 2019, sec. 3.5): for each class, the IoU matrix of its
   candidates sorted by score, keep only the upper triangle (each box compared
   with the higher-scoring ones), take the max over each column and keep boxes
   whose max IoU is <= the threshold. Unlike greedy NMS, an already suppressed box
   may still suppress others; that is what makes it one matrix operation;
3. sort by score, keep ``max_detections``;
4. masks assembled only inside each instance's box (see ``assemble_masks``).

Network boxes, prototypes and keypoints are normalised to the network input,
which is a plain (non-letterboxed) resize of the source image, so normalised
coordinates map onto the source image by multiplying with its width and height.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import cv2
import numpy as np

from seg_perception.core.keypoints import keypoints_to_pixels, suppress_unused_keypoints
from seg_perception.core.types import CroppedMask, Detections

# Rounding slack (pixels) so float noise like x2 = 100.0000001 does not add a column.
_REGION_EPS = 1e-3
# Upper bound on elements of one batched (classes x top_k x top_k) IoU block.
_NMS_BLOCK_ELEMENTS = 1 << 20

# (coeffs (D, P), protos (Hp, Wp, P), boxes (D, 4) normalised, class ids (D,)) -> (D,)
# factors for the scores of the detections kept by NMS (YOLACT++ mask re-scoring,
# ``core.mask_rescoring.MaskIoURescorer``).
MaskRescorer = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass
class PostprocessParams:
    """Tunables of post-processing (the node exposes each as a ROS parameter).

    score_threshold:   class score a (prior, class) pair must exceed, in [0, 1].
    nms_iou_threshold: a box is suppressed when its IoU with a higher-scoring box
                       of the same class exceeds this, in [0, 1].
    top_k:             candidates per class entering NMS (highest scores first).
    max_detections:    instances returned per image, highest scores first.
    mask_threshold:    mask probability above which a pixel is foreground, (0, 1).
    class_agnostic:    NMS across classes (each prior votes once, for its best class).
    """

    score_threshold: float = 0.3
    nms_iou_threshold: float = 0.5
    top_k: int = 200
    max_detections: int = 100
    mask_threshold: float = 0.5
    class_agnostic: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {self.score_threshold}")
        if not 0.0 <= self.nms_iou_threshold <= 1.0:
            raise ValueError(f"nms_iou_threshold must be in [0, 1], got {self.nms_iou_threshold}")
        if not 0.0 < self.mask_threshold < 1.0:
            raise ValueError(f"mask_threshold must be in (0, 1), got {self.mask_threshold}")
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.max_detections < 1:
            raise ValueError(f"max_detections must be >= 1, got {self.max_detections}")


# ----------------------------------------------------------------------------
# Boxes and Fast NMS


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of ``a (..., N, 4)`` against ``b (..., M, 4)`` xyxy boxes -> ``(..., N, M)``.

    Zero-area pairs (union 0) have IoU 0.
    """
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    ax1, ay1, ax2, ay2 = (a[..., :, None, i] for i in range(4))
    bx1, by1, bx2, by2 = (b[..., None, :, i] for i in range(4))
    # In-place arithmetic: these (..., N, M) blocks are the bulk of NMS time.
    inter = np.minimum(ax2, bx2)
    inter -= np.maximum(ax1, bx1)
    np.maximum(inter, 0, out=inter)
    ih = np.minimum(ay2, by2)
    ih -= np.maximum(ay1, by1)
    np.maximum(ih, 0, out=ih)
    inter *= ih
    area_a = np.clip(ax2 - ax1, 0, None) * np.clip(ay2 - ay1, 0, None)
    area_b = np.clip(bx2 - bx1, 0, None) * np.clip(by2 - by1, 0, None)
    union = ih  # reuse the buffer
    np.add(area_a, area_b, out=union)
    union -= inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def fast_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    groups: np.ndarray,
    iou_threshold: float,
    top_k: int,
) -> np.ndarray:
    """Fast NMS within each group (class) of candidates.

    boxes:  (M, 4) xyxy candidate boxes (any consistent unit).
    scores: (M,) candidate scores.
    groups: (M,) integer group of each candidate (its class id; all equal for
            class-agnostic NMS). Candidates only suppress others of their group.
    Only the ``top_k`` highest-scoring candidates of each group take part.

    Returns indices into the candidates that survive, highest score first.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    scores = np.asarray(scores, dtype=np.float32)
    groups = np.asarray(groups)
    m = scores.shape[0]
    if m == 0:
        return np.zeros((0,), np.int64)
    # Sort by group, then by descending score (stable so ties keep input order).
    order = np.lexsort((np.arange(m), -scores, groups))
    g_sorted = groups[order]
    starts = np.flatnonzero(np.r_[True, g_sorted[1:] != g_sorted[:-1]])
    counts = np.diff(np.r_[starts, m])
    counts = np.minimum(counts, top_k)
    # Biggest groups first so each block pads little.
    by_size = np.argsort(-counts, kind="stable")
    kept: list[np.ndarray] = []
    i = 0
    while i < len(by_size):
        k = int(counts[by_size[i]])
        n_groups = max(1, _NMS_BLOCK_ELEMENTS // (k * k))
        block = by_size[i:i + n_groups]
        i += len(block)
        # (G, k) candidate indices; where a group has fewer than k, ``valid`` is
        # False and the index is a placeholder.
        col = np.arange(k)
        valid = col[None, :] < counts[block][:, None]
        idx = np.where(valid, starts[block][:, None] + col[None, :], 0)
        cand = order[idx]
        b = boxes[cand].astype(np.float32, copy=False)  # (G, k, 4)
        if k * k > _NMS_BLOCK_ELEMENTS:  # one huge group (large top_k): bound memory
            max_iou = _max_iou_with_better_boxes_chunked(b[0])[None]
        else:
            iou = box_iou(b, b)  # (G, k, k)
            iou *= valid[:, :, None]  # padded rows cannot suppress anything
            # Row i is a higher-scoring box than column j only above the diagonal.
            iou = np.triu(iou, k=1)
            max_iou = iou.max(axis=1)  # per column j: its worst overlap with a better box
        keep = valid & (max_iou <= iou_threshold)
        kept.append(cand[keep])
    survivors = np.concatenate(kept)
    return survivors[np.lexsort((survivors, -scores[survivors]))]


def _max_iou_with_better_boxes_chunked(boxes: np.ndarray) -> np.ndarray:
    """For score-sorted ``(k, 4)`` boxes, max IoU of each with any earlier box, ``(k,)``.

    The upper triangle of the IoU matrix, a band of columns at a time, so memory
    stays near ``_NMS_BLOCK_ELEMENTS`` however large k is.
    """
    k = boxes.shape[0]
    out = np.zeros((k,), np.float32)
    step = max(1, _NMS_BLOCK_ELEMENTS // k)
    for j0 in range(1, k, step):
        j1 = min(j0 + step, k)
        iou = box_iou(boxes[:j1 - 1], boxes[j0:j1])  # rows: every box before the band's last
        iou = np.triu(iou, k=1 - j0)  # keep row i < global column j0 + c
        out[j0:j1] = iou.max(axis=0)
    return out


def _candidates(scores: np.ndarray, params: PostprocessParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(prior index, class id, score) of every pair passing the score threshold.

    One pair per prior (its best class) when ``class_agnostic``.
    """
    thr = params.score_threshold
    best = scores.max(axis=1) if scores.shape[1] else np.zeros((scores.shape[0],), np.float32)
    pre = np.flatnonzero(best > thr)  # cheap: most priors are background
    if params.class_agnostic:
        cls = scores[pre].argmax(axis=1) if pre.size else np.zeros((0,), np.int64)
        return pre, cls, best[pre]
    rows, cls = np.nonzero(scores[pre] > thr)
    priors = pre[rows]
    return priors, cls, scores[priors, cls]


# ----------------------------------------------------------------------------
# Masks


def mask_regions(boxes: np.ndarray, image_width: int, image_height: int) -> np.ndarray:
    """Integer regions ``(D, 4)`` int64 x0, y0, x1, y1 (x1, y1 exclusive) covering each box.

    A region is every pixel the box touches (floor of the top-left, ceil of the
    bottom-right), clipped to the image and at least 1x1, so it always lies inside
    the image and covers the clipped box.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x0 = np.clip(np.floor(boxes[:, 0] + _REGION_EPS), 0, image_width - 1)
    y0 = np.clip(np.floor(boxes[:, 1] + _REGION_EPS), 0, image_height - 1)
    x1 = np.clip(np.ceil(boxes[:, 2] - _REGION_EPS), x0 + 1, image_width)
    y1 = np.clip(np.ceil(boxes[:, 3] - _REGION_EPS), y0 + 1, image_height)
    return np.stack([x0, y0, x1, y1], axis=1).astype(np.int64)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # exp(-x) of large negative logits overflows to inf, which still yields 0.
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def assemble_masks(
    coeffs: np.ndarray,
    protos: np.ndarray,
    boxes: np.ndarray,
    image_width: int,
    image_height: int,
    mask_threshold: float = 0.5,
) -> list[CroppedMask]:
    """Binary masks, cut to each box's region, from prototypes and coefficients.

    coeffs: (D, P) mask coefficients of the kept instances.
    protos: (Hp, Wp, P) prototypes, spanning the whole (network input = source) image.
    boxes:  (D, 4) xyxy in source-image pixels.

    The result equals ``naive_reference_masks`` (full product, sigmoid, bilinear
    resize of the whole map to the source size, crop, threshold) up to float
    rounding, but only evaluates each box's region: the prototypes under the region
    (plus the neighbour each bilinear sample needs) are combined, passed through
    the sigmoid, and resampled onto the region's source pixels with the same
    pixel-centre geometry as a full-image ``cv2.resize`` (INTER_LINEAR). The
    resampling is two small matrix products, not ``cv2.resize``/``cv2.warpAffine``
    on the crop: a crop's resize cannot reproduce the full image's sample
    positions, and OpenCV 4's warpAffine rounds positions to 1/32 pixel, which
    moves mask edges visibly (IoU below 0.98 against the reference on thin masks).
    The sigmoid is applied before resampling, as in the reference: comparing
    resampled logits against logit(threshold) would save little here (the crop is
    at prototype resolution) and would change which pixels pass, because bilinear
    interpolation does not commute with the sigmoid.
    """
    coeffs = np.asarray(coeffs, dtype=np.float32)
    protos = np.asarray(protos, dtype=np.float32)
    hp, wp = protos.shape[:2]
    # Bilinear taps of every source column and row, computed once per image.
    col_lo, col_hi, col_w = _bilinear_taps(image_width, wp)
    row_lo, row_hi, row_w = _bilinear_taps(image_height, hp)
    regions = mask_regions(boxes, image_width, image_height)
    masks: list[CroppedMask] = []
    for coeff, (x0, y0, x1, y1) in zip(coeffs, regions):
        # The prototype window is exactly the taps the region needs (a bilinear
        # sample reads its neighbour too, so this includes a one-pixel margin).
        c0, c1 = int(col_lo[x0]), int(col_hi[x1 - 1]) + 1
        r0, r1 = int(row_lo[y0]), int(row_hi[y1 - 1]) + 1
        prob = _sigmoid(protos[r0:r1, c0:c1] @ coeff).astype(np.float32, copy=False)
        region = _resample(prob, row_lo[y0:y1] - r0, row_hi[y0:y1] - r0, row_w[y0:y1],
                           col_lo[x0:x1] - c0, col_hi[x0:x1] - c0, col_w[x0:x1])
        masks.append(CroppedMask(int(x0), int(y0), (region > mask_threshold).view(np.uint8)))
    return masks


# Output regions larger than this (pixels) are resampled by gathers, smaller ones by
# matrix products: the products cost rh * rw * (prototype window side) and win on
# small boxes (BLAS on tiny matrices), the gathers cost 4 * rh * rw and win on big ones.
_GATHER_MIN_PIXELS = 160 * 160


def _resample(prob: np.ndarray, ylo: np.ndarray, yhi: np.ndarray, yw: np.ndarray,
              xlo: np.ndarray, xhi: np.ndarray, xw: np.ndarray) -> np.ndarray:
    """Separable bilinear resampling of ``prob`` (hc, wc) onto the (rh, rw) taps given."""
    if ylo.size * xlo.size >= _GATHER_MIN_PIXELS:
        cols = prob[:, xlo] * (1.0 - xw) + prob[:, xhi] * xw  # (hc, rw)
        return cols[ylo] * (1.0 - yw)[:, None] + cols[yhi] * yw[:, None]
    interp_y = _interp_matrix(ylo, yhi, yw, prob.shape[0])  # (rh, hc)
    interp_x = _interp_matrix(xlo, xhi, xw, prob.shape[1])  # (rw, wc)
    # Shrink the smaller prototype axis first: the second product costs rh * rw * (that axis).
    if prob.shape[0] <= prob.shape[1]:
        return interp_y @ (prob @ interp_x.T)
    return (interp_y @ prob) @ interp_x.T


def _interp_matrix(lo: np.ndarray, hi: np.ndarray, w: np.ndarray, n_in: int) -> np.ndarray:
    """``(n_out, n_in)`` float32 matrix applying the bilinear taps ``(lo, hi, w)`` along one axis."""
    n_out = lo.shape[0]
    mat = np.zeros((n_out, n_in), np.float32)
    rows = np.arange(n_out)
    mat[rows, lo] = 1.0 - w
    mat[rows, hi] += w  # hi == lo at a clamped edge, where w == 0: the sum stays 1
    return mat


def _bilinear_taps(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Taps of a pixel-centre bilinear resize from ``n_in`` to ``n_out`` samples.

    Returns ``(lo, hi, w)``: output sample i is ``in[lo[i]] * (1 - w[i]) + in[hi[i]] * w[i]``,
    with source coordinate ``(i + 0.5) * n_in / n_out - 0.5`` clamped to the edge
    samples, the geometry and edge rule of ``cv2.resize(..., INTER_LINEAR)``.
    """
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    np.clip(src, 0.0, n_in - 1, out=src)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, (src - lo).astype(np.float32)


def naive_reference_masks(
    coeffs: np.ndarray,
    protos: np.ndarray,
    boxes: np.ndarray,
    image_width: int,
    image_height: int,
    mask_threshold: float = 0.5,
) -> list[CroppedMask]:
    """The obvious full-resolution mask assembly, for tests and benchmarks.

    Per instance: ``sigmoid(protos @ coeff)`` over the whole prototype map, bilinear
    resize to ``(image_height, image_width)``, crop to the box region, threshold.
    Arguments as for ``assemble_masks``. O(D x image pixels); do not use at run time.
    """
    coeffs = np.asarray(coeffs, dtype=np.float32)
    protos = np.asarray(protos, dtype=np.float32)
    regions = mask_regions(boxes, image_width, image_height)
    masks: list[CroppedMask] = []
    for coeff, (x0, y0, x1, y1) in zip(coeffs, regions):
        prob = _sigmoid(protos @ coeff).astype(np.float32)
        full = cv2.resize(prob, (image_width, image_height), interpolation=cv2.INTER_LINEAR)
        crop = full[y0:y1, x0:x1]
        masks.append(CroppedMask(int(x0), int(y0), (crop > mask_threshold).astype(np.uint8)))
    return masks


# ----------------------------------------------------------------------------
# The whole step


def postprocess_yolact(
    boxes: np.ndarray,
    scores: np.ndarray,
    mask_coeffs: np.ndarray,
    protos: np.ndarray,
    image_width: int,
    image_height: int,
    params: PostprocessParams | None = None,
    keypoints: np.ndarray | None = None,
    keypoint_table: np.ndarray | None = None,
    mask_rescorer: MaskRescorer | None = None,
    mask_assembler: Callable[..., list[CroppedMask]] | None = None,
) -> Detections:
    """Detections for one image from its raw YOLACT outputs.

    boxes:       (N, 4) xyxy normalised to [0, 1] of the network input.
    scores:      (N, C) class probabilities, background removed.
    mask_coeffs: (N, P) prototype coefficients.
    protos:      (Hp, Wp, P) prototypes.
    keypoints:   optional (N, K, 3) x, y normalised, visibility probability.
    keypoint_table: optional (C, K) bool from ``keypoints.class_keypoint_table``;
                 scores of keypoints an instance's class does not use become 0.
    image_width, image_height: size of the source image in pixels.
    mask_rescorer: optional YOLACT++ re-scoring; after NMS and ``max_detections`` the
                 kept scores are multiplied by its factors and re-sorted (as the
                 official ``rescore_mask``: the score threshold applies before).

    mask_assembler: ``assemble_masks`` (default) or a drop-in with its signature;
                 the benchmark passes ``naive_reference_masks`` to time the obvious way.

    Returns ``Detections`` in source-image pixels, highest score first: boxes
    clipped to the image, one ``CroppedMask`` per instance covering its box region,
    keypoints scaled (not clipped: a joint may lie just outside the frame).
    """
    params = params or PostprocessParams()
    boxes = np.asarray(boxes, dtype=np.float32)
    scores = np.asarray(scores, dtype=np.float32)
    mask_coeffs = np.asarray(mask_coeffs, dtype=np.float32)
    protos = np.asarray(protos, dtype=np.float32)
    n = boxes.shape[0]
    _check_shapes(boxes, scores, mask_coeffs, protos, keypoints, image_width, image_height)
    num_kp = 0 if keypoints is None else int(keypoints.shape[1])
    if keypoint_table is not None and keypoint_table.shape != (scores.shape[1], num_kp):
        raise ValueError(
            f"keypoint_table must be (C={scores.shape[1]}, K={num_kp}), got {keypoint_table.shape}"
        )

    priors, cls, cand_scores = _candidates(scores, params)
    if n and priors.size:
        # A non-finite box cannot be drawn, cropped or compared; drop it early.
        finite = np.isfinite(boxes[priors]).all(axis=1)
        priors, cls, cand_scores = priors[finite], cls[finite], cand_scores[finite]
    if priors.size == 0:
        return Detections.empty(num_kp)

    scale = np.array([image_width, image_height, image_width, image_height], np.float32)
    cand_boxes = boxes[priors] * scale
    # Order-insensitive corners, then clip to the image.
    cand_boxes = np.concatenate(
        [np.minimum(cand_boxes[:, :2], cand_boxes[:, 2:]), np.maximum(cand_boxes[:, :2], cand_boxes[:, 2:])],
        axis=1,
    )
    np.clip(cand_boxes[:, 0::2], 0, image_width, out=cand_boxes[:, 0::2])
    np.clip(cand_boxes[:, 1::2], 0, image_height, out=cand_boxes[:, 1::2])

    groups = np.zeros_like(cls) if params.class_agnostic else cls
    keep = fast_nms(cand_boxes, cand_scores, groups, params.nms_iou_threshold, params.top_k)
    keep = keep[: params.max_detections]  # fast_nms returns them highest score first

    kept_priors = priors[keep]
    out_scores = cand_scores[keep].astype(np.float32)
    if mask_rescorer is not None and keep.size:
        factors = np.asarray(
            mask_rescorer(mask_coeffs[kept_priors], protos, boxes[kept_priors], cls[keep]), np.float32
        )
        out_scores = out_scores * factors
        order = np.argsort(-out_scores, kind="stable")
        keep, kept_priors, out_scores = keep[order], kept_priors[order], out_scores[order]
    out_boxes = cand_boxes[keep].astype(np.float32)
    masks = (mask_assembler or assemble_masks)(
        mask_coeffs[kept_priors], protos, out_boxes, image_width, image_height, params.mask_threshold
    )
    if keypoints is not None:
        kps = keypoints_to_pixels(np.asarray(keypoints)[kept_priors], image_width, image_height)
        if keypoint_table is not None:
            kps = suppress_unused_keypoints(kps, cls[keep], keypoint_table)
    else:
        kps = np.zeros((len(keep), 0, 3), np.float32)
    return Detections(
        boxes=out_boxes,
        scores=out_scores,
        class_ids=cls[keep].astype(np.int32),
        masks=masks,
        keypoints=kps,
    )


def postprocess_yolact_batch(
    outputs: Mapping[str, np.ndarray],
    image_sizes: Sequence[tuple[int, int]],
    params: PostprocessParams | None = None,
    keypoint_table: np.ndarray | None = None,
    mask_rescorer: MaskRescorer | None = None,
) -> list[Detections]:
    """``postprocess_yolact`` for each image of a backend's batched outputs.

    outputs:     the dict ``Backend.infer`` returns (names of ``YOLACT_OUTPUTS``).
    image_sizes: (width, height) of each batch element's source image.
    """
    missing = [k for k in ("boxes", "scores", "mask_coeffs", "protos") if k not in outputs]
    if missing:
        raise ValueError(f"raw outputs lack {missing}; got {sorted(outputs)}")
    batch = outputs["boxes"].shape[0]
    if len(image_sizes) != batch:
        raise ValueError(f"{len(image_sizes)} image sizes given for a batch of {batch}")
    kps = outputs.get("keypoints")
    return [
        postprocess_yolact(
            outputs["boxes"][b],
            outputs["scores"][b],
            outputs["mask_coeffs"][b],
            outputs["protos"][b],
            w,
            h,
            params,
            None if kps is None else kps[b],
            keypoint_table,
            mask_rescorer,
        )
        for b, (w, h) in enumerate(image_sizes)
    ]


def _check_shapes(
    boxes: np.ndarray,
    scores: np.ndarray,
    coeffs: np.ndarray,
    protos: np.ndarray,
    keypoints: np.ndarray | None,
    image_width: int,
    image_height: int,
) -> None:
    """Raise ValueError naming the first raw output whose shape breaks the contract."""
    if image_width <= 0 or image_height <= 0:
        raise ValueError(f"bad source image size {image_width}x{image_height}")
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be (N, 4), got {boxes.shape}")
    n = boxes.shape[0]
    if scores.ndim != 2 or scores.shape[0] != n:
        raise ValueError(f"scores must be (N={n}, C), got {scores.shape}")
    if protos.ndim != 3 or min(protos.shape[:2]) < 1:
        raise ValueError(f"protos must be (Hp, Wp, P), got {protos.shape}")
    if coeffs.shape != (n, protos.shape[2]):
        raise ValueError(f"mask_coeffs must be (N={n}, P={protos.shape[2]}), got {coeffs.shape}")
    if keypoints is not None:
        kps = np.asarray(keypoints)
        if kps.ndim != 3 or kps.shape[0] != n or kps.shape[2] != 3:
            raise ValueError(f"keypoints must be (N={n}, K, 3), got {kps.shape}")
