"""VoVNetV2 backbones (OSA modules with identity mapping and effective SE), centermask2 layout.

Lee and Park, "CenterMask: Real-Time Anchor-Free Instance Segmentation", CVPR 2020.
Stage specs and module names follow youngwanLEE/centermask2
(``centermask/modeling/backbone/vovnet.py``) so its checkpoints load key for key:

- ``stem``: three convs ``stem_1`` (3x3/2), ``stem_2`` (3x3/1), ``stem_3`` (3x3/2), each a
  ``Sequential`` entry pair ``stem_<i>/conv`` + ``stem_<i>/norm`` (+ ``/relu``). In the
  depthwise (``-dw``) variants ``stem_2`` and ``stem_3`` are depthwise-separable:
  ``stem_<i>/dw_conv3x3`` (groups = channels), ``stem_<i>/pw_conv1x1``, ``stem_<i>/pw_norm``.
- ``stage2`` .. ``stage5``: ``Pooling`` (3x3/2 max-pool, ``ceil_mode``; not in stage 2),
  then OSA modules ``OSA<s>_<b>`` with ``layers.<i>`` (``OSA<s>_<b>_<i>/conv`` + ``/norm``, or
  the depthwise trio), in ``-dw`` variants a ``conv_reduction`` 1x1 (``OSA<s>_<b>_reduction_0``)
  when the input width differs from the stage width, the one-shot aggregation
  ``concat`` 1x1 (``OSA<s>_<b>_concat``) and ``ese.fc`` (1x1 conv with bias, hard sigmoid).
  Every OSA module has the eSE block (centermask2 builds it unconditionally); modules
  after the first of a stage add an identity shortcut.

Norm layers are ``BatchNorm2d`` (eps 1e-5) used in eval mode, which computes what
detectron2's ``FrozenBatchNorm2d`` computes and has the same parameter/buffer names
(checkpoints saved with FrozenBN lack ``num_batches_tracked``; the loader allows that).
Convs have no bias. Output strides: stage2 4, stage3 8, stage4 16, stage5 32.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class VoVNetSpec:
    stem: tuple[int, int, int]
    stage_conv_ch: tuple[int, int, int, int]
    stage_out_ch: tuple[int, int, int, int]
    layer_per_block: int
    block_per_stage: tuple[int, int, int, int]
    depthwise: bool


# centermask2's _STAGE_SPECS (all eSE).
VOVNET_SPECS: dict[str, VoVNetSpec] = {
    "V-19-slim-dw-eSE": VoVNetSpec((64, 64, 64), (64, 80, 96, 112), (112, 256, 384, 512), 3, (1, 1, 1, 1), True),
    "V-19-dw-eSE": VoVNetSpec((64, 64, 64), (128, 160, 192, 224), (256, 512, 768, 1024), 3, (1, 1, 1, 1), True),
    "V-19-slim-eSE": VoVNetSpec((64, 64, 128), (64, 80, 96, 112), (112, 256, 384, 512), 3, (1, 1, 1, 1), False),
    "V-19-eSE": VoVNetSpec((64, 64, 128), (128, 160, 192, 224), (256, 512, 768, 1024), 3, (1, 1, 1, 1), False),
    "V-39-eSE": VoVNetSpec((64, 64, 128), (128, 160, 192, 224), (256, 512, 768, 1024), 5, (1, 1, 2, 2), False),
    "V-57-eSE": VoVNetSpec((64, 64, 128), (128, 160, 192, 224), (256, 512, 768, 1024), 5, (1, 1, 4, 3), False),
    "V-99-eSE": VoVNetSpec((64, 64, 128), (128, 160, 192, 224), (256, 512, 768, 1024), 5, (1, 3, 9, 3), False),
}


def _conv_norm_relu(in_ch: int, out_ch: int, name: str, stride: int = 1, kernel: int = 3) -> list[tuple[str, nn.Module]]:
    return [
        (f"{name}/conv", nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, bias=False)),
        (f"{name}/norm", nn.BatchNorm2d(out_ch)),
        (f"{name}/relu", nn.ReLU(inplace=True)),
    ]


def _dw_separable(in_ch: int, out_ch: int, name: str, stride: int = 1) -> list[tuple[str, nn.Module]]:
    # As centermask2's dw_conv3x3: the depthwise conv has groups = out_ch (in == out there).
    return [
        (f"{name}/dw_conv3x3", nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, groups=out_ch, bias=False)),
        (f"{name}/pw_conv1x1", nn.Conv2d(in_ch, out_ch, 1, bias=False)),
        (f"{name}/pw_norm", nn.BatchNorm2d(out_ch)),
        (f"{name}/pw_relu", nn.ReLU(inplace=True)),
    ]


class EffectiveSE(nn.Module):
    """eSE: ``x * hsigmoid(fc(avgpool(x)))`` with one 1x1 conv ``fc`` (C -> C, with bias)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        gate = self.fc(x.mean(dim=(2, 3), keepdim=True))
        return x * (F.relu6(gate + 3.0) / 6.0)


class OSAModule(nn.Module):
    """One-shot aggregation: L convs in sequence, all outputs (and the input) concatenated,
    a 1x1 ``concat`` conv, eSE, and an identity shortcut when ``identity``."""

    def __init__(
        self, in_ch: int, stage_ch: int, concat_ch: int, layer_per_block: int, name: str,
        identity: bool = False, depthwise: bool = False,
    ) -> None:
        super().__init__()
        self.identity = identity
        self.reduce = depthwise and in_ch != stage_ch
        if self.reduce:
            self.conv_reduction = nn.Sequential(OrderedDict(_conv_norm_relu(in_ch, stage_ch, f"{name}_reduction_0", kernel=1)))
        self.layers = nn.ModuleList()
        ch = in_ch
        for i in range(layer_per_block):
            if depthwise:
                self.layers.append(nn.Sequential(OrderedDict(_dw_separable(stage_ch, stage_ch, f"{name}_{i}"))))
            else:
                self.layers.append(nn.Sequential(OrderedDict(_conv_norm_relu(ch, stage_ch, f"{name}_{i}"))))
            ch = stage_ch
        self.concat = nn.Sequential(OrderedDict(
            _conv_norm_relu(in_ch + layer_per_block * stage_ch, concat_ch, f"{name}_concat", kernel=1)))
        self.ese = EffectiveSE(concat_ch)

    def forward(self, x: Tensor) -> Tensor:
        outputs = [x]
        y = self.conv_reduction(x) if self.reduce else x
        for layer in self.layers:
            y = layer(y)
            outputs.append(y)
        out = self.ese(self.concat(torch.cat(outputs, dim=1)))
        return out + x if self.identity else out


class VoVNet(nn.Module):
    """VoVNetV2 trunk: ``(B, 3, H, W)`` -> dict of the requested stage outputs.

    ``out_channels``/``strides`` give each stage's width and stride. Inputs should be
    multiples of 32 px so every stage halves exactly (the FPN adds stages elementwise).
    """

    def __init__(self, conv_body: str, out_features: tuple[str, ...] = ("stage3", "stage4", "stage5")) -> None:
        super().__init__()
        try:
            spec = VOVNET_SPECS[conv_body]
        except KeyError:
            raise ValueError(f"unknown VoVNet {conv_body!r}; choose one of {', '.join(VOVNET_SPECS)}") from None
        self.conv_body = conv_body
        self.out_features = tuple(out_features)
        s0, s1, s2 = spec.stem
        second = _dw_separable if spec.depthwise else _conv_norm_relu
        stem = _conv_norm_relu(3, s0, "stem_1", stride=2)
        stem += second(s0, s1, "stem_2", stride=1)
        stem += second(s1, s2, "stem_3", stride=2)
        self.stem = nn.Sequential(OrderedDict(stem))
        self.out_channels: dict[str, int] = {"stem": s2}
        self.strides: dict[str, int] = {"stem": 4}
        in_chs = (s2, *spec.stage_out_ch[:-1])
        self.stage_names: list[str] = []
        for i in range(4):
            n = i + 2
            name = f"stage{n}"
            modules: list[tuple[str, nn.Module]] = []
            if n != 2:
                modules.append(("Pooling", nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)))
            for b in range(spec.block_per_stage[i]):
                modules.append((f"OSA{n}_{b + 1}", OSAModule(
                    in_chs[i] if b == 0 else spec.stage_out_ch[i], spec.stage_conv_ch[i], spec.stage_out_ch[i],
                    spec.layer_per_block, f"OSA{n}_{b + 1}", identity=b > 0, depthwise=spec.depthwise,
                )))
            self.add_module(name, nn.Sequential(OrderedDict(modules)))
            self.stage_names.append(name)
            self.out_channels[name] = spec.stage_out_ch[i]
            self.strides[name] = 4 * 2 ** i
        unknown = [f for f in self.out_features if f not in self.out_channels]
        if unknown:
            raise ValueError(f"unknown VoVNet outputs {unknown}; choose from {list(self.out_channels)}")
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        outputs: dict[str, Tensor] = {}
        x = self.stem(x)
        if "stem" in self.out_features:
            outputs["stem"] = x
        for name in self.stage_names:
            x = getattr(self, name)(x)
            if name in self.out_features:
                outputs[name] = x
        return outputs


__all__ = ["VOVNET_SPECS", "VoVNetSpec", "EffectiveSE", "OSAModule", "VoVNet"]
