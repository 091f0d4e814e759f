"""Encoding of boxes and keypoints relative to priors (SSD/YOLACT style).

All coordinates are normalised to the network input. Priors are ``(cx, cy, w, h)``.
The variances 0.1 (centre) and 0.2 (log size) are YOLACT's (``box_utils.decode``):
they scale the regression targets to roughly unit variance for the smooth-L1 loss.

Boxes:      cx = pcx + dx * 0.1 * pw,  w = pw * exp(dw * 0.2)   (and y/h alike)
Keypoints:  x  = pcx + dx * 0.1 * pw,  y = pcy + dy * 0.1 * ph  (same as a box centre)

``decode_*`` run inside the exported graph; ``encode_*`` build training targets.
"""

from __future__ import annotations

import torch
from torch import Tensor

CENTER_VARIANCE = 0.1
SIZE_VARIANCE = 0.2


def decode_boxes(deltas: Tensor, priors: Tensor) -> Tensor:
    """``(..., N, 4)`` regression deltas + ``(N, 4)`` priors -> ``(..., N, 4)`` x1, y1, x2, y2."""
    centre = priors[..., :2] + deltas[..., :2] * CENTER_VARIANCE * priors[..., 2:]
    size = priors[..., 2:] * torch.exp(deltas[..., 2:] * SIZE_VARIANCE)
    top_left = centre - size / 2
    return torch.cat([top_left, top_left + size], dim=-1)


def encode_boxes(boxes: Tensor, priors: Tensor, eps: float = 1e-6) -> Tensor:
    """Inverse of ``decode_boxes``: ``(N, 4)`` x1, y1, x2, y2 matched to priors -> deltas."""
    centre = (boxes[..., :2] + boxes[..., 2:]) / 2
    size = (boxes[..., 2:] - boxes[..., :2]).clamp(min=eps)
    d_centre = (centre - priors[..., :2]) / (CENTER_VARIANCE * priors[..., 2:])
    d_size = torch.log(size / priors[..., 2:]) / SIZE_VARIANCE
    return torch.cat([d_centre, d_size], dim=-1)


def decode_keypoints(raw: Tensor, priors: Tensor) -> Tensor:
    """``(B, N, K, 3)`` raw (dx, dy, visibility logit) -> ``(B, N, K, 3)`` x, y, visibility in [0, 1]."""
    p = priors[:, None, :]  # (N, 1, 4) broadcasts over K
    xy = p[..., :2] + raw[..., :2] * CENTER_VARIANCE * p[..., 2:]
    return torch.cat([xy, torch.sigmoid(raw[..., 2:3])], dim=-1)


def encode_keypoints(keypoints_xy: Tensor, priors: Tensor) -> Tensor:
    """``(N, K, 2)`` normalised keypoints matched to ``(N, 4)`` priors -> ``(N, K, 2)`` offset targets."""
    p = priors[:, None, :]
    return (keypoints_xy - p[..., :2]) / (CENTER_VARIANCE * p[..., 2:])


__all__ = [
    "CENTER_VARIANCE",
    "SIZE_VARIANCE",
    "decode_boxes",
    "encode_boxes",
    "decode_keypoints",
    "encode_keypoints",
]
