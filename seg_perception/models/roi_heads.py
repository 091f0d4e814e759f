"""Per-box heads of CenterMask: RoI pooling, SAG-Mask, MaskIoU and a keypoint head.

As in centermask2 (``centermask/modeling/centermask/``) and detectron2, with the
checkpoint names under ``roi_heads``:

- ``RoIPooler`` (no parameters): ``torchvision.ops.roi_align`` with ``aligned=True``
  (detectron2's ``ROIAlignV2``) and adaptive sampling (``sampling_ratio = 0``), from the
  level chosen per box. CenterMask's rule (``ASSIGN_CRITERION = "ratio"``, eq. 2 of the
  paper): ``k = ceil(k_max - log2(A_image / A_box))`` clamped to ``[k_min, k_max]``, with
  the area of the network input and of the box in input pixels, levels P3..P5. So a box
  larger than half the image pools from P5 (stride 32), one between a quarter and a
  half from P4, smaller ones from P3: relative to the image rather than to a fixed
  224 px box (FPN's rule, ``"area"``), so it does not change with the input size.
- ``mask_head`` (``SpatialAttentionMaskHead``): ``mask_fcn1..n`` 3x3 convs + ReLU,
  ``spatialAtt.conv`` (2 -> 1, 3x3, no bias) on [channel mean, channel max] gating the
  features through a sigmoid, ``deconv`` (2x2/2 transposed conv) + ReLU, ``predictor``
  1x1 to one mask logit map per class: 14 x 14 RoI features -> 28 x 28 masks.
- ``maskiou_head`` (``MaskIoUHead``): the RoI features concatenated with the 2x2-max-pooled
  mask probabilities, ``maskiou_fcn1..n`` 3x3 convs + ReLU (the last with stride 2),
  ``maskiou_fc1``, ``maskiou_fc2`` (1024, ReLU) and ``maskiou`` (one IoU per class). At
  inference the detection's score is multiplied by the IoU of its class
  (``mask_iou_inference``: centermask2's ``mask_scores``, used for mask AP).
- ``keypoint_head`` (detectron2's ``KRCNNConvDeconvUpsampleHead``): ``conv_fcn1..n`` 3x3
  convs (512 channels x 8 by default) + ReLU, ``score_lowres`` 4x4/2 transposed conv to
  K heatmaps, then bilinear x2: 14 x 14 -> 56 x 56 logits. K = 17 (COCO person) by
  default. centermask2 pools keypoints from ``ROI_KEYPOINT_HEAD.IN_FEATURES`` (P2..P5 in
  its defaults); CenterMask's FPN has no P2, so here they come from P3..P5 with the
  same ratio rule (its ``ROI_KEYPOINT_HEAD.ASSIGN_CRITERION`` default).

Everything works on a fixed number D of boxes per image (``RoIPooler`` pools every box
from every level and selects per box), so the exported graph has static shapes.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_align

_EPS = sys.float_info.epsilon  # as detectron2's poolers


def assign_levels_by_ratio(boxes: Tensor, image_area: float, min_level: int, max_level: int) -> Tensor:
    """CenterMask's level of each ``(N, 4)`` box (input pixels), as an offset from ``min_level``."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    level = torch.ceil(max_level - torch.log2(image_area / area + _EPS))
    return (level.clamp(min=min_level, max=max_level) - min_level).to(torch.int64)


def assign_levels_by_area(boxes: Tensor, min_level: int, max_level: int,
                          canonical_box_size: float = 224.0, canonical_level: int = 4) -> Tensor:
    """FPN's level rule (eq. 1 of the FPN paper, detectron2's default), as an offset from ``min_level``."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    level = torch.floor(canonical_level + torch.log2(torch.sqrt(area) / canonical_box_size + _EPS))
    return (level.clamp(min=min_level, max=max_level) - min_level).to(torch.int64)


class RoIPooler(nn.Module):
    """``(B, D, 4)`` boxes (input pixels) on feature levels -> ``(B * D, C, R, R)`` RoIAlign features."""

    def __init__(self, output_size: int, strides: Sequence[int], assign: str = "ratio") -> None:
        super().__init__()
        if assign not in ("ratio", "area"):
            raise ValueError(f"unknown level assignment {assign!r}; choose 'ratio' (CenterMask) or 'area' (FPN)")
        self.output_size = int(output_size)
        self.strides = tuple(int(s) for s in strides)
        self.min_level = int(round(math.log2(self.strides[0])))
        self.max_level = int(round(math.log2(self.strides[-1])))
        if [2 ** (self.min_level + i) for i in range(len(self.strides))] != list(self.strides):
            raise ValueError(f"pooler strides must be consecutive powers of two, got {self.strides}")
        self.assign = assign

    def levels(self, boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
        """``(N,)`` level offset of each ``(N, 4)`` box."""
        if self.assign == "ratio":
            return assign_levels_by_ratio(boxes, float(image_size[0] * image_size[1]), self.min_level, self.max_level)
        return assign_levels_by_area(boxes, self.min_level, self.max_level)

    def forward(self, features: Sequence[Tensor], boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
        b, d = int(boxes.shape[0]), int(boxes.shape[1])
        flat = boxes.reshape(b * d, 4)
        batch_index = torch.arange(b, dtype=flat.dtype, device=flat.device).repeat_interleave(d)[:, None]
        rois = torch.cat((batch_index, flat), dim=1)
        level = self.levels(flat, image_size)[:, None, None, None]
        pooled: Tensor | None = None
        for i, (feature, stride) in enumerate(zip(features, self.strides)):
            # Every box from every level, then a per-box choice: static shapes for export,
            # at the price of pooling D boxes len(levels) times (cheap next to the heads).
            level_out = roi_align(feature, rois, self.output_size, spatial_scale=1.0 / stride,
                                  sampling_ratio=0, aligned=True)
            pooled = level_out if pooled is None else torch.where(level == i, level_out, pooled)
        assert pooled is not None
        return pooled


class SpatialAttention(nn.Module):
    """``x * sigmoid(conv3x3([mean_c(x), max_c(x)]))`` (centermask2 ``sam.SpatialAttention``)."""

    def __init__(self, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        stats = torch.cat((x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)), dim=1)
        return x * torch.sigmoid(self.conv(stats))


class SpatialAttentionMaskHead(nn.Module):
    """SAG-Mask: ``(N, C, R, R)`` RoI features -> ``(N, classes, 2R, 2R)`` mask logits."""

    def __init__(self, in_channels: int, num_classes: int, conv_dim: int = 256, num_conv: int = 4,
                 cls_agnostic: bool = False) -> None:
        super().__init__()
        self.num_conv = num_conv
        ch = in_channels
        for k in range(num_conv):
            self.add_module(f"mask_fcn{k + 1}", nn.Conv2d(ch, conv_dim, 3, padding=1))
            ch = conv_dim
        self.spatialAtt = SpatialAttention()
        self.deconv = nn.ConvTranspose2d(ch, conv_dim, kernel_size=2, stride=2)
        self.predictor = nn.Conv2d(conv_dim, 1 if cls_agnostic else num_classes, 1)
        for m in [getattr(self, f"mask_fcn{k + 1}") for k in range(num_conv)] + [self.deconv]:
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        nn.init.kaiming_normal_(self.spatialAtt.conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.zeros_(self.predictor.bias)

    def forward(self, x: Tensor) -> Tensor:
        for k in range(self.num_conv):
            x = F.relu(getattr(self, f"mask_fcn{k + 1}")(x))
        x = self.spatialAtt(x)
        return self.predictor(F.relu(self.deconv(x)))


class MaskIoUHead(nn.Module):
    """``(N, C, R, R)`` RoI features + ``(N, 1, 2R, 2R)`` mask probabilities -> ``(N, classes)`` IoUs."""

    def __init__(self, in_channels: int, num_classes: int, conv_dim: int = 256, num_conv: int = 4,
                 resolution: int = 14) -> None:
        super().__init__()
        self.num_conv = num_conv
        ch = in_channels + 1
        for k in range(num_conv):
            stride = 2 if k + 1 == num_conv else 1
            conv = nn.Conv2d(ch, conv_dim, 3, stride=stride, padding=1)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
            self.add_module(f"maskiou_fcn{k + 1}", conv)
            ch = conv_dim
        self.maskiou_fc1 = nn.Linear(conv_dim * (resolution // 2) ** 2, 1024)
        self.maskiou_fc2 = nn.Linear(1024, 1024)
        self.maskiou = nn.Linear(1024, num_classes)
        for fc in (self.maskiou_fc1, self.maskiou_fc2):
            nn.init.kaiming_normal_(fc.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(fc.bias)
        nn.init.normal_(self.maskiou.weight, std=0.01)
        nn.init.zeros_(self.maskiou.bias)

    def forward(self, features: Tensor, mask_probs: Tensor) -> Tensor:
        x = torch.cat((features, F.max_pool2d(mask_probs, kernel_size=2, stride=2)), dim=1)
        for k in range(self.num_conv):
            x = F.relu(getattr(self, f"maskiou_fcn{k + 1}")(x))
        x = F.relu(self.maskiou_fc1(torch.flatten(x, 1)))
        x = F.relu(self.maskiou_fc2(x))
        return self.maskiou(x)


class KeypointHead(nn.Module):
    """``(N, C, R, R)`` RoI features -> ``(N, K, 4R, 4R)`` keypoint heatmap logits (Mask R-CNN style)."""

    def __init__(self, in_channels: int, num_keypoints: int = 17, conv_dims: Sequence[int] = (512,) * 8) -> None:
        super().__init__()
        self.num_keypoints = num_keypoints
        self.num_conv = len(conv_dims)
        ch = in_channels
        for i, dim in enumerate(conv_dims, 1):
            self.add_module(f"conv_fcn{i}", nn.Conv2d(ch, dim, 3, padding=1))
            ch = dim
        self.score_lowres = nn.ConvTranspose2d(ch, num_keypoints, kernel_size=4, stride=2, padding=1)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            else:
                nn.init.kaiming_normal_(p, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        for i in range(1, self.num_conv + 1):
            x = F.relu(getattr(self, f"conv_fcn{i}")(x))
        x = self.score_lowres(x)
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


class CenterROIHeads(nn.Module):
    """Mask, MaskIoU and keypoint heads on given boxes (``roi_heads`` in checkpoints).

    ``forward(features, boxes, classes, scores, image_size)`` takes P3..P5, ``(B, D, 4)``
    boxes in input pixels, ``(B, D)`` int64 classes and scores, and returns ``masks``
    ``(B, D, 2R, 2R)`` probabilities of each box's class, ``scores`` (times the predicted
    mask IoU when there is a MaskIoU head) and, with keypoints, ``keypoint_heatmaps``
    ``(B, D, K, 4R, 4R)`` logits.
    """

    def __init__(
        self, in_channels: int, num_classes: int, strides: Sequence[int] = (8, 16, 32), *,
        mask_conv_dim: int = 256, mask_num_conv: int = 4, mask_resolution: int = 14,
        maskiou: bool = True, maskiou_conv_dim: int = 256, maskiou_num_conv: int = 4,
        num_keypoints: int = 0, keypoint_conv_dims: Sequence[int] = (512,) * 8, keypoint_resolution: int = 14,
        cls_agnostic_mask: bool = False,
    ) -> None:
        super().__init__()
        self.mask_pooler = RoIPooler(mask_resolution, strides, assign="ratio")
        self.mask_head = SpatialAttentionMaskHead(in_channels, num_classes, mask_conv_dim, mask_num_conv, cls_agnostic_mask)
        self.maskiou_head = (MaskIoUHead(in_channels, num_classes, maskiou_conv_dim, maskiou_num_conv, mask_resolution)
                             if maskiou else None)
        self.num_keypoints = num_keypoints
        if num_keypoints:
            self.keypoint_pooler = RoIPooler(keypoint_resolution, strides, assign="ratio")
            self.keypoint_head = KeypointHead(in_channels, num_keypoints, keypoint_conv_dims)

    def forward(self, features: Sequence[Tensor], boxes: Tensor, classes: Tensor, scores: Tensor,
                image_size: tuple[int, int]) -> dict[str, Tensor]:
        b, d = int(boxes.shape[0]), int(boxes.shape[1])
        mask_features = self.mask_pooler(features, boxes, image_size)
        logits = self.mask_head(mask_features)  # (B*D, classes or 1, M, M)
        if logits.shape[1] > 1:
            index = classes.reshape(b * d, 1, 1, 1).expand(-1, 1, logits.shape[2], logits.shape[3])
            logits = logits.gather(1, index)
        probs = torch.sigmoid(logits)  # (B*D, 1, M, M)
        out = {"masks": probs.reshape(b, d, probs.shape[2], probs.shape[3]), "scores": scores}
        if self.maskiou_head is not None:
            iou = self.maskiou_head(mask_features, probs).gather(1, classes.reshape(b * d, 1))
            out["scores"] = scores * iou.reshape(b, d)
        if self.num_keypoints:
            heatmaps = self.keypoint_head(self.keypoint_pooler(features, boxes, image_size))
            out["keypoint_heatmaps"] = heatmaps.reshape(b, d, *heatmaps.shape[1:])
        return out


__all__ = [
    "assign_levels_by_ratio",
    "assign_levels_by_area",
    "RoIPooler",
    "SpatialAttention",
    "SpatialAttentionMaskHead",
    "MaskIoUHead",
    "KeypointHead",
    "CenterROIHeads",
]
