"""CenterMask's training losses: FCOS for the boxes, Mask R-CNN style losses for the RoI heads.

Lee and Park, CVPR 2020, as centermask2 trains it (FCOS settings of AdelaiDet's
``FCOSOutputs``, RoI heads of detectron2 / Mask Scoring R-CNN), all weights 1.0.

FCOS (Tian et al., ICCV 2019), over the locations of P3..P7 (``models.fcos.level_locations``):

- assignment: a location is a candidate for a ground-truth box when it lies inside the
  box's centre region (the box shrunk to ``center_sample_radius`` strides around its
  centre, clipped to the box; centermask2's ``CENTER_SAMPLE``, radius 1.5) and the
  largest of its distances l, t, r, b to the box sides is within the level's size of
  interest ([0, 64], [64, 128], [128, 256], [256, 512], [512, inf] px for strides
  8..128). Among several candidates the box of smallest area wins. Crowd regions are
  dropped, as detectron2 drops them: their locations are plain negatives;
- classification: sigmoid focal loss (alpha 0.25, gamma 2) over every location and
  class, summed and divided by max(1, positives);
- boxes: GIoU loss between the predicted and target ltrb (in strides; GIoU does not
  care about the unit) of the positives, weighted by the centerness target and divided
  by the sum of the centerness targets;
- centerness: BCE-with-logits against ``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))``
  on the positives, divided by the positives.

RoI heads (on the ground-truth boxes plus the model's own detached detections that
overlap a ground-truth box by IoU >= ``roi_iou``, at most ``proposals_per_image`` of
them, best score first: the proposals centermask2 trains on, with the ground truth
appended as detectron2's ``PROPOSAL_APPEND_GT`` does; each takes the class, mask and
keypoints of its best-overlapping ground truth):

- mask (Mask R-CNN): per-pixel BCE-with-logits of the ground-truth class's 28 x 28 logits
  against the ground-truth mask ``roi_align``ed (aligned) into the box and thresholded
  at 0.5, averaged over all pixels of all RoIs;
- MaskIoU (Mask Scoring R-CNN): ``0.5 * (predicted - target)^2`` for the ground-truth
  class, averaged over RoIs whose target is > 0; the target is the IoU between the
  binarised (p > 0.5) predicted mask and the ground truth, with the part of the
  ground-truth mask outside the box counted in the union (centermask2's
  ``mask_ratios``; for a ground-truth box it is the plain 28 x 28 IoU);
- keypoints (Mask R-CNN): cross-entropy of the softmax over each 56 x 56 heatmap against
  the cell holding the keypoint, for labelled (v > 0) keypoints inside the box, divided
  by their number; RoIs without such a keypoint do not enter the head.

Targets are per image ``dataset`` samples in pixels of the network input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_iou, generalized_box_iou_loss, roi_align, sigmoid_focal_loss

from seg_perception.models.fcos import level_locations


@dataclass
class CenterMaskLossConfig:
    """Loss weights and assignment settings (defaults: centermask2's, weights all 1.0)."""

    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    center_sample_radius: float = 1.5  # strides; <= 0: every location inside the box is a candidate
    sizes_of_interest: tuple[float, ...] = (64.0, 128.0, 256.0, 512.0)  # level boundaries, px
    roi_iou: float = 0.5
    proposals_per_image: int = 64
    class_weight: float = 1.0
    box_weight: float = 1.0
    centerness_weight: float = 1.0
    mask_weight: float = 1.0
    maskiou_weight: float = 1.0
    keypoint_weight: float = 1.0


def size_ranges(num_levels: int, sizes_of_interest: tuple[float, ...]) -> list[tuple[float, float]]:
    """``[(0, s0), (s0, s1), ..., (s_last, inf)]`` for ``num_levels`` levels."""
    bounds = [0.0, *[float(s) for s in sizes_of_interest][: num_levels - 1]]
    return [(bounds[i], bounds[i + 1] if i + 1 < len(bounds) else math.inf) for i in range(num_levels)]


def fcos_targets(
    locations: list[Tensor], strides: tuple[int, ...] | list[int], boxes: Tensor, labels: Tensor,
    cfg: CenterMaskLossConfig | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """FCOS assignment of one image (see the module docstring).

    locations: per level ``(n_l, 2)`` x, y in input pixels; boxes ``(G, 4)`` x1, y1, x2, y2
    (crowd regions already removed) and labels ``(G,)``. Returns, over the concatenated
    locations, ``labels (N,)`` (-1: negative), ``ltrb (N, 4)`` in units of each location's
    stride (0 for negatives) and ``gt_index (N,)`` (-1 for negatives).
    """
    cfg = cfg or CenterMaskLossConfig()
    locs = torch.cat(locations)
    n = locs.shape[0]
    device = locs.device
    if len(boxes) == 0:
        return (torch.full((n,), -1, dtype=torch.long, device=device), locs.new_zeros((n, 4)),
                torch.full((n,), -1, dtype=torch.long, device=device))
    boxes = boxes.to(locs)
    stride = torch.cat([locs.new_full((len(lv),), float(s)) for lv, s in zip(locations, strides)])
    ranges = size_ranges(len(locations), tuple(cfg.sizes_of_interest))
    lo = torch.cat([locs.new_full((len(lv),), r[0]) for lv, r in zip(locations, ranges)])
    hi = torch.cat([locs.new_full((len(lv),), r[1]) for lv, r in zip(locations, ranges)])
    xs, ys = locs[:, 0:1], locs[:, 1:2]  # (N, 1)
    ltrb = torch.stack((xs - boxes[:, 0], ys - boxes[:, 1], boxes[:, 2] - xs, boxes[:, 3] - ys), dim=2)  # (N, G, 4)
    if cfg.center_sample_radius > 0:
        cx = (boxes[:, 0] + boxes[:, 2]) / 2
        cy = (boxes[:, 1] + boxes[:, 3]) / 2
        r = stride[:, None] * cfg.center_sample_radius  # (N, 1)
        x0 = torch.maximum(cx - r, boxes[:, 0])
        y0 = torch.maximum(cy - r, boxes[:, 1])
        x1 = torch.minimum(cx + r, boxes[:, 2])
        y1 = torch.minimum(cy + r, boxes[:, 3])
        inside = torch.stack((xs - x0, ys - y0, x1 - xs, y1 - ys), dim=2).amin(dim=2) > 0
    else:
        inside = ltrb.amin(dim=2) > 0
    reach = ltrb.amax(dim=2)
    cared = (reach >= lo[:, None]) & (reach <= hi[:, None])
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))[None].expand(n, -1)
    area = torch.where(inside & cared, area, torch.full_like(area, math.inf))
    min_area, gt_index = area.min(dim=1)
    positive = torch.isfinite(min_area)
    out_ltrb = ltrb[torch.arange(n, device=device), gt_index] / stride[:, None]
    out_labels = torch.where(positive, labels.to(device)[gt_index], torch.full_like(gt_index, -1))
    out_ltrb = torch.where(positive[:, None], out_ltrb, torch.zeros_like(out_ltrb))
    return out_labels, out_ltrb, torch.where(positive, gt_index, torch.full_like(gt_index, -1))


def centerness_targets(ltrb: Tensor) -> Tensor:
    """``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))`` of ``(N, 4)`` positive distances."""
    lr = ltrb[:, [0, 2]]
    tb = ltrb[:, [1, 3]]
    ratio = (lr.amin(dim=1) / lr.amax(dim=1).clamp(min=1e-12)) * (tb.amin(dim=1) / tb.amax(dim=1).clamp(min=1e-12))
    return torch.sqrt(ratio.clamp(min=0.0))


def _flatten_levels(per_level: list[Tensor]) -> Tensor:
    """Per-level ``(B, C, h, w)`` -> ``(B, sum hw, C)``, cells row-major (as ``level_locations``)."""
    return torch.cat([t.permute(0, 2, 3, 1).reshape(t.shape[0], -1, t.shape[1]) for t in per_level], dim=1)


def _ltrb_boxes(ltrb: Tensor) -> Tensor:
    """Distances from a location -> a box around it at the origin (GIoU only needs relative geometry)."""
    return torch.cat((-ltrb[:, :2], ltrb[:, 2:]), dim=1)


def mask_targets(masks: Tensor, boxes: Tensor, size: int, index: Tensor | None = None) -> Tensor:
    """Ground-truth masks cropped and resized into boxes -> ``(R, size, size)`` 0/1 float.

    detectron2's ``BitMasks.crop_and_resize``: aligned RoIAlign of the full-image mask,
    then >= 0.5. masks ``(G, H, W)`` 0/1; boxes ``(R, 4)``; ``index (R,)`` the mask of each
    box (default: mask r for box r), so RoIs sharing a ground truth share its mask.
    """
    if len(boxes) == 0:
        return boxes.new_zeros((0, size, size))
    if index is None:
        index = torch.arange(len(boxes), device=boxes.device)
    rois = torch.cat((index.to(boxes.dtype)[:, None], boxes), dim=1)
    out = roi_align(masks[:, None].to(boxes.dtype), rois, (size, size), spatial_scale=1.0, sampling_ratio=0,
                    aligned=True)[:, 0]
    return (out >= 0.5).to(boxes.dtype)


def mask_inside_ratio(masks: Tensor, boxes: Tensor, index: Tensor | None = None) -> Tensor:
    """Share of each ground-truth mask's pixels whose centres lie in the box, in [0, 1].

    masks ``(G, H, W)``, boxes ``(R, 4)``, ``index (R,)`` as in ``mask_targets``; counted
    on per-mask summed-area tables, so RoIs cost four look-ups each.
    """
    if len(boxes) == 0:
        return boxes.new_zeros((0,))
    if index is None:
        index = torch.arange(len(boxes), device=boxes.device)
    g, h, w = masks.shape
    table = F.pad(masks.to(torch.int64).cumsum(1).cumsum(2), (1, 0, 1, 0))  # (G, H + 1, W + 1), exact counts
    # Pixel i (centre i + 0.5) is inside [a, b] when ceil(a - 0.5) <= i <= floor(b - 0.5).
    x0 = torch.ceil(boxes[:, 0] - 0.5).clamp(0, w).long()
    y0 = torch.ceil(boxes[:, 1] - 0.5).clamp(0, h).long()
    x1 = (torch.floor(boxes[:, 2] - 0.5) + 1).clamp(0, w).long()
    y1 = (torch.floor(boxes[:, 3] - 0.5) + 1).clamp(0, h).long()
    x1, y1 = torch.maximum(x1, x0), torch.maximum(y1, y0)
    inside = table[index, y1, x1] - table[index, y0, x1] - table[index, y1, x0] + table[index, y0, x0]
    total = table[index, h, w].clamp(min=1)
    return (inside.to(boxes.dtype) / total.to(boxes.dtype)).clamp(0.0, 1.0)


def maskiou_targets(mask_logits: Tensor, targets: Tensor, inside_ratio: Tensor) -> Tensor:
    """Mask Scoring R-CNN's IoU target: binarised prediction vs ground truth, the ground truth's
    part outside the box counted in the union (``inside_ratio`` from ``mask_inside_ratio``)."""
    pred = (mask_logits.detach() > 0).to(targets.dtype)
    overlap = (pred * targets).sum(dim=(1, 2))
    full = targets.sum(dim=(1, 2)) / inside_ratio.clamp(min=1e-10)
    union = (pred.sum(dim=(1, 2)) + full - overlap).clamp(min=1.0)
    return overlap / union


def keypoint_targets(keypoints: Tensor, boxes: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Heatmap cell index ``(R, K)`` of each keypoint and whether it counts (v > 0, inside the box).

    As detectron2's ``keypoints_to_heatmap``: ``floor((x - x1) * size / w)``, a keypoint on
    the box's far edge in the last cell.
    """
    x1, y1, x2, y2 = (boxes[:, i:i + 1] for i in range(4))
    x, y = keypoints[..., 0], keypoints[..., 1]
    cx = ((x - x1) * size / (x2 - x1).clamp(min=1e-6)).floor().long()
    cy = ((y - y1) * size / (y2 - y1).clamp(min=1e-6)).floor().long()
    cx = torch.where(x == x2, torch.full_like(cx, size - 1), cx)
    cy = torch.where(y == y2, torch.full_like(cy, size - 1), cy)
    valid = (cx >= 0) & (cy >= 0) & (cx < size) & (cy < size) & (keypoints[..., 2] > 0)
    index = torch.where(valid, cy * size + cx, torch.zeros_like(cx))
    return index, valid


def select_rois(
    gt_boxes: Tensor, proposal_boxes: Tensor, proposal_scores: Tensor, cfg: CenterMaskLossConfig,
) -> tuple[Tensor, Tensor]:
    """Training RoIs of one image: every ground-truth box, then the best-scoring proposals with
    IoU >= ``roi_iou`` to a ground truth (at most ``proposals_per_image``). Returns boxes and the
    index of each one's ground truth."""
    index = torch.arange(len(gt_boxes), device=gt_boxes.device)
    if len(gt_boxes) == 0 or cfg.proposals_per_image <= 0:
        return gt_boxes, index
    real = proposal_scores > 0
    boxes, scores = proposal_boxes[real], proposal_scores[real]
    if len(boxes) == 0:
        return gt_boxes, index
    best_iou, best_gt = box_iou(boxes, gt_boxes).max(dim=1)
    keep = torch.nonzero(best_iou >= cfg.roi_iou).flatten()
    keep = keep[scores[keep].argsort(descending=True)][: cfg.proposals_per_image]
    return torch.cat((gt_boxes, boxes[keep])), torch.cat((index, best_gt[keep]))


def centermask_losses(model: Any, raw: dict[str, Any], targets: list[dict[str, Any]],
                      cfg: CenterMaskLossConfig | None = None) -> dict[str, Tensor]:
    """The loss terms of one batch (see the module docstring); their sum is what to minimise.

    model: the ``models.centermask.CenterMask`` (its RoI heads run here, on the training
    RoIs); raw: its ``forward_train`` of the batch; targets: per image, ``dataset``
    sample fields in pixels of the network input. Returns ``{"class", "box",
    "centerness", "mask", "maskiou"?, "keypoint"?}`` (MaskIoU with a MaskIoU head,
    keypoints when the model has them).
    """
    cfg = cfg or CenterMaskLossConfig()
    logits_l, regs_l, ctrs_l = raw["logits"], raw["regs"], raw["ctrs"]
    strides = tuple(model.proposal_generator.strides)
    device = logits_l[0].device
    locations = [level_locations(int(t.shape[-2]), int(t.shape[-1]), s, device) for t, s in zip(logits_l, strides)]
    logits = _flatten_levels(logits_l)  # (B, N, C)
    regs = _flatten_levels(regs_l)  # (B, N, 4)
    ctrs = _flatten_levels(ctrs_l)[..., 0]  # (B, N)

    class_target = torch.zeros_like(logits)
    pos_reg, pos_reg_t, pos_ctr = [], [], []
    gt_per_image: list[dict[str, Tensor]] = []
    for b, t in enumerate(targets):
        all_boxes = t["boxes"].to(device, logits.dtype)
        usable = (~t["iscrowd"].to(device, torch.bool) & (all_boxes[:, 2] > all_boxes[:, 0])
                  & (all_boxes[:, 3] > all_boxes[:, 1]))
        keep = torch.nonzero(usable).flatten()
        boxes = all_boxes[keep]
        labels = t["labels"].to(device)[keep]
        gt_per_image.append({"boxes": boxes, "labels": labels, "masks": t["masks"].to(device)[keep],
                             "keypoints": t["keypoints"].to(device, logits.dtype)[keep]})
        lab, ltrb, _ = fcos_targets(locations, strides, boxes, labels, cfg)
        pos = torch.nonzero(lab >= 0).flatten()
        class_target[b, pos, lab[pos]] = 1.0
        pos_reg.append(regs[b, pos])
        pos_reg_t.append(ltrb[pos])
        pos_ctr.append(ctrs[b, pos])
    reg_p, reg_t, ctr_p = torch.cat(pos_reg), torch.cat(pos_reg_t), torch.cat(pos_ctr)
    num_pos = len(reg_t)
    class_loss = sigmoid_focal_loss(logits, class_target, alpha=cfg.focal_alpha, gamma=cfg.focal_gamma,
                                    reduction="sum") / max(1, num_pos)
    if num_pos:
        ctr_t = centerness_targets(reg_t)
        giou = generalized_box_iou_loss(_ltrb_boxes(reg_p), _ltrb_boxes(reg_t), reduction="none")
        box_loss = (giou * ctr_t).sum() / ctr_t.sum().clamp(min=1e-6)
        ctr_loss = F.binary_cross_entropy_with_logits(ctr_p, ctr_t, reduction="sum") / num_pos
    else:  # keeps the graph connected, so every term is a tensor with a gradient
        box_loss = regs.sum() * 0.0
        ctr_loss = ctrs.sum() * 0.0
    losses = {"class": cfg.class_weight * class_loss, "box": cfg.box_weight * box_loss,
              "centerness": cfg.centerness_weight * ctr_loss}
    losses.update(_roi_losses(model, raw, gt_per_image, cfg))
    return losses


def _roi_losses(model: Any, raw: dict[str, Any], gts: list[dict[str, Tensor]],
                cfg: CenterMaskLossConfig) -> dict[str, Tensor]:
    """Mask, MaskIoU and keypoint losses on the training RoIs (see the module docstring)."""
    heads = model.roi_heads
    has_iou = heads.maskiou_head is not None
    has_kp = bool(model.num_keypoints)
    feats = raw["features"]
    zero = feats[0].sum() * 0.0
    rois, classes, m_targets, ratios, kp_boxes, kp_gt = [], [], [], [], [], []
    m = 2 * heads.mask_pooler.output_size
    s = 4 * heads.keypoint_pooler.output_size if has_kp else 0
    for b, gt in enumerate(gts):
        boxes, index = select_rois(gt["boxes"], raw["proposal_boxes"][b].to(gt["boxes"]),
                                   raw["proposal_scores"][b], cfg)
        rois.append(boxes)
        classes.append(gt["labels"][index])
        m_targets.append(mask_targets(gt["masks"], boxes, m, index))
        if has_iou:
            ratios.append(mask_inside_ratio(gt["masks"], boxes, index))
        if has_kp and len(boxes) and gt["keypoints"].shape[1]:
            kps = gt["keypoints"][index]
            cells, valid = keypoint_targets(kps, boxes, s)
            use = valid.any(dim=1)
            kp_boxes.append(boxes[use])
            kp_gt.append((cells[use], valid[use]))
        else:
            kp_boxes.append(boxes[:0])  # keeps kp_boxes indexed by image; kp_gt only holds rows
    out: dict[str, Tensor] = {}
    if sum(len(r) for r in rois) == 0:
        out["mask"] = zero
        if has_iou:
            out["maskiou"] = zero
        if has_kp:
            out["keypoint"] = zero
        return out
    pred = model.roi_forward_train(feats, rois, classes, raw["image_size"],
                                   kp_boxes if has_kp and any(len(k) for k in kp_boxes) else None)
    target = torch.cat(m_targets)
    out["mask"] = cfg.mask_weight * F.binary_cross_entropy_with_logits(pred["mask_logits"], target)
    if has_iou:
        iou_t = maskiou_targets(pred["mask_logits"], target, torch.cat(ratios))
        pos = iou_t > 0
        out["maskiou"] = cfg.maskiou_weight * (0.5 * ((pred["maskiou"][pos] - iou_t[pos]) ** 2).mean()
                                               if pos.any() else pred["maskiou"].sum() * 0.0)
    if has_kp:
        if "keypoint_logits" in pred:
            cells = torch.cat([c for c, _ in kp_gt])
            valid = torch.cat([v for _, v in kp_gt])
            hm = pred["keypoint_logits"].flatten(2)  # (Rk, K, S*S)
            out["keypoint"] = cfg.keypoint_weight * F.cross_entropy(hm[valid], cells[valid], reduction="sum") \
                / max(1, int(valid.sum()))
        else:
            out["keypoint"] = zero
    return out


__all__ = ["CenterMaskLossConfig", "size_ranges", "fcos_targets", "centerness_targets", "mask_targets",
           "mask_inside_ratio", "maskiou_targets", "keypoint_targets", "select_rois", "centermask_losses"]
