"""YOLACT prior (anchor) boxes.

Priors are ``(N, 4)`` float32 ``(cx, cy, w, h)`` normalised to the network input
(0..1 across its width and height). Their order is the order of the prediction
head's outputs: level by level (P3 first), then row-major over the level's cells
(y outer, x inner), then scale, then aspect ratio -- the order in which
dbolya/yolact's ``PredictionModule.make_priors`` lays them out, so heads trained by
the official code decode correctly.

Official settings (``yolact_base_config``): pixel scales 24, 48, 96, 192, 384 for
P3..P7 at 550 px, aspect ratios ``[1, 1/2, 2]``, ``preapply_sqrt=False`` (the width
factor is ``sqrt(ar)``) and ``use_square_anchors=True``: a bug kept for backward
compatibility that sets the height equal to the width, so the three "aspect
ratios" are really three square sizes ``scale * {1, 0.707, 1.414}``. For a 550 px
input that gives 3 * (69² + 35² + 18² + 9² + 5²) = 19248 priors.

The official code divides both width and height by ``max_size`` (its inputs are
always square). For non-square inputs we divide the width by the input width and
the height by the input height, so an anchor of ``scale`` pixels is ``scale``
pixels in both directions; on square inputs this is the official formula exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

# The official YOLACT anchors at 550 px (one scale per level, P3..P7).
BASE_INPUT_SIZE = 550
BASE_PRIOR_SCALES: tuple[float, ...] = (24.0, 48.0, 96.0, 192.0, 384.0)
BASE_ASPECT_RATIOS: tuple[float, ...] = (1.0, 0.5, 2.0)


def scaled_prior_scales(input_size: int, base_scales: Sequence[float] = BASE_PRIOR_SCALES) -> tuple[float, ...]:
    """Anchor sizes in pixels for another input size, as the official im400/im700 configs do.

    ``int(scale / 550 * input_size)`` (truncation included): 700 px -> 30, 61, 122, 244, 488.
    """
    return tuple(float(int(s / BASE_INPUT_SIZE * input_size)) for s in base_scales)


def anchors_per_location(scales_per_level: int, aspect_ratios: Sequence[float]) -> int:
    """Priors per feature-map cell (the head predicts this many boxes per cell)."""
    return scales_per_level * len(aspect_ratios)


def make_priors(
    feature_sizes: Sequence[tuple[int, int]],
    image_size: tuple[int, int],
    scales: Sequence[Sequence[float]],
    aspect_ratios: Sequence[float] = BASE_ASPECT_RATIOS,
    use_square_anchors: bool = True,
    device: torch.device | str | None = None,
) -> Tensor:
    """YOLACT priors for the given feature maps.

    feature_sizes:  ``(height, width)`` of each level's feature map, P3 first.
    image_size:     ``(height, width)`` of the network input in pixels.
    scales:         per level, the anchor sizes in pixels of the network input.
    aspect_ratios:  width/height ratios; the width factor is ``sqrt(ar)``.
    Returns ``(N, 4)`` float32 ``(cx, cy, w, h)`` normalised to the input.
    """
    if len(feature_sizes) != len(scales):
        raise ValueError(f"{len(feature_sizes)} feature maps but {len(scales)} lists of scales")
    img_h, img_w = image_size
    levels = []
    for (fh, fw), level_scales in zip(feature_sizes, scales):
        # Cell centres, row-major: (fh*fw, 2) as (cx, cy).
        ys = (torch.arange(fh, dtype=torch.float64) + 0.5) / fh
        xs = (torch.arange(fw, dtype=torch.float64) + 0.5) / fw
        cy, cx = torch.meshgrid(ys, xs, indexing="ij")
        centres = torch.stack([cx.reshape(-1), cy.reshape(-1)], dim=1)
        # Anchor sizes, scale-major then aspect ratio: (A, 2) as (w, h).
        sizes = []
        for scale in level_scales:
            for ar in aspect_ratios:
                root = math.sqrt(ar)
                w = scale * root / img_w
                h = scale * root / img_h if use_square_anchors else scale / root / img_h
                sizes.append((w, h))
        wh = torch.tensor(sizes, dtype=torch.float64)
        a = wh.shape[0]
        level = torch.cat(
            [centres[:, None, :].expand(-1, a, -1), wh[None, :, :].expand(centres.shape[0], -1, -1)], dim=2
        )
        levels.append(level.reshape(-1, 4))
    return torch.cat(levels, dim=0).to(dtype=torch.float32, device=device)


def num_priors(
    feature_sizes: Sequence[tuple[int, int]], scales: Sequence[Sequence[float]], aspect_ratios: Sequence[float]
) -> int:
    """Number of priors ``make_priors`` returns, without building them."""
    return sum(h * w * len(s) * len(aspect_ratios) for (h, w), s in zip(feature_sizes, scales))


__all__ = [
    "BASE_INPUT_SIZE",
    "BASE_PRIOR_SCALES",
    "BASE_ASPECT_RATIOS",
    "scaled_prior_scales",
    "anchors_per_location",
    "make_priors",
    "num_priors",
]
