"""YOLACT's training losses (Bolya et al., ICCV 2019, Sec. 3 and 4) plus our keypoint branch.

Per image, priors are matched to ground truth by IoU (SSD rules, as YOLACT):
IoU >= ``pos_iou`` is a positive, < ``neg_iou`` a negative, in between ignored, and
each ground-truth box also claims its best prior so no object goes unmatched. Priors
overlapping a crowd region by more than ``crowd_iou`` are not used as negatives.

- classification: softmax cross-entropy with online hard negative mining at
  ``negpos_ratio`` negatives per positive, summed and divided by the positives;
- boxes: smooth-L1 on the variance-encoded deltas (``box_coder.encode_boxes``) of the
  positives, x ``box_alpha`` (1.5);
- masks: for (up to ``masks_to_train``) positives, the assembled mask
  ``sigmoid(protos @ coeffs)`` at prototype resolution against the ground truth mask,
  binary cross-entropy cropped to the ground-truth box and divided by the box area
  (the paper's normalisation, so small objects count as much as large ones),
  averaged over instances, x ``mask_alpha`` (6.125);
- semantic segmentation (training-only head on P3): per-class BCE, x ``semantic_alpha``;
- keypoints (ours): smooth-L1 on the offsets ``box_coder.encode_keypoints`` of the
  labelled (v > 0) keypoints of positives, averaged per keypoint, x ``keypoint_alpha``,
  and BCE on the visibility logit (target: labelled), x ``visibility_alpha``.

All coordinates here are normalised to the network input, as the priors are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_iou

from seg_perception.models.box_coder import encode_boxes, encode_keypoints


@dataclass
class YolactLossConfig:
    """Loss weights and matching thresholds (defaults: the official ``yolact_base_config``)."""

    pos_iou: float = 0.5
    neg_iou: float = 0.4
    crowd_iou: float = 0.7
    negpos_ratio: int = 3
    box_alpha: float = 1.5
    mask_alpha: float = 6.125
    semantic_alpha: float = 1.0
    keypoint_alpha: float = 1.0
    visibility_alpha: float = 0.5
    masks_to_train: int = 100


def point_form(priors: Tensor) -> Tensor:
    """``(N, 4)`` cx, cy, w, h -> x1, y1, x2, y2."""
    return torch.cat([priors[:, :2] - priors[:, 2:] / 2, priors[:, :2] + priors[:, 2:] / 2], dim=1)


def match_priors(priors: Tensor, gt_boxes: Tensor, crowd_boxes: Tensor, cfg: YolactLossConfig) -> tuple[Tensor, Tensor]:
    """Assign priors to ground truth.

    priors ``(N, 4)`` cx, cy, w, h; gt_boxes ``(G, 4)`` and crowd_boxes ``(Gc, 4)``
    x1, y1, x2, y2, all normalised. Returns ``state (N,)`` (1 positive, 0 negative,
    -1 ignored) and ``gt_index (N,)`` (the matched box of each prior; 0 where none).
    """
    n = priors.shape[0]
    state = torch.zeros(n, dtype=torch.long, device=priors.device)
    index = torch.zeros(n, dtype=torch.long, device=priors.device)
    pf = point_form(priors)
    if len(gt_boxes):
        iou = box_iou(gt_boxes, pf)  # (G, N)
        best_iou, index = iou.max(dim=0)
        # Every object keeps its best prior, even below pos_iou (the official forced match).
        best_prior = iou.argmax(dim=1)
        for g in range(len(gt_boxes)):
            best_iou[best_prior[g]] = 2.0
            index[best_prior[g]] = g
        state[best_iou >= cfg.pos_iou] = 1
        state[(best_iou >= cfg.neg_iou) & (best_iou < cfg.pos_iou)] = -1
    if len(crowd_boxes):
        crowd_iou = box_iou(crowd_boxes, pf).max(dim=0).values
        state[(state == 0) & (crowd_iou > cfg.crowd_iou)] = -1
    return state, index


def _downsample_masks(masks: Tensor, size: tuple[int, int]) -> Tensor:
    """``(G, H, W)`` 0/1 -> ``(G, h, w)`` float 0/1 (bilinear then threshold 0.5, as the official code)."""
    if masks.shape[0] == 0:
        return masks.new_zeros((0, *size), dtype=torch.float32)
    small = F.interpolate(masks[None].float(), size=size, mode="bilinear", align_corners=False)[0]
    return (small > 0.5).float()


def yolact_losses(raw: dict[str, Tensor], targets: list[dict[str, Any]], input_size: tuple[int, int],
                  cfg: YolactLossConfig | None = None) -> dict[str, Tensor]:
    """The loss terms of one batch (see the module docstring); their sum is what to minimise.

    raw: ``Yolact.forward_raw`` of the batch. targets: per image, ``dataset`` sample
    fields in pixels of the network input ``input_size = (H, W)``.
    Returns ``{"class", "box", "mask", "semantic"?, "keypoint"?, "visibility"?}``.
    """
    cfg = cfg or YolactLossConfig()
    priors = raw["priors"]
    conf, loc, coeffs, protos = raw["conf"], raw["loc"], raw["mask_coeffs"], raw["protos"]
    bsz, n_priors, _ = conf.shape
    h_in, w_in = input_size
    scale = torch.tensor([w_in, h_in, w_in, h_in], dtype=loc.dtype, device=loc.device)
    hp, wp = protos.shape[1:3]
    has_kpts = "keypoints" in raw

    conf_targets = torch.zeros((bsz, n_priors), dtype=torch.long, device=conf.device)
    state_all = torch.zeros((bsz, n_priors), dtype=torch.long, device=conf.device)
    box_terms, mask_terms, kp_terms, vis_terms = [], [], [], []
    num_kp_labelled = 0
    total_pos = 0
    semantic_terms = []
    for b, t in enumerate(targets):
        crowd = t["iscrowd"].bool()
        boxes = t["boxes"].to(loc.device, loc.dtype) / scale
        state, index = match_priors(priors, boxes[~crowd], boxes[crowd], cfg)
        keep_ids = torch.nonzero(~crowd).flatten()
        labels = t["labels"].to(conf.device)[keep_ids]
        state_all[b] = state
        pos = torch.nonzero(state == 1).flatten()
        total_pos += len(pos)
        if len(pos):
            conf_targets[b, pos] = labels[index[pos]] + 1
            matched = boxes[keep_ids][index[pos]]
            box_terms.append(F.smooth_l1_loss(loc[b, pos], encode_boxes(matched, priors[pos]), reduction="sum"))
            # Masks: a random subset of positives bounds the memory (official masks_to_train).
            mpos = pos if len(pos) <= cfg.masks_to_train else pos[torch.randperm(len(pos), device=pos.device)[:cfg.masks_to_train]]
            gt_small = _downsample_masks(t["masks"].to(protos.device)[keep_ids], (hp, wp))
            gi = index[mpos]
            logits = protos[b] @ coeffs[b, mpos].t()  # (hp, wp, M)
            target = gt_small[gi].permute(1, 2, 0)  # (hp, wp, M)
            gbox = boxes[keep_ids][gi]
            xs = (torch.arange(wp, device=protos.device, dtype=protos.dtype) + 0.5) / wp
            ys = (torch.arange(hp, device=protos.device, dtype=protos.dtype) + 0.5) / hp
            crop = ((xs[None, :, None] >= gbox[:, 0]) & (xs[None, :, None] <= gbox[:, 2])
                    & (ys[:, None, None] >= gbox[:, 1]) & (ys[:, None, None] <= gbox[:, 3])).to(protos.dtype)
            bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none") * crop
            area = ((gbox[:, 2] - gbox[:, 0]) * wp * (gbox[:, 3] - gbox[:, 1]) * hp).clamp(min=1.0)
            mask_terms.append((bce.sum(dim=(0, 1)) / area).mean())
            if has_kpts and t["keypoints"].shape[1]:
                kp_gt = t["keypoints"].to(loc.device, loc.dtype)[keep_ids][index[pos]]  # (P, K, 3)
                labelled = kp_gt[..., 2] > 0
                xy = kp_gt[..., :2] / scale[:2]
                offsets = encode_keypoints(xy, priors[pos])
                raw_kp = raw["keypoints"][b, pos]
                if labelled.any():
                    kp_terms.append(F.smooth_l1_loss(raw_kp[..., :2][labelled], offsets[labelled], reduction="sum"))
                    num_kp_labelled += int(labelled.sum())
                vis_terms.append(F.binary_cross_entropy_with_logits(raw_kp[..., 2], labelled.to(raw_kp.dtype),
                                                                    reduction="mean"))
        if "semantic" in raw:
            sem = raw["semantic"][b]
            sh, sw = sem.shape[-2:]
            seg_t = torch.zeros_like(sem)
            small = _downsample_masks(t["masks"].to(sem.device)[keep_ids], (sh, sw))
            for j in range(len(keep_ids)):
                seg_t[labels[j]] = torch.maximum(seg_t[labels[j]], small[j])
            semantic_terms.append(F.binary_cross_entropy_with_logits(sem, seg_t, reduction="sum") / (sh * sw))

    num_pos = max(total_pos, 1)
    # Online hard negative mining: per image the 3 x positives negatives of highest background loss.
    with torch.no_grad():
        bg_loss = torch.logsumexp(conf, dim=-1) - conf[..., 0]
        bg_loss[state_all != 0] = 0.0
        order = bg_loss.argsort(dim=1, descending=True)
        rank = order.argsort(dim=1)
        n_pos_img = (state_all == 1).sum(dim=1, keepdim=True)
        n_neg = torch.clamp(cfg.negpos_ratio * n_pos_img, min=cfg.negpos_ratio, max=n_priors - 1)
        negatives = (rank < n_neg) & (state_all == 0)
        selected = (state_all == 1) | negatives
    class_loss = F.cross_entropy(conf[selected], conf_targets[selected], reduction="sum") / num_pos
    zero = conf.sum() * 0.0
    losses = {
        "class": class_loss,
        "box": cfg.box_alpha * (torch.stack(box_terms).sum() / num_pos if box_terms else zero),
        "mask": cfg.mask_alpha * (torch.stack(mask_terms).mean() if mask_terms else zero),
    }
    if "semantic" in raw:
        losses["semantic"] = cfg.semantic_alpha * torch.stack(semantic_terms).mean()
    if has_kpts:
        losses["keypoint"] = cfg.keypoint_alpha * (torch.stack(kp_terms).sum() / max(num_kp_labelled, 1)
                                                   if kp_terms else zero)
        losses["visibility"] = cfg.visibility_alpha * (torch.stack(vis_terms).mean() if vis_terms else zero)
    return losses


__all__ = ["YolactLossConfig", "point_form", "match_priors", "yolact_losses"]
