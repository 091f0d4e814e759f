"""Modulated deformable convolution (DCNv2) with the parameter names of ``dcn_v2.DCN``.

Zhu et al., "Deformable ConvNets v2: More Deformable, Better Results", CVPR 2019.
YOLACT++ replaces the 3x3 conv of some ResNet bottlenecks with the ``DCN`` module of
the DCNv2 extension bundled with dbolya/yolact (``external/DCNv2/dcn_v2.py``), so its
checkpoints hold, per deformable conv::

    <prefix>.weight                    (out, in, k, k)   the convolution kernel
    <prefix>.bias                      (out,)            (zero-initialised, but trained)
    <prefix>.conv_offset_mask.weight   (3*k*k, in, k, k) predicts offsets and modulation
    <prefix>.conv_offset_mask.bias     (3*k*k,)

``conv_offset_mask`` has the stride and padding of the main conv (no dilation). Its
3*k*k output channels split into three equal chunks ``o1, o2, m``; the offsets are
``cat(o1, o2)`` (2*k*k channels holding ``(dy, dx)`` pairs, kernel position major:
channel 2*i is the row offset of position i, 2*i + 1 its column offset) and the
modulation is ``sigmoid(m)``. A sample that falls outside the input reads zeros
(bilinear with zero padding): DCNv2's ``dmcn_im2col_bilinear``.

Two implementations of the same arithmetic:

- eager PyTorch uses ``torchvision.ops.deform_conv2d`` (same offset layout and
  boundary rule as DCNv2), which is fast on CPU and CUDA;
- the exported graph uses ``deform_conv2d_by_sampling``: one ``grid_sample``
  (bilinear, zero padding) gathers the k*k modulated samples per output pixel and a
  1x1 convolution applies the kernel. ONNX's own ``DeformConv`` (opset 19) is not
  accepted by every TensorRT release, and torchvision registers no ONNX symbolic
  for ``deform_conv2d``; ``GridSample`` (opset 16) runs on ONNX Runtime and maps to
  TensorRT's ``IGridSampleLayer``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair
from torchvision.ops import deform_conv2d


def deform_conv2d_by_sampling(
    x: Tensor,
    offset: Tensor,
    mask: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (1, 1),
    dilation: tuple[int, int] = (1, 1),
) -> Tensor:
    """Modulated deformable convolution from ``grid_sample`` and a 1x1 convolution.

    x:      ``(B, C, H, W)`` input.
    offset: ``(B, 2*k*k, Ho, Wo)`` ``(dy, dx)`` per kernel position, in input pixels.
    mask:   ``(B, k*k, Ho, Wo)`` modulation (already through the sigmoid).
    weight: ``(O, C, kh, kw)``; one offset group, no weight groups (YOLACT++'s case).
    Returns ``(B, O, Ho, Wo)``, equal to ``torchvision.ops.deform_conv2d`` up to float
    rounding. Shapes are read as Python ints so the sampling grid's base positions
    become constants of an exported graph (its input size is static).
    """
    b, c, h, w = (int(s) for s in x.shape)
    o, c_w, kh, kw = (int(s) for s in weight.shape)
    if c_w != c:
        raise ValueError(f"weight expects {c_w} input channels, input has {c} (grouped DCN is not supported)")
    k = kh * kw
    ho, wo = int(offset.shape[-2]), int(offset.shape[-1])
    if int(offset.shape[1]) != 2 * k or int(mask.shape[1]) != k:
        raise ValueError("one offset group expected: offset (B, 2*k*k, ...), mask (B, k*k, ...)")
    sh, sw = stride
    ph, pw = padding
    dh, dw = dilation
    device, dtype = x.device, x.dtype
    # Undeformed sampling positions (input pixel centres are integers): (k, Ho, 1), (k, 1, Wo).
    ky = (torch.arange(kh, device=device, dtype=dtype) * dh).repeat_interleave(kw)
    kx = (torch.arange(kw, device=device, dtype=dtype) * dw).repeat(kh)
    base_y = (torch.arange(ho, device=device, dtype=dtype) * sh - ph)[None, :, None] + ky[:, None, None]
    base_x = (torch.arange(wo, device=device, dtype=dtype) * sw - pw)[None, None, :] + kx[:, None, None]
    off = offset.reshape(b, k, 2, ho, wo)
    py = base_y + off[:, :, 0]  # (B, k, Ho, Wo)
    px = base_x + off[:, :, 1]
    # Pixel coordinate p -> normalised grid coordinate for align_corners=False, whose
    # inverse ((g + 1) * size - 1) / 2 gives back p; zero padding reproduces DCNv2's
    # "outside reads 0" rule tap by tap.
    grid = torch.stack(((2 * px + 1) / w - 1, (2 * py + 1) / h - 1), dim=-1).reshape(b, k * ho, wo, 2)
    cols = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)  # (B, C, k*Ho, Wo)
    cols = cols.reshape(b, c, k, ho, wo) * mask.reshape(b, 1, k, ho, wo)
    # Channel c*k + i of the columns meets weight[:, c, i // kw, i % kw]: the row-major flatten.
    return F.conv2d(cols.reshape(b, c * k, ho, wo), weight.reshape(o, c * k, 1, 1), bias)


class ModulatedDeformConv2d(nn.Module):
    """DCNv2 layer, a drop-in for a ``k x k`` conv; state dict names as ``dcn_v2.DCN``.

    ``forward`` maps ``(B, in, H, W)`` to ``(B, out, Ho, Wo)`` with the usual conv
    output size. ``use_sampling`` forces the export-friendly implementation in eager
    mode (tests use it to compare the two); during ONNX export it is always used.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int = 1,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        self.use_sampling = False
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *self.kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        k = self.kernel_size[0] * self.kernel_size[1]
        self.conv_offset_mask = nn.Conv2d(
            in_channels, 3 * k, kernel_size=self.kernel_size, stride=self.stride, padding=self.padding, bias=True
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # As DCNv2: uniform kernel in +-1/sqrt(fan_in), zero bias; zero offsets and a
        # modulation of sigmoid(0) = 0.5 everywhere, so training starts from a plain conv.
        fan_in = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
        bound = 1.0 / math.sqrt(fan_in)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.zeros_(self.bias)
        nn.init.zeros_(self.conv_offset_mask.weight)
        nn.init.zeros_(self.conv_offset_mask.bias)

    def offsets_and_mask(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, 2*k*k, Ho, Wo)`` offsets and ``(B, k*k, Ho, Wo)`` modulation for ``x``."""
        o1, o2, m = torch.chunk(self.conv_offset_mask(x), 3, dim=1)
        return torch.cat((o1, o2), dim=1), torch.sigmoid(m)

    def forward(self, x: Tensor) -> Tensor:
        offset, mask = self.offsets_and_mask(x)
        if self.use_sampling or torch.onnx.is_in_onnx_export():
            return deform_conv2d_by_sampling(
                x, offset, mask, self.weight, self.bias, self.stride, self.padding, self.dilation
            )
        return deform_conv2d(
            x, offset, self.weight, self.bias, stride=self.stride, padding=self.padding,
            dilation=self.dilation, mask=mask,
        )

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}")


__all__ = ["ModulatedDeformConv2d", "deform_conv2d_by_sampling"]
