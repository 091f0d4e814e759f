"""Turning a source image into the network's input tensor.

The exported graphs take ``(B, H, W, 3)`` uint8 RGB at their fixed input size and
normalise inside (see ``core.metadata``), so pre-processing is a single plain
resize, as YOLACT's own ``FastBaseTransform`` does: no letterboxing, so the
normalised box coordinates the network returns map straight onto the source image.
"""

from __future__ import annotations

import cv2
import numpy as np


def resize_for_network(
    rgb: np.ndarray, input_width: int, input_height: int, out: np.ndarray | None = None
) -> np.ndarray:
    """Resize ``(H, W, 3)`` uint8 RGB to a ``(1, input_height, input_width, 3)`` uint8 batch.

    One bilinear ``cv2.resize`` (``INTER_LINEAR``), no float conversion. ``out``, if
    given, is a C-contiguous ``(1, input_height, input_width, 3)`` uint8 array that
    receives the result (reuse it across frames to avoid an allocation); it is
    returned. The input is never modified and may be a read-only or row-padded view.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected (H, W, 3) uint8 RGB, got shape {rgb.shape} dtype {rgb.dtype}")
    if input_width <= 0 or input_height <= 0:
        raise ValueError(f"bad network input size {input_width}x{input_height}")
    shape = (1, input_height, input_width, 3)
    if out is None:
        out = np.empty(shape, np.uint8)
    elif out.shape != shape or out.dtype != np.uint8 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous uint8 array of shape {shape}, got {out.shape} {out.dtype}")
    if rgb.shape[:2] == (input_height, input_width):
        out[0] = rgb
    else:
        cv2.resize(rgb, (input_width, input_height), dst=out[0], interpolation=cv2.INTER_LINEAR)
    return out
