"""Keypoint helpers: scaling to source pixels and per-class keypoint sets.

A model may predict K keypoints for every instance while each class uses only
some of them (``ModelMetadata.class_keypoints``, e.g. grasp points of a mug versus
a box). Scores of keypoints a class does not use are set to 0 so consumers that
filter by score never see them.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def keypoints_to_pixels(keypoints: np.ndarray, image_width: int, image_height: int) -> np.ndarray:
    """``(N, K, 3)`` normalised x, y, score -> float32 x, y in source pixels, score unchanged.

    Not clipped: a joint just outside the frame is still information.
    """
    kps = np.array(keypoints, dtype=np.float32, copy=True)
    if kps.ndim != 3 or kps.shape[2] != 3:
        raise ValueError(f"keypoints must be (N, K, 3), got {kps.shape}")
    kps[..., 0] *= image_width
    kps[..., 1] *= image_height
    return kps


def class_keypoint_table(
    class_names: Sequence[str], num_keypoints: int, class_keypoints: Mapping[str, Sequence[int]]
) -> np.ndarray:
    """``(C, K)`` bool: which keypoints each class uses.

    Classes absent from ``class_keypoints`` use every keypoint (the metadata's rule).
    Raises ValueError for an unknown class name or an index outside ``0..K-1``.
    """
    table = np.ones((len(class_names), num_keypoints), dtype=bool)
    index = {name: i for i, name in enumerate(class_names)}
    for name, used in class_keypoints.items():
        if name not in index:
            raise ValueError(f"class_keypoints names class '{name}', which is not in the class list")
        used = [int(u) for u in used]
        bad = [u for u in used if not 0 <= u < num_keypoints]
        if bad:
            raise ValueError(f"class_keypoints for '{name}' refers to keypoints {bad} outside 0..{num_keypoints - 1}")
        table[index[name]] = False
        table[index[name], used] = True
    return table


def suppress_unused_keypoints(keypoints: np.ndarray, class_ids: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Copy of ``(N, K, 3)`` keypoints with score 0 where ``table[class_id]`` is False."""
    kps = np.array(keypoints, dtype=np.float32, copy=True)
    class_ids = np.asarray(class_ids, dtype=np.int64)
    if kps.shape[0] and kps.shape[1]:
        kps[..., 2] *= table[class_ids]
    return kps


def visible_keypoints(keypoints: np.ndarray, threshold: float) -> np.ndarray:
    """``(N, K)`` bool: keypoints whose score exceeds ``threshold`` and whose x, y are finite."""
    kps = np.asarray(keypoints)
    return (kps[..., 2] > threshold) & np.isfinite(kps[..., :2]).all(axis=-1)
