"""YOLACT++: YOLACT with deformable backbone convs, 9 anchors per cell and mask re-scoring.

Bolya et al., "YOLACT++: Better Real-time Instance Segmentation", TPAMI 2020. Facts
from the official configs (dbolya/yolact ``data/config.py``, ``yolact_plus_base_config``
and ``yolact_plus_resnet50_config``):

- backbone: ResNet-101 with DCNv2 in ``conv2`` of the blocks chosen by
  ``dcn_layers = [0, 4, 23, 3]``, ``dcn_interval = 3`` (``ResNet101_DCN_Interval3``);
  ResNet-50 with ``[0, 4, 6, 3]``, interval 1 (every block of stages 1-3);
- anchors: per level three scales ``s * 2 ** (j / 3)``, ``j = 0, 1, 2``, for
  ``s = 24, 48, 96, 192, 384`` at 550 px, times aspect ratios ``[1, 1/2, 2]`` =
  **9 anchors per cell**, with ``use_square_anchors = False`` and
  ``preapply_sqrt = False`` (width ``s * sqrt(ar)``, height ``s / sqrt(ar)``);
- ``use_maskiou``: ``FastMaskIoUNet``, stored as ``maskiou_net.maskiou_net.{0,2,...,10}``:
  five 3x3 stride-2 convs without padding (8, 16, 32, 64, 128 channels) and a 1x1 conv
  to the 80 classes, each followed by ReLU, then a max over the whole map;
  ``rescore_mask = True``, ``rescore_bbox = False``: a detection's mask score is its
  class score times the predicted IoU of its class.

Everything else (FPN, ProtoNet, shared head, decoding, the raw-output contract) is
``models.yolact.Yolact``.

Where mask re-scoring runs. The MaskIoU net needs the *assembled* mask of each
detection kept by Fast NMS (the sigmoid of prototypes x coefficients at prototype
resolution, cropped to the box with the official 1-pixel padding), and NMS is not in
the graph (``core.postprocess``). So the exported ONNX graph is the plain YOLACT
contract and the MaskIoU net runs in ``core.mask_rescoring`` on NumPy, after NMS, with
its weights in a small ``<model>.maskiou.npz`` beside the model (named by
``ModelMetadata.maskiou_weights``). It is 108 k parameters and about 1 MFLOP per
detection, so NumPy costs well under a millisecond per instance, and every backend
(ONNX Runtime, TensorRT, PyTorch) re-scores identically. ``mask_iou`` here is the
PyTorch reference the NumPy version is tested against.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from seg_perception.models.backbones import resnet_backbone
from seg_perception.models.priors import BASE_ASPECT_RATIOS, BASE_INPUT_SIZE
from seg_perception.models.yolact import Yolact, _as_hw

# Official YOLACT++ anchor sizes at 550 px: three octave-thirds per level.
YOLACT_PLUS_BASE_SCALES: tuple[float, ...] = (24.0, 48.0, 96.0, 192.0, 384.0)
YOLACT_PLUS_SCALES_PER_LEVEL = 3
# (dcn_layers, dcn_interval) of the official backbones.
YOLACT_PLUS_DCN: dict[int, tuple[tuple[int, int, int, int], int]] = {
    101: ((0, 4, 23, 3), 3),  # resnet101_dcn_inter3_backbone
    50: ((0, 4, 6, 3), 1),  # resnet50_dcnv2_backbone
}
MASKIOU_CHANNELS: tuple[int, ...] = (8, 16, 32, 64, 128)
# Smallest prototype map the MaskIoU net accepts: five valid 3x3 stride-2 convs need
# 63 px to leave a 1x1 map (63 -> 31 -> 15 -> 7 -> 3 -> 1).
MIN_PROTO_SIDE = 63


def yolact_plus_prior_scales(input_size: int) -> list[list[float]]:
    """Per level, the three anchor sizes (pixels) of YOLACT++ for an input of ``input_size`` px.

    At 550 px these are the official ``[i * 2 ** (j / 3) for j in range(3)]``; other sizes
    scale them linearly (the official code has no other YOLACT++ input size).
    """
    ratio = input_size / BASE_INPUT_SIZE
    return [[s * 2 ** (j / 3.0) * ratio for j in range(YOLACT_PLUS_SCALES_PER_LEVEL)] for s in YOLACT_PLUS_BASE_SCALES]


class MaskIoUNet(nn.Module):
    """The official ``FastMaskIoUNet``: ``(D, 1, H, W)`` mask probabilities -> ``(D, C)`` IoUs.

    Parameter names ``maskiou_net.<i>`` with convs at even ``i`` (ReLU after each,
    including the last, as ``make_net(..., include_last_relu=True)`` builds it).
    """

    def __init__(self, num_classes: int, channels: Sequence[int] = MASKIOU_CHANNELS) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 1
        for ch in channels:
            layers += [nn.Conv2d(in_ch, ch, kernel_size=3, stride=2), nn.ReLU(inplace=True)]
            in_ch = ch
        layers += [nn.Conv2d(in_ch, num_classes, kernel_size=1), nn.ReLU(inplace=True)]
        self.maskiou_net = nn.Sequential(*layers)

    def forward(self, masks: Tensor) -> Tensor:
        return self.maskiou_net(masks).amax(dim=(2, 3))


def crop_with_padding(masks: Tensor, boxes: Tensor, padding: int = 1) -> Tensor:
    """The official ``crop``: zero ``(D, H, W)`` masks outside their boxes, widened by ``padding`` px.

    ``boxes`` are ``(D, 4)`` normalised x1, y1, x2, y2 (corners in either order). A
    pixel (column c, row r) is kept when ``x1 * W - padding <= c < x2 * W + padding``
    (bounds clamped to the map) and likewise for rows.
    """
    d, h, w = masks.shape
    x1 = torch.minimum(boxes[:, 0], boxes[:, 2]) * w
    x2 = torch.maximum(boxes[:, 0], boxes[:, 2]) * w
    y1 = torch.minimum(boxes[:, 1], boxes[:, 3]) * h
    y2 = torch.maximum(boxes[:, 1], boxes[:, 3]) * h
    x1, x2 = (x1 - padding).clamp(min=0), (x2 + padding).clamp(max=w)
    y1, y2 = (y1 - padding).clamp(min=0), (y2 + padding).clamp(max=h)
    cols = torch.arange(w, dtype=masks.dtype, device=masks.device)
    rows = torch.arange(h, dtype=masks.dtype, device=masks.device)
    keep_x = (cols[None, :] >= x1[:, None]) & (cols[None, :] < x2[:, None])
    keep_y = (rows[None, :] >= y1[:, None]) & (rows[None, :] < y2[:, None])
    return masks * (keep_y[:, :, None] & keep_x[:, None, :]).to(masks.dtype)


class YolactPlus(Yolact):
    """YOLACT++: a ``Yolact`` plus the ``maskiou_net`` re-scoring head (see the module docstring).

    ``forward`` is YOLACT's (the raw-output contract); ``mask_iou`` scores assembled masks.
    """

    def __init__(self, *args, maskiou_channels: Sequence[int] = MASKIOU_CHANNELS, mask_rescoring: bool = True,
                 **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        # Without re-scoring the MaskIoU net still exists (checkpoints hold it) but is not
        # exported, so inputs below 256 px are allowed (e.g. 192 px on a small Jetson).
        self.mask_rescoring = bool(mask_rescoring)
        proto_side = min(2 * -(-s // 8) for s in self.input_size)  # P3 upsampled x2
        if self.mask_rescoring and proto_side < MIN_PROTO_SIDE:
            raise ValueError(
                f"YOLACT++ needs an input of at least 256 px per side: its MaskIoU net (five unpadded "
                f"stride-2 3x3 convs) needs prototypes of {MIN_PROTO_SIDE} px or more, "
                f"{self.input_size[1]}x{self.input_size[0]} gives {proto_side} "
                f"(mask_rescoring=False builds it without re-scoring)"
            )
        self.maskiou_net = MaskIoUNet(self.num_classes, maskiou_channels)
        for m in self.maskiou_net.modules():  # same init as the rest of the head
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def proto_masks(self, coeffs: Tensor, protos: Tensor, boxes: Tensor) -> Tensor:
        """``(D, Hp, Wp)`` cropped mask probabilities from ``(D, P)`` coefficients,
        ``(Hp, Wp, P)`` prototypes and ``(D, 4)`` normalised boxes (the MaskIoU input)."""
        masks = torch.sigmoid(torch.einsum("hwp,dp->dhw", protos, coeffs))
        return crop_with_padding(masks, boxes)

    def mask_iou(self, coeffs: Tensor, protos: Tensor, boxes: Tensor, classes: Tensor) -> Tensor:
        """``(D,)`` predicted mask IoU of each detection for its class (multiply into the score)."""
        iou = self.maskiou_net(self.proto_masks(coeffs, protos, boxes)[:, None])
        return iou.gather(1, classes.long()[:, None])[:, 0]

    def maskiou_arrays(self) -> dict[str, np.ndarray]:
        """The MaskIoU net as plain arrays for ``core.mask_rescoring`` (see ``save_maskiou_weights``)."""
        arrays: dict[str, np.ndarray] = {}
        convs = [m for m in self.maskiou_net.maskiou_net if isinstance(m, nn.Conv2d)]
        for i, conv in enumerate(convs):
            arrays[f"conv{i}.weight"] = conv.weight.detach().cpu().float().numpy()
            arrays[f"conv{i}.bias"] = conv.bias.detach().cpu().float().numpy()  # type: ignore[union-attr]
            arrays[f"conv{i}.stride"] = np.array(conv.stride[0], dtype=np.int64)
        return arrays


def save_maskiou_weights(model: YolactPlus, path: str | Path) -> Path:
    """Write the MaskIoU net for ``core.mask_rescoring.MaskIoURescorer`` (``np.savez``, no pickles)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        np.savez(f, **model.maskiou_arrays())
    return path


def maskiou_path_for(model_path: str | Path) -> Path:
    """``model.onnx`` -> ``model.maskiou.npz`` (the re-scoring weights beside a model)."""
    p = Path(model_path)
    return p.with_name(p.stem + ".maskiou.npz")


# --------------------------------------------------------------------------- builders


def _yolact_plus(
    architecture: str,
    depth: int,
    num_classes: int,
    input_size: int | Sequence[int],
    *,
    fpn_channels: int = 256,
    num_prototypes: int = 32,
    num_keypoints: int = 0,
    semantic_seg_head: bool = False,
    mask_rescoring: bool = True,
) -> YolactPlus:
    hw = _as_hw(input_size)
    dcn_layers, dcn_interval = YOLACT_PLUS_DCN[depth]
    model = YolactPlus(
        resnet_backbone(depth, dcn_layers=dcn_layers, dcn_interval=dcn_interval), num_classes,
        prior_scales=yolact_plus_prior_scales(max(hw)), aspect_ratios=BASE_ASPECT_RATIOS,
        use_square_anchors=False, fpn_channels=fpn_channels, num_prototypes=num_prototypes,
        num_keypoints=num_keypoints, input_size=hw, semantic_seg_head=semantic_seg_head,
        mask_rescoring=mask_rescoring,
    )
    model.architecture = architecture
    model.build_kwargs = {
        "num_classes": num_classes, "input_size": list(hw), "fpn_channels": fpn_channels,
        "num_prototypes": num_prototypes, "num_keypoints": num_keypoints,
        "semantic_seg_head": semantic_seg_head, "mask_rescoring": mask_rescoring,
    }
    return model


def yolact_plus_resnet50(
    num_classes: int = 80, *, input_size: int | Sequence[int] = 550, fpn_channels: int = 256,
    num_prototypes: int = 32, num_keypoints: int = 0, semantic_seg_head: bool = False,
    mask_rescoring: bool = True,
) -> YolactPlus:
    """Official ``yolact_plus_resnet50`` (550 px); loads ``yolact_plus_resnet50_54_800000.pth``."""
    return _yolact_plus("yolact_plus_resnet50", 50, num_classes, input_size, fpn_channels=fpn_channels,
                        num_prototypes=num_prototypes, num_keypoints=num_keypoints,
                        semantic_seg_head=semantic_seg_head, mask_rescoring=mask_rescoring)


def yolact_plus_resnet101(
    num_classes: int = 80, *, input_size: int | Sequence[int] = 550, fpn_channels: int = 256,
    num_prototypes: int = 32, num_keypoints: int = 0, semantic_seg_head: bool = False,
    mask_rescoring: bool = True,
) -> YolactPlus:
    """Official ``yolact_plus_base`` (ResNet-101, 550 px); loads ``yolact_plus_base_54_800000.pth``."""
    return _yolact_plus("yolact_plus_resnet101", 101, num_classes, input_size, fpn_channels=fpn_channels,
                        num_prototypes=num_prototypes, num_keypoints=num_keypoints,
                        semantic_seg_head=semantic_seg_head, mask_rescoring=mask_rescoring)


__all__ = [
    "YOLACT_PLUS_BASE_SCALES",
    "YOLACT_PLUS_DCN",
    "MASKIOU_CHANNELS",
    "MaskIoUNet",
    "YolactPlus",
    "crop_with_padding",
    "maskiou_path_for",
    "save_maskiou_weights",
    "yolact_plus_prior_scales",
    "yolact_plus_resnet50",
    "yolact_plus_resnet101",
]
