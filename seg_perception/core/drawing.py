"""Debug overlay: masks, boxes, labels and skeletons drawn onto a copy of the image.

Meant for the ``debug/image`` topic, so it must be cheap: masks are blended only
inside their crops, and everything else is a handful of OpenCV primitives.
"""

from __future__ import annotations

import colorsys
from functools import lru_cache
from typing import Sequence

import cv2
import numpy as np

from seg_perception.core.types import Detections

_FONT = cv2.FONT_HERSHEY_SIMPLEX


@lru_cache(maxsize=1024)
def color_for(index: int) -> tuple[int, int, int]:
    """A saturated RGB colour for a class or track index, stable across runs.

    Successive indices step the hue by the golden ratio so neighbours differ.
    """
    hue = (int(index) * 0.6180339887498949) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def instance_label(class_id: int, score: float, class_names: Sequence[str], track_id: int = 0,
                   range_m: float = float("nan")) -> str:
    """``"name 0.87"``; ``"#12 name 0.87"`` when a track id is set; ``"... 0.98 m"`` with a range."""
    name = class_names[class_id] if 0 <= class_id < len(class_names) else f"class {class_id}"
    text = f"{name} {score:.2f}"
    if np.isfinite(range_m):
        text = f"{text} {range_m:.2f} m"
    return f"#{track_id} {text}" if track_id else text


def draw_overlay(
    rgb: np.ndarray,
    detections: Detections,
    class_names: Sequence[str] = (),
    keypoint_names: Sequence[str] = (),
    skeleton: Sequence[tuple[int, int]] = (),
    *,
    mask_alpha: float = 0.45,
    keypoint_threshold: float = 0.3,
    draw_masks: bool = True,
    draw_boxes: bool = True,
    draw_labels: bool = True,
    draw_keypoints: bool = True,
    label_keypoints: bool = False,
    box_thickness: int = 2,
    font_scale: float = 0.5,
    ranges: Sequence[float] | None = None,
) -> np.ndarray:
    """A new ``(H, W, 3)`` uint8 RGB image with ``detections`` drawn over ``rgb``.

    Colours follow the track id when it is nonzero, otherwise the class id. Masks
    are blended with weight ``mask_alpha``; box outlines (``box_thickness`` pixels,
    centred on the box region's border) and labels ``"name 0.87"`` (prefixed
    ``"#id"`` when tracked) are drawn in the instance colour; keypoints whose score
    exceeds ``keypoint_threshold`` get a dot, and ``skeleton`` edges (index pairs
    into the keypoints) a line when both ends qualify. ``keypoint_names`` label the
    dots when ``label_keypoints``. ``ranges`` (metres per instance, NaN for none) append
    the distance of instances with 3D to their labels. ``rgb`` is never modified.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected (H, W, 3) uint8 RGB, got shape {rgb.shape} dtype {rgb.dtype}")
    out = np.array(rgb, dtype=np.uint8, order="C", copy=True)
    height, width = out.shape[:2]
    n = len(detections)
    colors = [
        color_for(int(t)) if int(t) else color_for(int(c))
        for c, t in zip(detections.class_ids, detections.track_ids)
    ]

    if draw_masks:
        for mask, color in zip(detections.masks, colors):
            _blend_mask(out, mask.x, mask.y, mask.data, color, mask_alpha)

    boxes = np.asarray(detections.boxes, dtype=np.float64).reshape(-1, 4)
    for i in range(n):
        color = colors[i]
        x0, y0, x1, y1 = _box_pixels(boxes[i], width, height)
        if draw_boxes:
            cv2.rectangle(out, (x0, y0), (x1, y1), color, box_thickness, cv2.LINE_8)
        if draw_labels:
            text = instance_label(
                int(detections.class_ids[i]), float(detections.scores[i]), class_names, int(detections.track_ids[i]),
                float(ranges[i]) if ranges is not None else float("nan"),
            )
            _draw_label(out, text, x0, y0, color, font_scale)

    kps = np.asarray(detections.keypoints, dtype=np.float32)
    if draw_keypoints and kps.ndim == 3 and kps.shape[1] > 0:
        for i in range(n):
            _draw_skeleton(
                out, kps[i], skeleton, colors[i], keypoint_threshold, keypoint_names if label_keypoints else (),
                font_scale,
            )
    return out


def _box_pixels(box: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    """Inclusive pixel corners of the region a float xyxy box touches, inside the image."""
    x0 = int(np.clip(np.floor(box[0]), 0, width - 1))
    y0 = int(np.clip(np.floor(box[1]), 0, height - 1))
    x1 = int(np.clip(np.ceil(box[2]) - 1, x0, width - 1))
    y1 = int(np.clip(np.ceil(box[3]) - 1, y0, height - 1))
    return x0, y0, x1, y1


def _blend_mask(out: np.ndarray, x: int, y: int, data: np.ndarray, color: tuple[int, int, int], alpha: float) -> None:
    """Blend ``color`` into ``out`` where the cropped mask is set, touching only its crop."""
    h, w = out.shape[:2]
    # Clip the crop to the image (masks from our post-processing always fit, but
    # masks decoded from someone else's message may not).
    cx0, cy0 = max(x, 0), max(y, 0)
    cx1, cy1 = min(x + data.shape[1], w), min(y + data.shape[0], h)
    if cx1 <= cx0 or cy1 <= cy0:
        return
    sel = data[cy0 - y:cy1 - y, cx0 - x:cx1 - x]
    if sel.dtype != np.uint8:
        sel = (sel != 0).view(np.uint8)
    roi = out[cy0:cy1, cx0:cx1]
    # roi * (1 - alpha) + color * alpha, written through the mask into the view.
    scaled = cv2.convertScaleAbs(roi, alpha=1.0 - alpha)
    tint = (color[0] * alpha, color[1] * alpha, color[2] * alpha, 0.0)
    cv2.add(scaled, tint, dst=roi, mask=sel)


def _draw_label(out: np.ndarray, text: str, x: int, y: int, color: tuple[int, int, int], font_scale: float) -> None:
    """Text on a filled tab above the box's top-left corner (inside it near the top edge)."""
    (tw, th), baseline = cv2.getTextSize(text, _FONT, font_scale, 1)
    tab_h = th + baseline + 2
    top = y - tab_h if y - tab_h >= 0 else y
    cv2.rectangle(out, (x, top), (x + tw + 2, top + tab_h), color, cv2.FILLED)
    luma = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    ink = (0, 0, 0) if luma > 140 else (255, 255, 255)
    cv2.putText(out, text, (x + 1, top + th + 1), _FONT, font_scale, ink, 1, cv2.LINE_AA)


def _draw_skeleton(
    out: np.ndarray,
    keypoints: np.ndarray,
    skeleton: Sequence[tuple[int, int]],
    color: tuple[int, int, int],
    threshold: float,
    names: Sequence[str],
    font_scale: float,
) -> None:
    """Lines for skeleton edges with both ends visible, then dots for visible keypoints."""
    k = keypoints.shape[0]
    finite = np.isfinite(keypoints).all(axis=1)
    visible = finite & (keypoints[:, 2] > threshold)
    pts = np.zeros((k, 2), np.int64)
    # Far-off coordinates would overflow OpenCV's int32 points; clipping keeps the
    # direction of a line leaving the frame roughly right.
    limit = 4 * max(out.shape[:2])
    pts[finite] = np.clip(np.round(keypoints[finite, :2]), -limit, limit).astype(np.int64)
    bones = [
        pts[[a, b]].astype(np.int32).reshape(2, 1, 2)
        for a, b in skeleton
        if 0 <= a < k and 0 <= b < k and visible[a] and visible[b]
    ]
    if bones:
        cv2.polylines(out, bones, False, color, 2, cv2.LINE_AA)  # one call for all bones
    for j in np.flatnonzero(visible):
        p = (int(pts[j, 0]), int(pts[j, 1]))
        cv2.circle(out, p, 3, color, cv2.FILLED, cv2.LINE_AA)
        cv2.circle(out, p, 3, (255, 255, 255), 1, cv2.LINE_AA)
        if j < len(names):
            cv2.putText(out, names[j], (p[0] + 4, p[1] - 4), _FONT, font_scale * 0.8, color, 1, cv2.LINE_AA)
