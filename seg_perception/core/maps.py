"""Dense per-pixel maps of one frame's instances, for navigation (costmaps, semantic
layers) and for consumers that prefer an image over a list of cropped masks.

Both maps are ``(height, width)`` images in the pixel frame of the source image,
0 meaning "no instance". Where masks overlap, the instance with the higher score
wins the pixel (it is drawn last); equal scores go to the earlier instance (lower
index). The ROS layer publishes them as ``mono16`` / ``mono8`` images with the source
image's header.
"""

from __future__ import annotations

import numpy as np

from seg_perception.core.types import CroppedMask, Detections

INSTANCE_MAP_MAX = np.iinfo(np.uint16).max


def paint_order(scores: np.ndarray) -> np.ndarray:
    """Indices in drawing order: lowest score first, ties with the higher index first,
    so that the highest score (and, among equals, the lowest index) is drawn last."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    n = s.size
    # lexsort sorts by the last key first: ascending score, then descending index.
    return np.lexsort((-np.arange(n), s))


def _paint(masks: list[CroppedMask], values: np.ndarray, order: np.ndarray, out: np.ndarray) -> np.ndarray:
    h, w = out.shape
    for i in order:
        m = masks[int(i)]
        x0, y0 = max(m.x, 0), max(m.y, 0)
        x1, y1 = min(m.x + m.width, w), min(m.y + m.height, h)
        if x1 <= x0 or y1 <= y0:
            continue
        fg = m.data[y0 - m.y:y1 - m.y, x0 - m.x:x1 - m.x] != 0
        region = out[y0:y1, x0:x1]
        region[fg] = values[int(i)]  # one vectorised write per crop
    return out


def instance_labels_for_map(detections: Detections, untracked: str = "index") -> np.ndarray:
    """(N,) int64 value of each instance in ``instance_map`` (see there)."""
    n = len(detections)
    tids = np.asarray(detections.track_ids if detections.track_ids is not None else np.zeros(n),
                      dtype=np.int64).reshape(-1)
    if untracked == "index":
        labels = np.where(tids != 0, tids, np.arange(1, n + 1, dtype=np.int64))
    elif untracked == "skip":
        labels = tids.copy()
    else:
        raise ValueError(f"untracked must be 'index' or 'skip', got {untracked!r}")
    # Track ids count up forever; wrap them into 1..65535 rather than overflow to 0.
    return np.where(labels > 0, (labels - 1) % INSTANCE_MAP_MAX + 1, 0)


def instance_map(detections: Detections, height: int, width: int, untracked: str = "index") -> np.ndarray:
    """``(height, width)`` uint16: which instance each pixel belongs to, 0 = none.

    The value is the instance's track id when it has one (nonzero), else its index
    in ``detections`` + 1, so with tracking off the map indexes the InstanceArray
    (value v -> instances[v - 1]) and with tracking on it matches ``Instance.id``.
    With tracking on, an untracked instance (tentative track, id 0) would get index
    + 1, which can collide with a real track id: pass ``untracked="skip"`` to leave
    such instances out of the map. Track ids above 65535 wrap to 1..65535.
    Overlaps: the higher-scored instance wins the pixel (ties: the lower index).
    """
    out = np.zeros((int(height), int(width)), np.uint16)
    if len(detections) == 0:
        return out
    labels = instance_labels_for_map(detections, untracked).astype(np.uint16)
    order = paint_order(detections.scores)
    if untracked == "skip":
        order = order[labels[order] != 0]
    return _paint(detections.masks, labels, order, out)


def class_map(detections: Detections, height: int, width: int) -> np.ndarray:
    """``(height, width)`` uint8: class id + 1 of the instance at each pixel, 0 = none.

    Same overlap rule as ``instance_map``. Raises ValueError for class ids outside
    0..254 (they do not fit the 8-bit image).
    """
    out = np.zeros((int(height), int(width)), np.uint8)
    if len(detections) == 0:
        return out
    cls = np.asarray(detections.class_ids, dtype=np.int64).reshape(-1)
    if cls.size and (cls.min() < 0 or cls.max() > 254):
        raise ValueError(f"class ids must be in 0..254 for an 8-bit class map, got {cls.min()}..{cls.max()}")
    return _paint(detections.masks, (cls + 1).astype(np.uint8), paint_order(detections.scores), out)
