"""ResNet in detectron2's layout, for CenterMask-R-50/101 checkpoints (``backbone.bottom_up.*``).

Module names as detectron2's ``build_resnet_backbone`` (``modeling/backbone/resnet.py``)
so centermask2 ResNet checkpoints load key for key:

- ``stem.conv1`` 7x7/2 conv (no bias) with its norm as ``stem.conv1.norm``, then ReLU and
  a 3x3/2 max-pool (padding 1);
- ``res2`` .. ``res5``: bottleneck blocks ``res<s>.<b>`` with ``conv1`` (1x1), ``conv2``
  (3x3), ``conv3`` (1x1), each carrying ``.norm``, and ``shortcut`` (1x1, ``.norm``) on
  the first block of a stage. detectron2's default ``STRIDE_IN_1X1 = True`` (MSRA
  weights, the centermask2 R-50/101 configs) puts a stage's stride on ``conv1``.

Norms are ``BatchNorm2d`` in eval mode = detectron2's ``FrozenBatchNorm2d`` (eps 1e-5).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

D2_RESNET_DEPTHS: dict[int, tuple[int, int, int, int]] = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


class ConvNorm(nn.Conv2d):
    """A conv whose norm is a child named ``norm`` (detectron2's ``layers.Conv2d`` naming)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, padding: int = 0) -> None:
        super().__init__(in_ch, out_ch, kernel, stride=stride, padding=padding, bias=False)
        self.norm = nn.BatchNorm2d(out_ch)
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        return self.norm(super().forward(x))


class BottleneckBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, bottleneck_ch: int, stride: int, stride_in_1x1: bool = True) -> None:
        super().__init__()
        self.shortcut = ConvNorm(in_ch, out_ch, 1, stride=stride) if in_ch != out_ch else None
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = ConvNorm(in_ch, bottleneck_ch, 1, stride=s1)
        self.conv2 = ConvNorm(bottleneck_ch, bottleneck_ch, 3, stride=s3, padding=1)
        self.conv3 = ConvNorm(bottleneck_ch, out_ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.conv1(x))
        out = F.relu(self.conv2(out))
        out = self.conv3(out)
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + shortcut)


class Stem(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = ConvNorm(3, 64, 7, stride=2, padding=3)

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool2d(F.relu(self.conv1(x)), kernel_size=3, stride=2, padding=1)


class D2ResNet(nn.Module):
    """``(B, 3, H, W)`` -> dict of the requested ``res2``..``res5`` outputs (strides 4..32)."""

    def __init__(self, depth: int = 50, out_features: tuple[str, ...] = ("res3", "res4", "res5"),
                 stride_in_1x1: bool = True) -> None:
        super().__init__()
        try:
            blocks = D2_RESNET_DEPTHS[depth]
        except KeyError:
            raise ValueError(f"no detectron2 ResNet-{depth}; choose one of {sorted(D2_RESNET_DEPTHS)}") from None
        self.out_features = tuple(out_features)
        self.stem = Stem()
        self.out_channels: dict[str, int] = {}
        self.strides: dict[str, int] = {}
        self.stage_names: list[str] = []
        in_ch, out_ch, bottleneck = 64, 256, 64
        for i, count in enumerate(blocks):
            name = f"res{i + 2}"
            stage = nn.Sequential(*[
                BottleneckBlock(in_ch if b == 0 else out_ch, out_ch, bottleneck,
                                stride=(1 if i == 0 else 2) if b == 0 else 1, stride_in_1x1=stride_in_1x1)
                for b in range(count)
            ])
            self.add_module(name, stage)
            self.stage_names.append(name)
            self.out_channels[name] = out_ch
            self.strides[name] = 4 * 2 ** i
            in_ch, out_ch, bottleneck = out_ch, out_ch * 2, bottleneck * 2
        unknown = [f for f in self.out_features if f not in self.out_channels]
        if unknown:
            raise ValueError(f"unknown ResNet outputs {unknown}; choose from {self.stage_names}")

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        outputs: dict[str, Tensor] = {}
        x = self.stem(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
            if name in self.out_features:
                outputs[name] = x
        return outputs


__all__ = ["D2_RESNET_DEPTHS", "ConvNorm", "BottleneckBlock", "D2ResNet"]
