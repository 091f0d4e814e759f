"""Feature pyramid in detectron2's layout (``backbone.fpn_lateral<l>``, ``backbone.fpn_output<l>``).

Lin et al., "Feature Pyramid Networks for Object Detection", CVPR 2017, as detectron2's
``modeling/backbone/fpn.py`` builds it for FCOS/CenterMask (centermask2
``build_fcos_vovnet_fpn_backbone`` / ``build_fcos_resnet_fpn_backbone``):

- ``bottom_up``: the trunk (VoVNet or ResNet), whose selected stages feed the pyramid;
- ``fpn_lateral<l>`` 1x1 and ``fpn_output<l>`` 3x3 convs (with bias, no norm, no
  activation), named by ``l = log2(stride)``: stage3 / res3 (stride 8) -> ``fpn_lateral3``;
- top-down merge by nearest-neighbour x2 upsampling and sum (``FUSE_TYPE = "sum"``);
- ``top_block.p6`` (3x3/2 on P5) and ``top_block.p7`` (3x3/2 on ReLU(P6)): centermask2's
  ``LastLevelP6P7(out, out, "p5")`` (``FCOS.TOP_LEVELS = 2``), giving P3..P7.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn


class LastLevelP6P7(nn.Module):
    """P6 = conv3x3/2(P5), P7 = conv3x3/2(ReLU(P6))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.p6 = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        self.p7 = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, p5: Tensor) -> list[Tensor]:
        p6 = self.p6(p5)
        return [p6, self.p7(F.relu(p6))]


class FPN(nn.Module):
    """``(B, 3, H, W)`` -> ``[P3, P4, P5, P6, P7]``, each ``out_channels`` wide (strides 8..128).

    ``bottom_up`` must return a dict of stage outputs and expose ``out_channels`` and
    ``strides`` dicts; ``in_features`` names the stages, finest first.
    """

    def __init__(self, bottom_up: nn.Module, in_features: Sequence[str], out_channels: int = 256) -> None:
        super().__init__()
        self.bottom_up = bottom_up
        self.in_features = tuple(in_features)
        self.lateral_names: list[str] = []
        self.output_names: list[str] = []
        for feature in self.in_features:
            stride = int(bottom_up.strides[feature])  # type: ignore[attr-defined]
            level = int(math.log2(stride))
            lateral = nn.Conv2d(bottom_up.out_channels[feature], out_channels, 1)  # type: ignore[attr-defined]
            output = nn.Conv2d(out_channels, out_channels, 3, padding=1)
            for conv in (lateral, output):  # detectron2's c2_xavier_fill
                nn.init.kaiming_uniform_(conv.weight, a=1)
                nn.init.zeros_(conv.bias)
            self.add_module(f"fpn_lateral{level}", lateral)
            self.add_module(f"fpn_output{level}", output)
            self.lateral_names.append(f"fpn_lateral{level}")
            self.output_names.append(f"fpn_output{level}")
        self.top_block = LastLevelP6P7(out_channels)
        for conv in (self.top_block.p6, self.top_block.p7):
            nn.init.kaiming_uniform_(conv.weight, a=1)
            nn.init.zeros_(conv.bias)
        self.out_channels = out_channels
        first_stride = bottom_up.strides[self.in_features[0]]  # type: ignore[attr-defined]
        self.strides = [first_stride * 2 ** i for i in range(len(self.in_features) + 2)]
        self.size_divisibility = bottom_up.strides[self.in_features[-1]]  # type: ignore[attr-defined]

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = self.bottom_up(x)
        n = len(self.in_features)
        prev = getattr(self, self.lateral_names[-1])(feats[self.in_features[-1]])
        results = [getattr(self, self.output_names[-1])(prev)]
        for i in range(n - 2, -1, -1):
            lateral = getattr(self, self.lateral_names[i])(feats[self.in_features[i]])
            prev = lateral + F.interpolate(prev, scale_factor=2.0, mode="nearest")
            results.insert(0, getattr(self, self.output_names[i])(prev))
        results.extend(self.top_block(results[-1]))
        return results


__all__ = ["FPN", "LastLevelP6P7"]
