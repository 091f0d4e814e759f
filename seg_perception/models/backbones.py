"""ResNet trunks for the YOLACT family.

The blocks are torchvision's (``BasicBlock``/``Bottleneck``, stride on the 3x3 conv,
as in the official YOLACT backbone), but the containers carry the module names of
dbolya/yolact's ``ResNetBackbone`` so its published checkpoints load key for key::

    backbone.conv1.weight, backbone.bn1.{weight,bias,running_mean,running_var}
    backbone.layers.<stage>.<block>.conv1.weight ... .downsample.{0,1}.*

``stage`` counts from 0 (torchvision's ``layer1`` is ``layers.0``). Use
``state_dict_from_torchvision`` to initialise from an ImageNet torchvision state dict.

YOLACT++ swaps the 3x3 ``conv2`` of some bottlenecks for a modulated deformable conv
(``models.dcn``), chosen by the official ``ResNetBackbone._make_layer`` rule with
per-stage ``dcn_layers`` and a ``dcn_interval`` (``dcn_blocks`` reproduces it); those
blocks carry ``conv2.weight``, ``conv2.bias`` and ``conv2.conv_offset_mask.*``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from seg_perception.models.dcn import ModulatedDeformConv2d

# Blocks per stage, as in the ResNet paper (and torchvision / the official configs).
RESNET_DEPTHS: dict[int, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
}


class ResNetBackbone(nn.Module):
    """A ResNet without its classifier, returning the output of every stage.

    ``forward`` takes a normalised ``(B, 3, H, W)`` float image and returns
    ``[C2, C3, C4, C5]`` with strides 4, 8, 16, 32 and ``channels[i]`` channels each.
    """

    def __init__(
        self,
        block: type[nn.Module],
        blocks_per_stage: Sequence[int],
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
        dcn_layers: Sequence[int] = (0, 0, 0, 0),
        dcn_interval: int = 1,
        widths: Sequence[int] = (64, 128, 256, 512),
    ) -> None:
        super().__init__()
        if len(dcn_layers) != len(blocks_per_stage):
            raise ValueError(f"dcn_layers needs one entry per stage ({len(blocks_per_stage)}), got {list(dcn_layers)}")
        if any(dcn_layers) and block is not Bottleneck:
            raise ValueError("deformable convolutions are only supported in Bottleneck blocks (ResNet-50/101)")
        self._norm_layer = norm_layer
        if len(widths) != len(blocks_per_stage):
            raise ValueError(f"widths needs one entry per stage ({len(blocks_per_stage)}), got {list(widths)}")
        # ``widths`` are the per-stage planes; the stem is as wide as the first stage.
        # Narrower than ResNet's 64..512 only for slim models trained from scratch.
        self.inplanes = int(widths[0])
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layers = nn.ModuleList()
        self.channels: list[int] = []
        for stage, (planes, count) in enumerate(zip(widths, blocks_per_stage)):
            stage_module = self._make_stage(block, planes, count, stride=1 if stage == 0 else 2)
            for index in dcn_blocks(count, dcn_layers[stage], dcn_interval):
                blk = stage_module[index]
                # torchvision's Bottleneck strides its 3x3 conv, as the official one does.
                blk.conv2 = ModulatedDeformConv2d(planes, planes, kernel_size=3, stride=blk.stride, padding=1)
            self.layers.append(stage_module)
            self.channels.append(planes * block.expansion)  # type: ignore[attr-defined]

    def _make_stage(self, block: type[nn.Module], planes: int, count: int, stride: int) -> nn.Sequential:
        expansion = block.expansion  # type: ignore[attr-defined]
        downsample = None
        if stride != 1 or self.inplanes != planes * expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * expansion, kernel_size=1, stride=stride, bias=False),
                self._norm_layer(planes * expansion),
            )
        blocks = [block(self.inplanes, planes, stride, downsample, norm_layer=self._norm_layer)]
        self.inplanes = planes * expansion
        blocks += [block(self.inplanes, planes, norm_layer=self._norm_layer) for _ in range(1, count)]
        return nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = []
        for stage in self.layers:
            x = stage(x)
            outs.append(x)
        return outs


def dcn_blocks(blocks: int, dcn_layers: int, dcn_interval: int = 1) -> list[int]:
    """Indices of the blocks of one stage whose 3x3 conv is deformable (official YOLACT++ rule).

    Block 0 when ``dcn_layers >= blocks``; block ``i >= 1`` when ``i + dcn_layers >= blocks``
    and ``i % dcn_interval == 0``. So ``dcn_layers`` counts blocks from the end of the
    stage and ``dcn_interval`` thins them out: ResNet-101 with ``[0, 4, 23, 3]`` and
    interval 3 gets DCN in blocks 0, 3 of stage 1, 0, 3, ..., 21 of stage 2 and 0 of stage 3.
    """
    if dcn_interval < 1:
        raise ValueError(f"dcn_interval must be >= 1, got {dcn_interval}")
    chosen = [0] if dcn_layers >= blocks else []
    return chosen + [i for i in range(1, blocks) if i + dcn_layers >= blocks and i % dcn_interval == 0]


def resnet_backbone(depth: int, dcn_layers: Sequence[int] = (0, 0, 0, 0), dcn_interval: int = 1) -> ResNetBackbone:
    """ResNet-18/34/50/101 trunk with random weights (see ``state_dict_from_torchvision``).

    ``dcn_layers``/``dcn_interval``: deformable 3x3 convs as in YOLACT++ (see ``dcn_blocks``).
    """
    try:
        block, blocks = RESNET_DEPTHS[depth]
    except KeyError:
        raise ValueError(f"no ResNet-{depth}; choose one of {sorted(RESNET_DEPTHS)}") from None
    return ResNetBackbone(block, blocks, dcn_layers=dcn_layers, dcn_interval=dcn_interval)


def resnet_feature_size(size: int, stride: int) -> int:
    """Spatial size of a ResNet/FPN feature map of the given stride for an input of ``size`` px.

    Every stride-2 layer of the trunk (7x7/2 conv pad 3, 3x3/2 max-pool pad 1, 3x3/2
    convs pad 1 and the FPN's 3x3/2 downsample convs) maps ``n`` to ``ceil(n / 2)``,
    so the size at stride ``2**k`` is ``ceil(size / 2**k)`` (550 -> 69, 35, 18, 9, 5).
    """
    if stride < 1 or stride & (stride - 1):
        raise ValueError(f"stride must be a power of two, got {stride}")
    return -(-size // stride)


_TORCHVISION_STAGE = re.compile(r"^layer([1-4])\.")


def state_dict_from_torchvision(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename a torchvision ResNet state dict to this backbone's names.

    ``layer1.0.conv1.weight`` -> ``layers.0.0.conv1.weight``; the classifier (``fc.*``)
    is dropped because the detector has no use for it. Everything else keeps its name.
    """
    renamed: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith("fc."):
            continue
        match = _TORCHVISION_STAGE.match(key)
        if match:
            key = f"layers.{int(match.group(1)) - 1}." + key[match.end():]
        renamed[key] = value
    return renamed


def freeze_batchnorm(module: nn.Module) -> None:
    """Put every BatchNorm in eval mode with frozen affine parameters (small-batch training)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)


__all__ = [
    "ResNetBackbone",
    "RESNET_DEPTHS",
    "resnet_backbone",
    "dcn_blocks",
    "resnet_feature_size",
    "state_dict_from_torchvision",
    "freeze_batchnorm",
]
