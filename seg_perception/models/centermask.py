"""CenterMask and CenterMask-Lite: FCOS boxes, then SAG-Mask (and MaskIoU, keypoints) per box.

Lee and Park, "CenterMask: Real-Time Anchor-Free Instance Segmentation", CVPR 2020.
Module names follow youngwanLEE/centermask2 (detectron2's ``GeneralizedRCNN``), so its
``.pth`` files load strictly through ``models.checkpoint``:

- ``backbone.bottom_up.*``  VoVNetV2 (``models.vovnet``) or ResNet (``models.d2_resnet``);
- ``backbone.fpn_lateral{3,4,5}``, ``backbone.fpn_output{3,4,5}``, ``backbone.top_block.p{6,7}``
  (``models.fpn``): P3..P7;
- ``proposal_generator.fcos_head.*`` (``models.fcos``);
- ``roi_heads.mask_head.*``, ``roi_heads.maskiou_head.*``, ``roi_heads.keypoint_head.*``
  (``models.roi_heads``).

Configurations (centermask2 ``configs/centermask``): CenterMask (``Base-CenterMask-*``):
256-channel FPN, FCOS 4 + 4 convs, mask head 4 convs of 256, MaskIoU 4 convs of 256,
50 detections. CenterMask-Lite (``Base-CenterMask-Lite-VoVNet``): 128-channel FPN, FCOS
2 + 2 convs, mask head 2 convs of 128, MaskIoU 2 convs of 128, 50 detections. Both use
detectron2's input convention: BGR, mean (103.530, 116.280, 123.675), std 1; the graph's
normaliser works in RGB (``models.transform``), so the model stores the same values in
RGB order (``input_mean``/``input_std``, picked up by ``export.metadata_for_model``) and
flips the normalised image to BGR as its first operation.

``forward`` returns the raw-output contract ``core.metadata.ROI_OUTPUTS`` (detection,
NMS and the heads are all in the graph, with static shapes: see ``models.fcos``).
Inputs must be multiples of 32 px per side (the FPN adds stride-32 and stride-16 maps);
detectron2 pads to that, our fixed input size simply has to respect it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from seg_perception.models.d2_resnet import D2ResNet
from seg_perception.models.fcos import FCOS
from seg_perception.models.fpn import FPN
from seg_perception.models.roi_heads import CenterROIHeads
from seg_perception.models.vovnet import VoVNet

# detectron2 defaults (MODEL.PIXEL_MEAN / PIXEL_STD, INPUT.FORMAT "BGR"), here in RGB order.
D2_MEAN_RGB = (123.675, 116.280, 103.530)
D2_STD_RGB = (1.0, 1.0, 1.0)
# Keys a detectron2 checkpoint may hold that are not weights (GeneralizedRCNN's
# normalisation buffers, saved by some detectron2 versions; the graph has its own).
CHECKPOINT_IGNORED_KEYS = ("pixel_mean", "pixel_std")


class CenterMask(nn.Module):
    """CenterMask(-Lite) with a given trunk (see the module docstring for the arguments' defaults).

    ``forward(x)`` takes a normalised ``(B, 3, H, W)`` RGB float image and returns
    ``boxes (B, D, 4)`` normalised x1, y1, x2, y2, ``scores (B, D)``, ``classes (B, D)``
    (float), ``masks (B, D, 28, 28)`` and, with keypoints, ``keypoint_heatmaps
    (B, D, K, 56, 56)``. Training uses ``forward_train`` and ``roi_forward_train`` instead
    (raw head outputs, heads on given boxes), so the exported contract never changes.
    """

    output_format = "roi"
    num_prototypes = 0  # ModelMetadata field of the YOLACT contract; none here
    checkpoint_ignored_keys = CHECKPOINT_IGNORED_KEYS

    def __init__(
        self,
        bottom_up: nn.Module,
        in_features: Sequence[str],
        num_classes: int,
        *,
        input_size: tuple[int, int],
        fpn_channels: int = 256,
        fcos_num_convs: int = 4,
        mask_num_conv: int = 4,
        mask_conv_dim: int = 256,
        maskiou: bool = True,
        maskiou_num_conv: int = 4,
        maskiou_conv_dim: int = 256,
        num_keypoints: int = 0,
        keypoint_conv_dims: Sequence[int] = (512,) * 8,
        detections_per_image: int = 50,
        pre_nms_topk: int = 1000,
        pre_nms_thresh: float = 0.05,
        nms_thresh: float = 0.6,
        input_bgr: bool = True,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        if num_keypoints < 0:
            raise ValueError(f"num_keypoints must be >= 0, got {num_keypoints}")
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.num_classes = num_classes
        self.num_keypoints = num_keypoints
        self.input_bgr = input_bgr
        self.input_mean = D2_MEAN_RGB
        self.input_std = D2_STD_RGB
        self.architecture: str = "centermask"
        self.build_kwargs: dict[str, Any] = {}

        self.backbone = FPN(bottom_up, in_features, fpn_channels)
        div = self.backbone.size_divisibility
        if any(s % div for s in self.input_size):
            raise ValueError(
                f"CenterMask input size must be a multiple of {div} px per side, got "
                f"{self.input_size[1]}x{self.input_size[0]} (width x height)"
            )
        self.proposal_generator = FCOS(
            fpn_channels, num_classes, self.backbone.strides, num_cls_convs=fcos_num_convs,
            num_box_convs=fcos_num_convs, pre_nms_thresh=pre_nms_thresh, pre_nms_topk=pre_nms_topk,
            nms_thresh=nms_thresh, post_nms_topk=detections_per_image,
        )
        sizes = [(-(-self.input_size[0] // s), -(-self.input_size[1] // s)) for s in self.backbone.strides]
        if self.proposal_generator.num_candidates(sizes) < detections_per_image:
            raise ValueError(f"{detections_per_image} detections per image exceed the candidates this input size gives")
        self.roi_heads = CenterROIHeads(
            fpn_channels, num_classes, self.backbone.strides[:3], mask_conv_dim=mask_conv_dim,
            mask_num_conv=mask_num_conv, maskiou=maskiou, maskiou_conv_dim=maskiou_conv_dim,
            maskiou_num_conv=maskiou_num_conv, num_keypoints=num_keypoints, keypoint_conv_dims=keypoint_conv_dims,
        )

    @property
    def output_names(self) -> list[str]:
        """Names (and ONNX output order) of ``forward``'s results (``ROI_OUTPUTS``)."""
        names = ["boxes", "scores", "classes", "masks"]
        return names + ["keypoint_heatmaps"] if self.num_keypoints else names

    @property
    def detections_per_image(self) -> int:
        return self.proposal_generator.post_nms_topk

    def features(self, x: Tensor) -> list[Tensor]:
        """P3..P7 for a normalised RGB batch."""
        if self.input_bgr:
            x = x[:, [2, 1, 0]]
        return self.backbone(x)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        feats = self.features(x)
        logits, regs, ctrs = self.proposal_generator(feats)
        boxes, scores, classes = self.proposal_generator.detect(logits, regs, ctrs)
        heads = self.roi_heads(feats[:3], boxes, classes, scores, (h, w))
        scale = torch.tensor([w, h, w, h], dtype=boxes.dtype, device=boxes.device)
        out = {
            "boxes": boxes / scale,
            "scores": heads["scores"],
            "classes": classes.to(boxes.dtype),
            "masks": heads["masks"],
        }
        if self.num_keypoints:
            out["keypoint_heatmaps"] = heads["keypoint_heatmaps"]
        return out

    def forward_train(self, x: Tensor) -> dict[str, Any]:
        """What the training losses need (``training.centermask_losses``); ``forward`` stays the export contract.

        Returns ``features`` (P3..P7), the FCOS head's raw per-level ``logits``, ``regs``
        (ltrb / stride, >= 0) and ``ctrs``, and the model's own detections of the batch
        as ``proposal_boxes (B, D, 4)`` input pixels, ``proposal_scores`` (0 for padding)
        and ``proposal_classes``, computed without gradient: centermask2 trains the RoI
        heads on FCOS proposals, whose coordinates are constants to the heads.
        """
        feats = self.features(x)
        logits, regs, ctrs = self.proposal_generator(feats)
        with torch.no_grad():
            boxes, scores, classes = self.proposal_generator.detect(logits, regs, ctrs)
        return {"features": feats, "logits": logits, "regs": regs, "ctrs": ctrs, "proposal_boxes": boxes,
                "proposal_scores": scores, "proposal_classes": classes,
                "image_size": (int(x.shape[-2]), int(x.shape[-1]))}

    def roi_forward_train(
        self, features: Sequence[Tensor], boxes: Sequence[Tensor], classes: Sequence[Tensor],
        image_size: tuple[int, int], keypoint_boxes: Sequence[Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """The RoI heads on given boxes, with logits (``forward`` gives probabilities of its own detections).

        ``features``: P3..P5 (or more; the first three are used); ``boxes[b]`` ``(R_b, 4)``
        input pixels and ``classes[b]`` ``(R_b,)`` int64 per image (the class whose mask and
        IoU are read out: the ground truth's, in training); ``keypoint_boxes[b]`` the boxes
        for the keypoint head. Returns ``mask_logits (R, M, M)``, ``mask_features``
        ``(R, C, 14, 14)``, with a MaskIoU head ``maskiou (R,)`` (predicted IoU of the class;
        the head sees the detached mask probabilities, as at inference it sees ``forward``'s),
        and with keypoints and ``keypoint_boxes`` ``keypoint_logits (Rk, K, 56, 56)``,
        images in order.
        """
        levels = list(features[:3])
        heads = self.roi_heads

        def pool(pooler: nn.Module, per_image: Sequence[Tensor]) -> Tensor:
            # Per image, so images may have different numbers of boxes.
            parts = [pooler([f[b:b + 1] for f in levels], bx[None], image_size)
                     for b, bx in enumerate(per_image) if len(bx)]
            if parts:
                return torch.cat(parts)
            r = int(pooler.output_size)
            return levels[0].new_zeros((0, levels[0].shape[1], r, r))

        mask_features = pool(heads.mask_pooler, boxes)
        cls = torch.cat([c.reshape(-1).to(torch.int64) for c in classes]) if len(classes) else \
            torch.zeros(0, dtype=torch.int64, device=levels[0].device)
        logits = heads.mask_head(mask_features)
        if logits.shape[1] > 1:
            logits = logits[torch.arange(len(cls), device=logits.device), cls]
        else:
            logits = logits[:, 0]
        out = {"mask_logits": logits, "mask_features": mask_features}
        if heads.maskiou_head is not None:
            iou = heads.maskiou_head(mask_features, torch.sigmoid(logits.detach())[:, None])
            out["maskiou"] = iou.gather(1, cls[:, None])[:, 0] if len(cls) else iou.new_zeros(0)
        if self.num_keypoints and keypoint_boxes is not None:
            out["keypoint_logits"] = heads.keypoint_head(pool(heads.keypoint_pooler, keypoint_boxes))
        return out


# --------------------------------------------------------------------------- builders


def _as_hw(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    h, w = size
    return (int(h), int(w))


_FULL = {"fpn_channels": 256, "fcos_num_convs": 4, "mask_num_conv": 4, "mask_conv_dim": 256,
         "maskiou_num_conv": 4, "maskiou_conv_dim": 256}
_LITE = {"fpn_channels": 128, "fcos_num_convs": 2, "mask_num_conv": 2, "mask_conv_dim": 128,
         "maskiou_num_conv": 2, "maskiou_conv_dim": 128}


def _centermask(
    architecture: str, trunk: str, num_classes: int, input_size: int | Sequence[int], defaults: dict[str, int],
    **overrides: Any,
) -> CenterMask:
    hw = _as_hw(input_size)
    settings: dict[str, Any] = {**defaults, "maskiou": True, "num_keypoints": 0, "keypoint_conv_dims": [512] * 8,
                                "detections_per_image": 50}
    unknown = set(overrides) - set(settings)
    if unknown:
        raise TypeError(f"{architecture}() got unexpected arguments {sorted(unknown)}")
    settings.update({k: v for k, v in overrides.items() if v is not None})
    if trunk.startswith("R-"):
        bottom_up: nn.Module = D2ResNet(int(trunk[2:]), ("res3", "res4", "res5"))
        in_features: tuple[str, ...] = ("res3", "res4", "res5")
    else:
        bottom_up = VoVNet(trunk, ("stage3", "stage4", "stage5"))
        in_features = ("stage3", "stage4", "stage5")
    model = CenterMask(bottom_up, in_features, num_classes, input_size=hw,
                       **{k: (tuple(v) if k == "keypoint_conv_dims" else v) for k, v in settings.items()})
    model.architecture = architecture
    model.build_kwargs = {"num_classes": num_classes, "input_size": list(hw),
                          **{k: (list(v) if k == "keypoint_conv_dims" else v) for k, v in settings.items()}}
    return model


def centermask_lite_vovnet19_slim(
    num_classes: int = 80, *, input_size: int | Sequence[int] = 512, depthwise: bool = False, **kwargs: Any,
) -> CenterMask:
    """CenterMask-Lite V-19-slim-eSE (``depthwise=True``: V-19-slim-dw-eSE), 512 px by default.

    ``kwargs`` override the Lite head sizes (``fpn_channels``, ``mask_conv_dim``, ...),
    ``maskiou``, ``num_keypoints``, ``keypoint_conv_dims`` and ``detections_per_image``.
    """
    name = "centermask_lite_vovnet19_slim_dw" if depthwise else "centermask_lite_vovnet19_slim"
    model = _centermask(name, "V-19-slim-dw-eSE" if depthwise else "V-19-slim-eSE", num_classes, input_size,
                        _LITE, **kwargs)
    return model


def centermask_lite_vovnet19_slim_dw(num_classes: int = 80, *, input_size: int | Sequence[int] = 512,
                                     **kwargs: Any) -> CenterMask:
    """CenterMask-Lite V-19-slim-dw-eSE (depthwise separable), the lightest centermask2 model."""
    return centermask_lite_vovnet19_slim(num_classes, input_size=input_size, depthwise=True, **kwargs)


def centermask_lite_vovnet19_slim_dw_320(num_classes: int = 80, *, input_size: int | Sequence[int] = 320,
                                         **kwargs: Any) -> CenterMask:
    """The small CPU/embedded variant: CenterMask-Lite V-19-slim-dw-eSE at 320 x 320, 50 detections.

    Same weights as ``centermask_lite_vovnet19_slim_dw`` (the input size is not a weight);
    about a quarter of the 640 px compute. Export it at 320x320, or e.g. ``input_size=(256, 320)``
    for 4:3 cameras (multiples of 32).
    """
    model = centermask_lite_vovnet19_slim(num_classes, input_size=input_size, depthwise=True, **kwargs)
    model.architecture = "centermask_lite_vovnet19_slim_dw_320"
    return model


def centermask_lite_vovnet19(num_classes: int = 80, *, input_size: int | Sequence[int] = 512,
                             **kwargs: Any) -> CenterMask:
    """CenterMask-Lite V-19-eSE (``centermask_lite_V_19_eSE_FPN_ms_4x``, centermask2's main Lite model)."""
    return _centermask("centermask_lite_vovnet19", "V-19-eSE", num_classes, input_size, _LITE, **kwargs)


def centermask_lite_vovnet39(num_classes: int = 80, *, input_size: int | Sequence[int] = 512,
                             **kwargs: Any) -> CenterMask:
    """CenterMask-Lite V-39-eSE (``centermask_lite_V_39_eSE_FPN_ms_4x``)."""
    return _centermask("centermask_lite_vovnet39", "V-39-eSE", num_classes, input_size, _LITE, **kwargs)


def centermask_vovnet39(num_classes: int = 80, *, input_size: int | Sequence[int] = 800, **kwargs: Any) -> CenterMask:
    """CenterMask V-39-eSE (``centermask_V_39_eSE_FPN_ms_3x``)."""
    return _centermask("centermask_vovnet39", "V-39-eSE", num_classes, input_size, _FULL, **kwargs)


def centermask_vovnet57(num_classes: int = 80, *, input_size: int | Sequence[int] = 800, **kwargs: Any) -> CenterMask:
    """CenterMask V-57-eSE (``centermask_V_57_eSE_FPN_ms_3x``)."""
    return _centermask("centermask_vovnet57", "V-57-eSE", num_classes, input_size, _FULL, **kwargs)


def centermask_resnet50(num_classes: int = 80, *, input_size: int | Sequence[int] = 800, **kwargs: Any) -> CenterMask:
    """CenterMask R-50-FPN (``centermask_R_50_FPN_ms_3x``; detectron2 ResNet, stride in the 1x1 conv)."""
    return _centermask("centermask_resnet50", "R-50", num_classes, input_size, _FULL, **kwargs)


__all__ = [
    "CenterMask",
    "D2_MEAN_RGB",
    "D2_STD_RGB",
    "centermask_lite_vovnet19",
    "centermask_lite_vovnet19_slim",
    "centermask_lite_vovnet19_slim_dw",
    "centermask_lite_vovnet19_slim_dw_320",
    "centermask_lite_vovnet39",
    "centermask_vovnet39",
    "centermask_vovnet57",
    "centermask_resnet50",
]
