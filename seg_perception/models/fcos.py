"""FCOS: the anchor-free box detector of CenterMask, with its post-processing inside the graph.

Tian et al., "FCOS: Fully Convolutional One-Stage Object Detection", ICCV 2019, as in
centermask2 (``centermask/modeling/fcos/fcos.py``, ``fcos_outputs.py``). Checkpoint
names under ``proposal_generator.fcos_head``:

- ``cls_tower`` / ``bbox_tower`` / ``share_tower``: ``Sequential`` of [3x3 conv (bias),
  ``GroupNorm(32)``, ReLU] repeated (convs at 0, 3, 6, ...; GN at 1, 4, ...). Defaults:
  4 + 4 convs (CenterMask), 2 + 2 (CenterMask-Lite), no shared convs;
- ``cls_logits`` (C), ``bbox_pred`` (4: left, top, right, bottom) and ``ctrness`` (1),
  3x3 convs; ``scales.<level>.scale``: one learnable scalar per level multiplying the
  box regression, which then goes through ReLU (the "improved FCOS" choice).

Inference (``FCOSOutputs.predict_proposals``): per level, class probabilities
``sigmoid(cls)`` above ``pre_nms_thresh`` (0.05) are candidates, ranked by
``sigmoid(cls) * sigmoid(ctrness)``, at most ``pre_nms_topk`` (1000) per level; a box is
the location ``(x, y) = (i * stride + stride // 2, ...)`` minus/plus the regression times
the level's stride; the score is ``sqrt(cls * ctrness)``; class-aware NMS at
``nms_thresh`` (0.6) over all levels; the best ``post_nms_topk`` (100, 50 in the
CenterMask configs) survive.

In the graph all of this has static shapes: non-candidates get score 0 instead of
being dropped, ``topk`` picks a fixed number per level, NMS (ONNX
``NonMaxSuppression``, TensorRT's ``INMSLayer``) marks survivors through a scatter, and
a final ``topk`` keeps exactly ``post_nms_topk`` rows, padding with score 0. The one
difference from centermask2: ties at the post-NMS cut are broken by ``topk`` rather
than kept (``kthvalue`` there may keep a few more than ``post_nms_topk``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import batched_nms


class Scale(nn.Module):
    """Multiplies by one learnable scalar (parameter ``scale``, shape ``(1,)``)."""

    def __init__(self, init_value: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([init_value], dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


def _tower(channels: int, num_convs: int, norm: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers.append(nn.Conv2d(channels, channels, 3, padding=1, bias=True))
        if norm == "GN":
            layers.append(nn.GroupNorm(32, channels))
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class FCOSHead(nn.Module):
    """Per-level class logits ``(B, C, h, w)``, box regression ``(B, 4, h, w)`` (pixels / stride,
    non-negative) and centerness logits ``(B, 1, h, w)``, with weights shared across levels."""

    def __init__(
        self, in_channels: int, num_classes: int, num_levels: int = 5, num_cls_convs: int = 4,
        num_box_convs: int = 4, num_share_convs: int = 0, norm: str = "GN", prior_prob: float = 0.01,
    ) -> None:
        super().__init__()
        if norm == "GN" and in_channels % 32:
            raise ValueError(f"GroupNorm(32) needs a channel count divisible by 32, got {in_channels}")
        self.num_classes = num_classes
        self.cls_tower = _tower(in_channels, num_cls_convs, norm)
        self.bbox_tower = _tower(in_channels, num_box_convs, norm)
        self.share_tower = _tower(in_channels, num_share_convs, norm)
        self.cls_logits = nn.Conv2d(in_channels, num_classes, 3, padding=1)
        self.bbox_pred = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.ctrness = nn.Conv2d(in_channels, 1, 3, padding=1)
        self.scales = nn.ModuleList([Scale(1.0) for _ in range(num_levels)])
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
        # Focal-loss prior: every class starts at probability prior_prob.
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, features: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        logits, regs, ctrs = [], [], []
        for level, feature in enumerate(features):
            feature = self.share_tower(feature)
            cls_t = self.cls_tower(feature)
            box_t = self.bbox_tower(feature)
            logits.append(self.cls_logits(cls_t))
            ctrs.append(self.ctrness(box_t))
            regs.append(F.relu(self.scales[level](self.bbox_pred(box_t))))
        return logits, regs, ctrs


def level_locations(height: int, width: int, stride: int, device: torch.device | None = None) -> Tensor:
    """``(h * w, 2)`` x, y input-pixel positions of a level's cells, row-major: ``i * stride + stride // 2``."""
    xs = torch.arange(width, dtype=torch.float32, device=device) * stride + stride // 2
    ys = torch.arange(height, dtype=torch.float32, device=device) * stride + stride // 2
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((x.reshape(-1), y.reshape(-1)), dim=1)


class FCOS(nn.Module):
    """The ``proposal_generator``: head plus in-graph decoding, NMS and top-k (see the module docstring).

    ``forward(features)`` returns the raw head outputs (for losses); ``detect`` turns them
    into ``boxes (B, D, 4)`` x1, y1, x2, y2 in input pixels (not clipped), ``scores (B, D)``
    (``sqrt(cls * ctrness)``, 0 for padding) and ``classes (B, D)`` int64, D = ``post_nms_topk``.
    """

    def __init__(
        self, in_channels: int, num_classes: int, strides: Sequence[int] = (8, 16, 32, 64, 128), *,
        num_cls_convs: int = 4, num_box_convs: int = 4, pre_nms_thresh: float = 0.05,
        pre_nms_topk: int = 1000, nms_thresh: float = 0.6, post_nms_topk: int = 50,
    ) -> None:
        super().__init__()
        self.strides = tuple(int(s) for s in strides)
        self.num_classes = num_classes
        self.pre_nms_thresh = float(pre_nms_thresh)
        self.pre_nms_topk = int(pre_nms_topk)
        self.nms_thresh = float(nms_thresh)
        self.post_nms_topk = int(post_nms_topk)
        self.fcos_head = FCOSHead(in_channels, num_classes, len(self.strides), num_cls_convs, num_box_convs)

    def forward(self, features: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        return self.fcos_head(features)

    def num_candidates(self, feature_sizes: Sequence[tuple[int, int]]) -> int:
        """Rows entering NMS for these level sizes (a graph constant; must be >= ``post_nms_topk``)."""
        return sum(min(self.pre_nms_topk, h * w * self.num_classes) for h, w in feature_sizes)

    def detect(self, logits: Sequence[Tensor], regs: Sequence[Tensor], ctrs: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        batch = int(logits[0].shape[0])
        out_boxes, out_scores, out_classes = [], [], []
        locations = [
            level_locations(int(lg.shape[-2]), int(lg.shape[-1]), s, lg.device) for lg, s in zip(logits, self.strides)
        ]
        for b in range(batch):
            boxes, scores, classes = self._candidates(b, logits, regs, ctrs, locations)
            keep = batched_nms(boxes, scores, classes, self.nms_thresh)
            survived = torch.zeros_like(scores).scatter(0, keep, 1.0)
            ranked = torch.where(survived > 0, scores, torch.full_like(scores, -1.0))
            top_scores, top = ranked.topk(self.post_nms_topk)
            out_boxes.append(boxes[top])
            out_scores.append(top_scores.clamp(min=0.0))
            out_classes.append(classes[top])
        return torch.stack(out_boxes), torch.stack(out_scores), torch.stack(out_classes)

    def _candidates(
        self, b: int, logits: Sequence[Tensor], regs: Sequence[Tensor], ctrs: Sequence[Tensor], locations: list[Tensor],
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Per level, the best ``pre_nms_topk`` (location, class) pairs: boxes, sqrt scores, classes."""
        c = self.num_classes
        all_boxes, all_scores, all_classes = [], [], []
        for lg, rg, ct, loc, stride in zip(logits, regs, ctrs, locations, self.strides):
            prob = torch.sigmoid(lg[b]).reshape(c, -1).t()  # (hw, C), cells row-major
            ctr = torch.sigmoid(ct[b]).reshape(-1)
            score = torch.where(prob > self.pre_nms_thresh, prob * ctr[:, None], torch.zeros_like(prob)).reshape(-1)
            k = min(self.pre_nms_topk, int(score.shape[0]))
            vals, idx = score.topk(k)
            cell = torch.div(idx, c, rounding_mode="floor")
            ltrb = rg[b].reshape(4, -1).t()[cell] * stride
            xy = loc[cell]
            all_boxes.append(torch.cat((xy - ltrb[:, :2], xy + ltrb[:, 2:]), dim=1))
            all_scores.append(torch.sqrt(vals))
            all_classes.append(idx - cell * c)
        return torch.cat(all_boxes), torch.cat(all_scores), torch.cat(all_classes)


__all__ = ["Scale", "FCOSHead", "FCOS", "level_locations"]
