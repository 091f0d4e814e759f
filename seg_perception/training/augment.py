"""Training augmentation on torchvision.transforms.v2, moving masks and keypoints with the image.

The sample dict of ``dataset`` is wrapped in ``tv_tensors`` (``Image``, ``Mask``,
``BoundingBoxes``, ``KeyPoints``) so every geometric transform moves all of them
consistently; afterwards boxes are recomputed from the masks (a cropped object's box
is the box of what is left of it, not the clipped old box), instances with almost no
pixels left are dropped, and keypoints that left the image lose their visibility.

Horizontal flips must also rename keypoints whose meaning is handed: ``left_*`` and
``right_*`` swap, and so do the synthetic box corners, which are numbered clockwise
in the image (a mirror turns clockwise into anticlockwise: corners 1 and 3 swap,
0 and 2 stay). ``flip_permutation`` derives that from the keypoint names.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

# Keypoint pairs that swap under a horizontal mirror although their names are not left/right.
MIRROR_SWAPS: tuple[tuple[str, str], ...] = (("box_top_1", "box_top_3"),)


def flip_permutation(keypoint_names: Sequence[str]) -> list[int]:
    """``perm`` with ``flipped[:, i] = keypoints[:, perm[i]]`` after a horizontal flip."""
    names = list(keypoint_names)
    index = {n: i for i, n in enumerate(names)}
    perm = list(range(len(names)))
    pairs = list(MIRROR_SWAPS)
    for n in names:
        for a, b in (("left", "right"), ("Left", "Right"), ("l_", "r_")):
            if n.startswith(a) and b + n[len(a):] in index:
                pairs.append((n, b + n[len(a):]))
    for a, b in pairs:
        if a in index and b in index:
            perm[index[a]], perm[index[b]] = index[b], index[a]
    return perm


class TrainAugment:
    """Random view (full frame or a zoomed crop), horizontal flip, photometric jitter.

    Output images are ``(3, H, W)`` uint8 at ``size = (H, W)``, the network input, so
    batches stack without padding. ``crop_probability``: how often a random crop of
    ``crop_scale`` of the area is taken instead of the whole frame.
    """

    def __init__(self, size: tuple[int, int], keypoint_names: Sequence[str] = (), flip_probability: float = 0.5,
                 crop_probability: float = 0.5, crop_scale: tuple[float, float] = (0.35, 1.0),
                 min_mask_pixels: int = 8, photometric: bool = True) -> None:
        self.size = (int(size[0]), int(size[1]))
        aspect = self.size[1] / self.size[0]
        self.resize = v2.Resize(self.size, antialias=True)
        self.crop = v2.RandomResizedCrop(self.size, scale=crop_scale, ratio=(aspect * 0.8, aspect * 1.25),
                                         antialias=True)
        self.color = v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.03) if photometric else None
        self.flip_probability = flip_probability
        self.crop_probability = crop_probability
        self.min_mask_pixels = min_mask_pixels
        self.perm = torch.tensor(flip_permutation(keypoint_names), dtype=torch.long)

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        image = tv_tensors.Image(sample["image"])
        h, w = image.shape[-2:]
        n, k = sample["keypoints"].shape[:2]
        masks = tv_tensors.Mask(sample["masks"])
        boxes = tv_tensors.BoundingBoxes(sample["boxes"], format="XYXY", canvas_size=(h, w))
        kxy = tv_tensors.KeyPoints(sample["keypoints"][..., :2].reshape(-1, 2), canvas_size=(h, w))
        geometric = self.crop if random.random() < self.crop_probability else self.resize
        image, masks, boxes, kxy = geometric(image, masks, boxes, kxy)
        vis = sample["keypoints"][..., 2].clone()
        if random.random() < self.flip_probability:
            image, masks, boxes, kxy = (TF.horizontal_flip(t) for t in (image, masks, boxes, kxy))
            kxy = tv_tensors.wrap(kxy.reshape(n, k, 2)[:, self.perm].reshape(-1, 2), like=kxy)
            vis = vis[:, self.perm]
        if self.color is not None:
            image = self.color(image)
        return finish_sample(sample, image, masks, kxy.reshape(n, k, 2), vis, self.min_mask_pixels)


class EvalResize:
    """Plain resize to the network input (what ``core.preprocess.resize_for_network`` does)."""

    def __init__(self, size: tuple[int, int]) -> None:
        self.size = (int(size[0]), int(size[1]))
        self.resize = v2.Resize(self.size, antialias=True)

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        image = tv_tensors.Image(sample["image"])
        h, w = image.shape[-2:]
        n, k = sample["keypoints"].shape[:2]
        kxy = tv_tensors.KeyPoints(sample["keypoints"][..., :2].reshape(-1, 2), canvas_size=(h, w))
        image, masks, kxy = self.resize(image, tv_tensors.Mask(sample["masks"]), kxy)
        return finish_sample(sample, image, masks, kxy.reshape(n, k, 2), sample["keypoints"][..., 2].clone(), 1)


def finish_sample(sample: dict[str, Any], image: torch.Tensor, masks: torch.Tensor, kxy: torch.Tensor,
                  vis: torch.Tensor, min_mask_pixels: int) -> dict[str, Any]:
    """Boxes from the transformed masks, drop vanished instances, hide keypoints outside the image."""
    h, w = image.shape[-2:]
    masks = masks.as_subclass(torch.Tensor).to(torch.uint8)
    area = masks.flatten(1).sum(1) if len(masks) else torch.zeros(0)
    keep = (area >= min_mask_pixels) | sample["iscrowd"]
    masks = masks[keep]
    ys = masks.any(dim=2)
    xs = masks.any(dim=1)
    boxes = torch.zeros((len(masks), 4), dtype=torch.float32)
    for j in range(len(masks)):
        yi = torch.nonzero(ys[j]).flatten()
        xi = torch.nonzero(xs[j]).flatten()
        if len(yi):
            boxes[j] = torch.tensor([xi[0], yi[0], xi[-1] + 1, yi[-1] + 1], dtype=torch.float32)
    kxy = kxy.as_subclass(torch.Tensor)[keep].float()
    vis = vis[keep]
    inside = (kxy[..., 0] >= 0) & (kxy[..., 0] < w) & (kxy[..., 1] >= 0) & (kxy[..., 1] < h)
    vis = torch.where(inside, vis, torch.zeros_like(vis))
    keypoints = torch.cat([kxy, vis[..., None]], dim=-1)
    keypoints[keypoints[..., 2] <= 0] = 0.0
    return {
        "image": image.as_subclass(torch.Tensor).contiguous(),
        "masks": masks, "boxes": boxes, "labels": sample["labels"][keep], "keypoints": keypoints,
        "iscrowd": sample["iscrowd"][keep], "image_id": sample["image_id"],
    }


__all__ = ["MIRROR_SWAPS", "flip_permutation", "TrainAugment", "EvalResize", "finish_sample"]
