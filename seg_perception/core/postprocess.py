"""From YOLACT-style raw outputs to ``Detections`` in source-image pixels.

The graph ends where shapes become data-dependent (see ``YOLACT_OUTPUTS`` in
``core.metadata``); everything after that lives here. By default the steps reproduce
the official dbolya/yolact ``Detect`` (Fast NMS, ``second_threshold=False``) and
``postprocess`` (``crop_masks=True``, bilinear upsampling) on the same raw outputs,
so an official checkpoint gives the official detections and masks
(``test/models/test_yolact_official_parity.py`` replays outputs of the official code):

1. candidates: priors whose best class score exceeds ``candidate_threshold`` (the
   official ``nms_conf_thresh``, 0.05) take part in NMS with *all* their classes, as
   the official ``fast_nms`` does; pairs at or below ``score_threshold`` are dropped
   first, which gives the same result because in Fast NMS a box is only suppressed by
   higher-scoring boxes, and everything at or below ``score_threshold`` is discarded
   after NMS anyway (the official ``postprocess(score_threshold=...)``);
2. per-class ``top_k`` and **Fast NMS** (Bolya et al., "YOLACT: Real-time Instance
   Segmentation", ICCV 2019, sec. 3.5) on the *unclipped* boxes: for each class, the IoU
   matrix of its candidates sorted by score, keep only the upper triangle (each box
   compared with the higher-scoring ones), take the max over each column and keep boxes
   whose max IoU is <= the threshold. Unlike greedy NMS, an already suppressed box
   may still suppress others; that is what makes it one matrix operation;
3. sort by score, keep ``max_detections``; boxes are clipped to the image only now;
4. masks: ``sigmoid(protos @ coeff)`` zeroed outside the box widened by one prototype
   pixel, at prototype resolution, then bilinear upsampling and ``> mask_threshold``,
   evaluated only where the result can be non-zero (see ``assemble_masks``).

``PostprocessParams`` keeps the earlier behaviour (clip before NMS, masks cut to the
box) as opt-in switches; docs/official_checkpoints.md gives their measured effect.

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

    score_threshold:   class score a detection must exceed, in [0, 1] (the official
                       ``postprocess(score_threshold=...)``; 0 keeps everything, as
                       the official COCO evaluation does).
    nms_iou_threshold: a box is suppressed when its IoU with a higher-scoring box
                       of the same class exceeds this, in [0, 1].
    top_k:             candidates per class entering NMS (highest scores first).
    max_detections:    instances returned per image, highest scores first.
    mask_threshold:    mask probability above which a pixel is foreground, (0, 1).
    class_agnostic:    NMS across classes (each prior votes once, for its best class).
    candidate_threshold: a prior takes part in NMS (with every class) only when its
                       best class score exceeds this (official ``nms_conf_thresh``).
                       Only matters when ``score_threshold`` is below it.
    second_threshold:  also drop (prior, class) pairs at or below ``candidate_threshold``
                       before NMS (the official ``fast_nms(second_threshold=True)``;
                       official evaluation leaves it off).
    clip_before_nms:   deviation: clip boxes to the image before NMS (this package's
                       behaviour before it followed the official code; changes which
                       boxes at the image border survive).
    box_region_masks:  deviation: no prototype-resolution crop; the uncropped mask is
                       upsampled and cut to the box's pixel region (masks end at the box,
                       where the official ones reach a few pixels beyond it).
    """

    score_threshold: float = 0.3
    nms_iou_threshold: float = 0.5
    top_k: int = 200
    max_detections: int = 100
    mask_threshold: float = 0.5
    class_agnostic: bool = False
    candidate_threshold: float = 0.05
    second_threshold: bool = False
    clip_before_nms: bool = False
    box_region_masks: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {self.score_threshold}")
        if not 0.0 <= self.candidate_threshold <= 1.0:
            raise ValueError(f"candidate_threshold must be in [0, 1], got {self.candidate_threshold}")
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
    """(prior index, class id, score) of every pair that can end up a detection.

    A prior enters when its best class score exceeds ``candidate_threshold``; of its
    classes, those scoring above ``score_threshold`` (and above ``candidate_threshold``
    with ``second_threshold``) are kept; with ``score_threshold`` 0 every class is, as
    the official evaluation keeps them (a pair scoring exactly 0 included). Dropping
    low pairs before Fast NMS rather than after changes nothing: a box is suppressed
    only by higher-scoring boxes of its class, and ``top_k``/``max_detections`` take
    the highest scores first. One pair per prior (its best class) when ``class_agnostic``.
    """
    thr = params.score_threshold
    best = scores.max(axis=1) if scores.shape[1] else np.zeros((scores.shape[0],), np.float32)
    pre = np.flatnonzero((best > params.candidate_threshold) & (best > thr))  # most priors are background
    if params.class_agnostic:
        cls = scores[pre].argmax(axis=1) if pre.size else np.zeros((0,), np.int64)
        return pre, cls, best[pre]
    pair_thr = max(thr, params.candidate_threshold) if params.second_threshold else thr
    sub = scores[pre]
    rows, cls = np.nonzero(sub > pair_thr) if pair_thr > 0 or params.second_threshold else np.nonzero(sub >= 0)
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


def proto_crop_windows(boxes: np.ndarray, proto_height: int, proto_width: int,
                       padding: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The official ``crop``'s kept prototype pixels per box: columns ``[c0, c1)``, rows ``[r0, r1)``.

    boxes: (D, 4) x1, y1, x2, y2 normalised to the network input (corners in any
    order; not clipped). The official code keeps column ``c`` when
    ``x1 * Wp - padding <= c < x2 * Wp + padding`` (bounds clamped to the map, float32
    arithmetic), rows alike; for integer ``c`` that is ``ceil(lower) <= c < ceil(upper)``.
    Returns four (D,) int64 arrays; a window may be empty (``c1 <= c0``).
    """
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    pad = np.float32(padding)

    def axis(lo: np.ndarray, hi: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        a = np.minimum(lo, hi) * np.float32(size)
        z = np.maximum(lo, hi) * np.float32(size)
        a = np.maximum(a - pad, np.float32(0))
        z = np.minimum(z + pad, np.float32(size))
        # Past the map's far edge (or overflowing to inf) means an empty window; clamping
        # there too keeps the integer conversion defined. NaN boxes are filtered before.
        first = np.ceil(np.minimum(a, np.float32(size))).astype(np.int64)
        last = np.ceil(np.maximum(z, np.float32(0))).astype(np.int64)
        return first, np.maximum(last, first)

    c0, c1 = axis(b[:, 0], b[:, 2], proto_width)
    r0, r1 = axis(b[:, 1], b[:, 3], proto_height)
    return c0, c1, r0, r1


def assemble_masks(
    coeffs: np.ndarray,
    protos: np.ndarray,
    boxes: np.ndarray,
    image_width: int,
    image_height: int,
    mask_threshold: float = 0.5,
    padding: int = 1,
) -> list[CroppedMask]:
    """Binary masks as the official ``postprocess`` makes them, evaluated only where they can be set.

    coeffs: (D, P) mask coefficients of the kept instances.
    protos: (Hp, Wp, P) prototypes, spanning the whole (network input = source) image.
    boxes:  (D, 4) xyxy normalised to the network input, *unclipped* (as NMS saw them).

    The official code takes ``sigmoid(protos @ coeff)`` over the whole map, zeroes it
    outside the box widened by ``padding`` prototype pixels (``proto_crop_windows``),
    upsamples the map bilinearly (``align_corners=False``) to the source image and keeps
    pixels above ``mask_threshold``. Outside the source pixels whose two bilinear taps
    per axis touch the kept window, the upsampled value is 0, so only that region
    (returned as the ``CroppedMask``; it reaches a few pixels beyond the box) is
    computed: the window's prototypes are combined, the sigmoid applied, and the region
    resampled with the same pixel-centre geometry as the full-image resize: a block of
    the whole-image interpolation matrices (the window's columns only, which is the crop)
    for small regions, gathers over the window plus a ring of zeros (the cropped-away
    neighbours) for large ones. Not ``cv2.resize``/``cv2.warpAffine`` on the crop: a
    crop's resize cannot reproduce the full image's sample positions, and OpenCV 4's
    warpAffine rounds positions to 1/32 pixel, which moves mask edges visibly.
    ``naive_reference_masks`` is the whole-image version; they agree up to float rounding.
    """
    coeffs = np.asarray(coeffs, dtype=np.float32)
    protos = np.asarray(protos, dtype=np.float32)
    hp, wp = protos.shape[:2]
    resample = _RegionResampler(image_width, image_height, hp, wp)
    (row_lo, row_hi, _), (col_lo, col_hi, _) = resample.rows, resample.cols
    c0s, c1s, r0s, r1s = proto_crop_windows(boxes, hp, wp, padding)
    # Source pixels whose taps touch the window: hi >= first kept and lo < end (taps are monotonic).
    x0s = np.searchsorted(col_hi, c0s, side="left")
    x1s = np.searchsorted(col_lo, c1s, side="left")
    y0s = np.searchsorted(row_hi, r0s, side="left")
    y1s = np.searchsorted(row_lo, r1s, side="left")
    masks: list[CroppedMask] = []
    for i, coeff in enumerate(coeffs):
        c0, c1, r0, r1 = int(c0s[i]), int(c1s[i]), int(r0s[i]), int(r1s[i])
        x0, x1, y0, y1 = int(x0s[i]), int(x1s[i]), int(y0s[i]), int(y1s[i])
        if c1 <= c0 or r1 <= r0 or x1 <= x0 or y1 <= y0:  # nothing kept: an empty 1x1 mask
            masks.append(CroppedMask(min(x0, image_width - 1), min(y0, image_height - 1), np.zeros((1, 1), np.uint8)))
            continue
        prob = _sigmoid(protos[r0:r1, c0:c1] @ coeff).astype(np.float32, copy=False)
        region = resample(prob, r0, c0, (x0, y0, x1, y1), cropped=True)
        masks.append(CroppedMask(x0, y0, (region > mask_threshold).view(np.uint8)))
    return masks


def assemble_box_region_masks(
    coeffs: np.ndarray,
    protos: np.ndarray,
    boxes: np.ndarray,
    image_width: int,
    image_height: int,
    mask_threshold: float = 0.5,
) -> list[CroppedMask]:
    """The ``box_region_masks`` deviation: uncropped masks cut to each box's pixel region.

    boxes: (D, 4) xyxy in source-image pixels (clipped). Equals the full product,
    sigmoid, bilinear resize of the whole map, cut to ``mask_regions``, threshold; only
    each region is evaluated (same geometry as ``assemble_masks``). Masks end at the box.
    """
    coeffs = np.asarray(coeffs, dtype=np.float32)
    protos = np.asarray(protos, dtype=np.float32)
    hp, wp = protos.shape[:2]
    resample = _RegionResampler(image_width, image_height, hp, wp)
    (row_lo, row_hi, _), (col_lo, col_hi, _) = resample.rows, resample.cols
    regions = mask_regions(boxes, image_width, image_height)
    masks: list[CroppedMask] = []
    for coeff, (x0, y0, x1, y1) in zip(coeffs, regions):
        # The prototype window is exactly the taps the region needs.
        c0, c1 = int(col_lo[x0]), int(col_hi[x1 - 1]) + 1
        r0, r1 = int(row_lo[y0]), int(row_hi[y1 - 1]) + 1
        prob = _sigmoid(protos[r0:r1, c0:c1] @ coeff).astype(np.float32, copy=False)
        region = resample(prob, r0, c0, (x0, y0, x1, y1))
        masks.append(CroppedMask(int(x0), int(y0), (region > mask_threshold).view(np.uint8)))
    return masks


class _RegionResampler:
    """The whole-image bilinear resize of an (hp, wp) prototype map to the source image
    (``_bilinear_taps``), evaluated one region at a time from a window of the map: by
    gathers for large regions, by blocks of the whole-image interpolation matrices
    (built once, on first need) for small ones."""

    def __init__(self, image_width: int, image_height: int, hp: int, wp: int) -> None:
        self.rows = _bilinear_taps(image_height, hp)
        self.cols = _bilinear_taps(image_width, wp)
        self._size = (hp, wp)
        self._interp: tuple[np.ndarray, np.ndarray] | None = None

    def __call__(self, prob: np.ndarray, r0: int, c0: int, region: tuple[int, int, int, int],
                 cropped: bool = False) -> np.ndarray:
        """``prob``, the map's window from row ``r0`` and column ``c0``, resampled onto the
        source pixels ``region`` (x0, y0, x1, y1). ``cropped``: the map is zero outside the
        window, and the region's taps may fall there."""
        x0, y0, x1, y1 = region
        (row_lo, row_hi, row_w), (col_lo, col_hi, col_w) = self.rows, self.cols
        if (y1 - y0) * (x1 - x0) >= _GATHER_MIN_PIXELS:
            if cropped:  # gathers read a ring of zeros around the window: the cropped neighbours
                padded = np.zeros((prob.shape[0] + 2, prob.shape[1] + 2), np.float32)
                padded[1:-1, 1:-1] = prob
                prob, r0, c0 = padded, r0 - 1, c0 - 1
            return _gather_resample(prob, row_lo[y0:y1] - r0, row_hi[y0:y1] - r0, row_w[y0:y1],
                                    col_lo[x0:x1] - c0, col_hi[x0:x1] - c0, col_w[x0:x1])
        # A region's resampling is the block (its rows) x (the window's columns) of the
        # whole-image matrices: taps outside the window meet zeros, so dropping them is the crop.
        if self._interp is None:
            hp, wp = self._size
            self._interp = (_interp_matrix(row_lo, row_hi, row_w, hp), _interp_matrix(col_lo, col_hi, col_w, wp))
        interp_y, interp_x = self._interp
        r1, c1 = r0 + prob.shape[0], c0 + prob.shape[1]
        return _matrix_resample(prob, interp_y[y0:y1, r0:r1], interp_x[x0:x1, c0:c1])


# Output regions larger than this (pixels) are resampled by gathers, smaller ones by
# matrix products: the products cost rh * rw * (prototype window side) and win on
# small boxes (BLAS on tiny matrices), the gathers cost 4 * rh * rw and win on big ones.
_GATHER_MIN_PIXELS = 160 * 160


def _gather_resample(prob: np.ndarray, ylo: np.ndarray, yhi: np.ndarray, yw: np.ndarray,
                     xlo: np.ndarray, xhi: np.ndarray, xw: np.ndarray) -> np.ndarray:
    """Separable bilinear resampling of ``prob`` (hc, wc) onto the (rh, rw) taps given, by
    gathers: 4 * rh * rw operations, best for large regions."""
    cols = prob[:, xlo] * (1.0 - xw) + prob[:, xhi] * xw  # (hc, rw)
    return cols[ylo] * (1.0 - yw)[:, None] + cols[yhi] * yw[:, None]


def _matrix_resample(prob: np.ndarray, interp_y: np.ndarray, interp_x: np.ndarray) -> np.ndarray:
    """``interp_y (rh, hc) @ prob (hc, wc) @ interp_x (rw, wc).T``: best for small regions (BLAS)."""
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
    padding: int = 1,
) -> list[CroppedMask]:
    """The obvious full-resolution version of ``assemble_masks``, for tests and benchmarks.

    Per instance: ``sigmoid(protos @ coeff)`` over the whole prototype map, zeroed outside
    ``proto_crop_windows``, bilinear resize to ``(image_height, image_width)``,
    threshold. Arguments as for ``assemble_masks``; returns full-image masks at (0, 0).
    O(D x image pixels); do not use at run time.
    """
    coeffs = np.asarray(coeffs, dtype=np.float32)
    protos = np.asarray(protos, dtype=np.float32)
    hp, wp = protos.shape[:2]
    c0s, c1s, r0s, r1s = proto_crop_windows(boxes, hp, wp, padding)
    masks: list[CroppedMask] = []
    for i, coeff in enumerate(coeffs):
        prob = np.zeros((hp, wp), np.float32)
        prob[r0s[i]:r1s[i], c0s[i]:c1s[i]] = _sigmoid(protos @ coeff)[r0s[i]:r1s[i], c0s[i]:c1s[i]]
        full = cv2.resize(prob, (image_width, image_height), interpolation=cv2.INTER_LINEAR)
        masks.append(CroppedMask(0, 0, (full > mask_threshold).astype(np.uint8)))
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

    mask_assembler: a drop-in for ``assemble_masks`` (it gets the normalised unclipped
                 boxes); the benchmark passes ``naive_reference_masks`` to time the
                 obvious way. None: ``assemble_masks``, or ``assemble_box_region_masks``
                 with ``params.box_region_masks``.

    Returns ``Detections`` in source-image pixels, highest score first: boxes
    clipped to the image (after NMS, unless ``clip_before_nms``), one ``CroppedMask``
    per instance (covering the pixels its official mask can reach, a few beyond the
    box; the box's pixel region with ``box_region_masks``), keypoints scaled (not
    clipped: a joint may lie just outside the frame).
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
    cand_norm = boxes[priors]
    if params.clip_before_nms:  # deviation: NMS on boxes clipped to the image
        nms_boxes = _clip_pixel_boxes(cand_norm * scale, image_width, image_height)
    else:  # official: Fast NMS on the unclipped normalised boxes
        nms_boxes = cand_norm

    groups = np.zeros_like(cls) if params.class_agnostic else cls
    keep = fast_nms(nms_boxes, cand_scores, groups, params.nms_iou_threshold, params.top_k)
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
    # Clipped only for the output (the official ``sanitize_coordinates``, kept as float).
    out_boxes = _clip_pixel_boxes(cand_norm[keep] * scale, image_width, image_height)
    if mask_assembler is not None:
        masks = mask_assembler(mask_coeffs[kept_priors], protos, cand_norm[keep], image_width, image_height,
                               params.mask_threshold)
    elif params.box_region_masks:
        masks = assemble_box_region_masks(mask_coeffs[kept_priors], protos, out_boxes, image_width, image_height,
                                          params.mask_threshold)
    else:
        masks = assemble_masks(mask_coeffs[kept_priors], protos, cand_norm[keep], image_width, image_height,
                               params.mask_threshold)
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


def _clip_pixel_boxes(boxes: np.ndarray, image_width: int, image_height: int) -> np.ndarray:
    """(D, 4) float32 pixel boxes with ordered corners, clipped to the image."""
    out = np.concatenate([np.minimum(boxes[:, :2], boxes[:, 2:]), np.maximum(boxes[:, :2], boxes[:, 2:])], axis=1)
    np.clip(out[:, 0::2], 0, image_width, out=out[:, 0::2])
    np.clip(out[:, 1::2], 0, image_height, out=out[:, 1::2])
    return out.astype(np.float32, copy=False)


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
