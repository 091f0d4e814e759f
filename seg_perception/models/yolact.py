"""YOLACT: real-time instance segmentation by prototypes and per-anchor coefficients.

Bolya et al., "YOLACT: Real-time Instance Segmentation", ICCV 2019. The module
names follow dbolya/yolact so its published checkpoints (``yolact_base_54_800000.pth``,
``yolact_resnet50_54_800000.pth``, ``yolact_im700_54_800000.pth``) load strictly
through ``models.checkpoint``:

- ``backbone.*``           ResNet trunk (``models.backbones``), C3..C5 feed the FPN.
- ``fpn.lat_layers.i``     1x1 lateral convs, stored top-down (``i = 0`` is C5).
- ``fpn.pred_layers.i``    3x3 smoothing convs + ReLU, also top-down (``i = 0`` is P5).
- ``fpn.downsample_layers.i``  3x3 stride-2 convs making P6 and P7 (no ReLU).
- ``proto_net.{0,2,4,8,10}``   ProtoNet on P3: 3x (3x3 conv + ReLU), bilinear x2
  upsample (+ ReLU), 3x3 conv + ReLU, 1x1 conv to P prototypes, then ReLU.
- ``prediction_layers.0.*``    one head shared by all five levels: ``upfeature.0``
  (3x3 conv + ReLU), then 3x3 ``bbox_layer`` / ``conf_layer`` / ``mask_layer``.
- ``semantic_seg_conv``        training-only auxiliary head (optional here).

Keypoint branch (ours, not in the official model): ``prediction_layers.0.keypoint_layer``,
a 3x3 conv beside ``bbox_layer`` that predicts, for every prior, K x (dx, dy, v):
the offsets of each keypoint from the prior centre in units of 0.1 x the prior's
width/height (the same encoding as the box centre, see ``box_coder``) and a
visibility logit. The graph decodes them to normalised ``x, y`` and a sigmoid
visibility, so a detection kept by NMS carries the keypoints of its own prior.

``Yolact.forward`` returns the raw-output contract of ``core.metadata.YOLACT_OUTPUTS``
(boxes decoded with variances 0.1/0.2, softmax scores without the background column,
tanh coefficients, ReLU prototypes in NHWC, decoded keypoints). Fast NMS and mask
assembly are not in the graph: their output sizes depend on the data, so they run in
``core.postprocess`` on NumPy. ``Yolact.forward_raw`` returns the undecoded head
outputs and the priors, which is what the losses need.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seg_perception.models.backbones import RESNET_DEPTHS, ResNetBackbone, resnet_backbone
from seg_perception.models.box_coder import decode_boxes, decode_keypoints
from seg_perception.models.priors import (
    BASE_ASPECT_RATIOS,
    BASE_INPUT_SIZE,
    anchors_per_location,
    make_priors,
    scaled_prior_scales,
)


class FPN(nn.Module):
    """Feature pyramid: ``[C3, C4, C5]`` -> ``[P3, P4, P5, P6, P7]``, all ``out_channels`` wide.

    Top-down path with bilinear upsampling (align_corners=False), 3x3 smoothing convs
    followed by ReLU on P3..P5, and ``num_downsample`` stride-2 3x3 convs on top of P5
    (P6, P7; no ReLU), as in the official ``yolact_base`` config.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int = 256, num_downsample: int = 2) -> None:
        super().__init__()
        # Stored deepest-first, as the official checkpoints expect.
        self.lat_layers = nn.ModuleList([nn.Conv2d(c, out_channels, kernel_size=1) for c in reversed(in_channels)])
        self.pred_layers = nn.ModuleList(
            [nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1) for _ in in_channels]
        )
        self.downsample_layers = nn.ModuleList(
            [nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, stride=2) for _ in range(num_downsample)]
        )

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        n = len(features)
        merged: list[Tensor] = [features[0]] * n
        x: Tensor | None = None
        for i, lateral_conv in enumerate(self.lat_layers):
            j = n - 1 - i  # deepest level first
            lateral = lateral_conv(features[j])
            if x is not None:
                lateral = lateral + F.interpolate(x, size=lateral.shape[-2:], mode="bilinear", align_corners=False)
            x = lateral
            merged[j] = x
        outs = [F.relu(self.pred_layers[n - 1 - j](merged[j])) for j in range(n)]
        for down in self.downsample_layers:
            outs.append(down(outs[-1]))
        return outs


class ProtoNet(nn.Sequential):
    """P3 ``(B, C, h, w)`` -> ``(B, P, 2h, 2w)`` non-negative prototypes.

    The layer indices (convs at 0, 2, 4, 8, 10) are those of the official model, whose
    config builds this net as a flat list of conv/ReLU pairs; keep the layout.
    """

    def __init__(self, in_channels: int, hidden_channels: int = 256, num_prototypes: int = 32) -> None:
        super().__init__(
            nn.Conv2d(in_channels, hidden_channels, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_channels, hidden_channels, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_channels, hidden_channels, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_channels, hidden_channels, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_channels, num_prototypes, kernel_size=1),
        )
        self.num_prototypes = num_prototypes

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        return F.relu(super().forward(x))


class PredictionHead(nn.Module):
    """Per-level predictions for ``A`` priors per cell, shared across pyramid levels.

    ``forward`` takes one level ``(B, C, h, w)`` and returns (``M = h * w * A``, cells
    row-major, priors of a cell contiguous, matching ``priors.make_priors``):

    - ``loc``          ``(B, M, 4)`` box regression deltas (see ``box_coder``),
    - ``conf``         ``(B, M, num_classes + 1)`` logits, background first,
    - ``mask_coeffs``  ``(B, M, P)`` prototype coefficients after tanh,
    - ``keypoints``    ``(B, M, K, 3)`` raw dx, dy, visibility logit (only if K > 0).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        num_prototypes: int,
        num_anchors: int,
        num_keypoints: int = 0,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes  # without background
        self.num_prototypes = num_prototypes
        self.num_anchors = num_anchors
        self.num_keypoints = num_keypoints
        self.upfeature = nn.Sequential(nn.Conv2d(in_channels, in_channels, kernel_size=3, padding=1), nn.ReLU(inplace=True))
        self.bbox_layer = nn.Conv2d(in_channels, num_anchors * 4, kernel_size=3, padding=1)
        self.conf_layer = nn.Conv2d(in_channels, num_anchors * (num_classes + 1), kernel_size=3, padding=1)
        self.mask_layer = nn.Conv2d(in_channels, num_anchors * num_prototypes, kernel_size=3, padding=1)
        self.keypoint_layer = (
            nn.Conv2d(in_channels, num_anchors * num_keypoints * 3, kernel_size=3, padding=1) if num_keypoints else None
        )

    @staticmethod
    def _per_prior(x: Tensor, *trailing: int) -> Tensor:
        # (B, A*D, h, w) -> (B, h*w*A, *trailing): channel a*D + d belongs to prior a.
        return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, *trailing)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        x = self.upfeature(x)
        out = {
            "loc": self._per_prior(self.bbox_layer(x), 4),
            "conf": self._per_prior(self.conf_layer(x), self.num_classes + 1),
            "mask_coeffs": torch.tanh(self._per_prior(self.mask_layer(x), self.num_prototypes)),
        }
        if self.keypoint_layer is not None:
            out["keypoints"] = self._per_prior(self.keypoint_layer(x), self.num_keypoints, 3)
        return out


class Yolact(nn.Module):
    """YOLACT with a ResNet backbone, an FPN, a ProtoNet and one shared prediction head.

    Args:
        backbone:        trunk returning ``[C2, C3, C4, C5]`` with ``channels`` attribute.
        num_classes:     object classes, *without* background (the head adds it).
        prior_scales:    per pyramid level, anchor sizes in pixels of the network input.
        aspect_ratios:   anchor aspect ratios (see ``priors``).
        use_square_anchors: the official backward-compatible square-anchor behaviour.
        fpn_channels:    width of the FPN, the head and the ProtoNet's hidden layers.
        num_prototypes:  P, the number of prototype masks.
        num_keypoints:   K; 0 disables the keypoint branch.
        input_size:      ``(height, width)`` the model is trained and exported at.
        semantic_seg_head: build the training-only ``semantic_seg_conv`` auxiliary head.

    ``forward(x)`` takes ``(B, 3, H, W)`` normalised float images and returns the dict
    of ``output_names``: ``boxes (B, N, 4)``, ``scores (B, N, C)``,
    ``mask_coeffs (B, N, P)``, ``protos (B, H/4, W/4, P)`` and, with keypoints,
    ``keypoints (B, N, K, 3)`` -- all normalised to the input as documented in
    ``core.metadata.YOLACT_OUTPUTS``.
    """

    def __init__(
        self,
        backbone: ResNetBackbone,
        num_classes: int,
        *,
        prior_scales: Sequence[Sequence[float]],
        aspect_ratios: Sequence[float] = BASE_ASPECT_RATIOS,
        use_square_anchors: bool = True,
        fpn_channels: int = 256,
        num_prototypes: int = 32,
        num_keypoints: int = 0,
        input_size: tuple[int, int] = (BASE_INPUT_SIZE, BASE_INPUT_SIZE),
        semantic_seg_head: bool = False,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        if num_keypoints < 0:
            raise ValueError(f"num_keypoints must be >= 0, got {num_keypoints}")
        scales_per_level = {len(s) for s in prior_scales}
        if len(scales_per_level) != 1:
            raise ValueError("every pyramid level needs the same number of prior scales (one head is shared)")
        self.num_classes = num_classes
        self.num_prototypes = num_prototypes
        self.num_keypoints = num_keypoints
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.prior_scales = tuple(tuple(float(s) for s in level) for level in prior_scales)
        self.aspect_ratios = tuple(float(a) for a in aspect_ratios)
        self.use_square_anchors = use_square_anchors
        # Filled in by the builders so checkpoints can say how to rebuild the model.
        self.architecture: str = "yolact"
        self.build_kwargs: dict[str, Any] = {}

        self.backbone = backbone
        selected = backbone.channels[1:]  # C3, C4, C5
        self.fpn = FPN(selected, fpn_channels, num_downsample=len(self.prior_scales) - len(selected))
        self.proto_net = ProtoNet(fpn_channels, fpn_channels, num_prototypes)
        head = PredictionHead(
            fpn_channels, num_classes, num_prototypes,
            anchors_per_location(scales_per_level.pop(), self.aspect_ratios), num_keypoints,
        )
        # A list of one, so the parameters are named ``prediction_layers.0.*`` as in
        # the official checkpoints (whose other levels reuse the first module).
        self.prediction_layers = nn.ModuleList([head])
        self.semantic_seg_conv = nn.Conv2d(fpn_channels, num_classes, kernel_size=1) if semantic_seg_head else None
        self._priors_cache: dict[tuple[Any, ...], Tensor] = {}
        self._init_non_backbone_weights()

    @property
    def output_names(self) -> list[str]:
        """Names (and ONNX output order) of ``forward``'s results."""
        names = ["boxes", "scores", "mask_coeffs", "protos"]
        return names + ["keypoints"] if self.num_keypoints else names

    def _init_non_backbone_weights(self) -> None:
        # Xavier-uniform weights and zero biases for everything after the trunk, as the
        # official training does; the trunk is initialised from ImageNet by the trainer.
        for name, module in self.named_modules():
            if isinstance(module, nn.Conv2d) and not name.startswith("backbone."):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def priors(self, feature_sizes: Sequence[tuple[int, int]], image_size: tuple[int, int], device: torch.device) -> Tensor:
        """``(N, 4)`` priors for these feature-map sizes, cached (they depend on shapes only)."""
        key = (tuple(feature_sizes), tuple(image_size), str(device))
        cached = self._priors_cache.get(key)
        if cached is None:
            # Normal tensors even under inference_mode, so the cache also serves training.
            with torch.inference_mode(False), torch.no_grad():
                cached = make_priors(
                    feature_sizes, image_size, self.prior_scales, self.aspect_ratios,
                    self.use_square_anchors, device=device,
                )
            self._priors_cache[key] = cached
        return cached

    def forward_raw(self, x: Tensor) -> dict[str, Tensor]:
        """Undecoded outputs for the losses.

        Returns ``loc (B, N, 4)``, ``conf (B, N, C + 1)`` logits (background first),
        ``mask_coeffs (B, N, P)``, ``protos (B, Hp, Wp, P)``, ``priors (N, 4)``, and
        ``keypoints (B, N, K, 3)`` raw offsets/logits if K > 0, ``semantic (B, C, h, w)``
        logits at P3 if the semantic head exists.
        """
        image_size = (int(x.shape[-2]), int(x.shape[-1]))
        features = self.fpn(self.backbone(x)[1:])
        protos = self.proto_net(features[0]).permute(0, 2, 3, 1)
        head = self.prediction_layers[0]
        per_level = [head(f) for f in features]
        out = {key: torch.cat([level[key] for level in per_level], dim=1) for key in per_level[0]}
        sizes = [(int(f.shape[-2]), int(f.shape[-1])) for f in features]
        out["priors"] = self.priors(sizes, image_size, x.device).to(out["loc"].dtype)
        out["protos"] = protos
        if self.semantic_seg_conv is not None:
            out["semantic"] = self.semantic_seg_conv(features[0])
        return out

    def decode(self, raw: dict[str, Tensor]) -> dict[str, Tensor]:
        """Raw head outputs -> the contract outputs (see the class docstring)."""
        priors = raw["priors"]
        out = {
            "boxes": decode_boxes(raw["loc"], priors),
            "scores": torch.softmax(raw["conf"], dim=-1)[..., 1:],
            "mask_coeffs": raw["mask_coeffs"],
            "protos": raw["protos"],
        }
        if self.num_keypoints:
            out["keypoints"] = decode_keypoints(raw["keypoints"], priors)
        return out

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return self.decode(self.forward_raw(x))


# --------------------------------------------------------------------------- builders


def _as_hw(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    h, w = size
    return (int(h), int(w))


def _yolact(
    architecture: str,
    depth: int,
    num_classes: int,
    input_size: int | Sequence[int],
    *,
    fpn_channels: int = 256,
    num_prototypes: int = 32,
    num_keypoints: int = 0,
    semantic_seg_head: bool = False,
) -> Yolact:
    hw = _as_hw(input_size)
    # Anchor sizes follow the input size as in the official im400/im700 configs.
    scales = [[s] for s in scaled_prior_scales(max(hw))]
    model = Yolact(
        resnet_backbone(depth), num_classes,
        prior_scales=scales, fpn_channels=fpn_channels, num_prototypes=num_prototypes,
        num_keypoints=num_keypoints, input_size=hw, semantic_seg_head=semantic_seg_head,
    )
    model.architecture = architecture
    model.build_kwargs = {
        "num_classes": num_classes, "input_size": list(hw), "fpn_channels": fpn_channels,
        "num_prototypes": num_prototypes, "num_keypoints": num_keypoints,
        "semantic_seg_head": semantic_seg_head,
    }
    return model


def yolact_resnet18(
    num_classes: int = 80, *, input_size: int | Sequence[int] = 384, fpn_channels: int = 128,
    num_prototypes: int = 32, num_keypoints: int = 0, semantic_seg_head: bool = False,
) -> Yolact:
    """Small YOLACT for CPUs and Jetsons: ResNet-18, 384 px, a 128-channel FPN, 32 prototypes."""
    return _yolact("yolact_resnet18", 18, num_classes, input_size, fpn_channels=fpn_channels,
                   num_prototypes=num_prototypes, num_keypoints=num_keypoints, semantic_seg_head=semantic_seg_head)


def yolact_resnet50(
    num_classes: int = 80, *, input_size: int | Sequence[int] = 550, fpn_channels: int = 256,
    num_prototypes: int = 32, num_keypoints: int = 0, semantic_seg_head: bool = False,
) -> Yolact:
    """Official ``yolact_resnet50`` (550 px, 256-channel FPN); loads ``yolact_resnet50_54_800000.pth``."""
    return _yolact("yolact_resnet50", 50, num_classes, input_size, fpn_channels=fpn_channels,
                   num_prototypes=num_prototypes, num_keypoints=num_keypoints, semantic_seg_head=semantic_seg_head)


def yolact_resnet101(
    num_classes: int = 80, *, input_size: int | Sequence[int] = 550, fpn_channels: int = 256,
    num_prototypes: int = 32, num_keypoints: int = 0, semantic_seg_head: bool = False,
) -> Yolact:
    """Official ``yolact_base`` (ResNet-101, 550 px); loads ``yolact_base_54_800000.pth``."""
    return _yolact("yolact_resnet101", 101, num_classes, input_size, fpn_channels=fpn_channels,
                   num_prototypes=num_prototypes, num_keypoints=num_keypoints, semantic_seg_head=semantic_seg_head)


def yolact_im700(
    num_classes: int = 80, *, input_size: int | Sequence[int] = 700, fpn_channels: int = 256,
    num_prototypes: int = 32, num_keypoints: int = 0, semantic_seg_head: bool = False,
) -> Yolact:
    """Official ``yolact_im700`` (ResNet-101 at 700 px, anchors 30..488 px)."""
    return _yolact("yolact_im700", 101, num_classes, input_size, fpn_channels=fpn_channels,
                   num_prototypes=num_prototypes, num_keypoints=num_keypoints, semantic_seg_head=semantic_seg_head)


# The slim variant's defaults: what the shipped model (models/seg_perception_default.onnx)
# was trained with. Chosen for training from scratch on a CPU in about an hour: half the
# ResNet-18 widths (a quarter of its FLOPs), a 320x240 input (the 4:3 of the cameras),
# a 96-channel FPN and real (non-square) anchors so elongated tools and bottles match.
SLIM_WIDTHS: tuple[int, int, int, int] = (32, 64, 128, 256)
SLIM_INPUT_SIZE: tuple[int, int] = (240, 320)


def yolact_slim(
    num_classes: int = 80, *, input_size: int | Sequence[int] = SLIM_INPUT_SIZE, fpn_channels: int = 96,
    num_prototypes: int = 32, num_keypoints: int = 0, semantic_seg_head: bool = False,
    widths: Sequence[int] = SLIM_WIDTHS,
) -> Yolact:
    """Slim YOLACT for CPU-only training from scratch: ResNet-18 layout at ``widths``.

    Unlike the official builders the anchors have true aspect ratios
    (``use_square_anchors=False``), since no official checkpoint has to load. The
    anchor sizes follow the input size (``scaled_prior_scales``). About 3 M parameters
    (12 MB as float32 ONNX).
    """
    hw = _as_hw(input_size)
    block, blocks = RESNET_DEPTHS[18]
    backbone = ResNetBackbone(block, blocks, widths=tuple(int(w) for w in widths))
    scales = [[s] for s in scaled_prior_scales(max(hw))]
    model = Yolact(
        backbone, num_classes,
        prior_scales=scales, use_square_anchors=False, fpn_channels=fpn_channels,
        num_prototypes=num_prototypes, num_keypoints=num_keypoints, input_size=hw,
        semantic_seg_head=semantic_seg_head,
    )
    model.architecture = "yolact_slim"
    model.build_kwargs = {
        "num_classes": num_classes, "input_size": list(hw), "fpn_channels": fpn_channels,
        "num_prototypes": num_prototypes, "num_keypoints": num_keypoints,
        "semantic_seg_head": semantic_seg_head, "widths": [int(w) for w in widths],
    }
    return model


__all__ = [
    "FPN",
    "ProtoNet",
    "PredictionHead",
    "Yolact",
    "yolact_resnet18",
    "yolact_resnet50",
    "yolact_resnet101",
    "yolact_im700",
    "yolact_slim",
]
